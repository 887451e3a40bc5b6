"""Feature datasets for the trainer: manifests, the on-disk feature cache, precomputed folders.

Two sources, one result, ``load_dataset(...) -> list[Sequence]``:

* a **manifest** (JSON Lines, paths relative to the manifest's folder), one
  object per line, all of the same kind::

      {"audio": "a.wav", "labels": "a.txt"}   # Audacity labels -> per-frame targets
      {"audio": "b.wav", "class": "dog"}      # one class for the whole file
      {"audio": "c.wav"}                      # no targets (features only)

  Audio is read (any rate; downmixed to mono), resampled to the front end's
  rate with the same soxr resampler the live stream uses (then flushed) and
  turned into features by the front end's ``compute``.  Features are cached.
* a **folder of .npz** files (sorted by name), each with ``x`` (T, F) float,
  optional ``y`` ((T,) integer classes or (T, O) float targets) and optional
  ``mask`` (T,); other keys are an error.

Targets (``Sequence.y``):

* labels, ``classes=None``: (T, 1) float32, 1 where any label covers >= threshold
  of the frame's window; ``classes=[...]``: (T, C) float32 multi-hot per class.
* class: (T,) int64, the class index (``classes`` order; default the sorted
  set of the manifest's classes) on every frame.
* audio alone: ``y`` is None.

``mask`` (T,) float32 is all ones for manifest entries (every frame counts).

Cache: ``cache_dir/<stem>-<key>.npz`` with ``x`` (T, F) float32, where ``key``
is the first 20 hex digits of the SHA-256 of the front end's ``to_dict()``
(sorted JSON), the ``nonfinite`` mode, the resampler quality, the audio file's
absolute path, size in bytes and mtime in ns.  Any change to the settings or
the file gives a new key, so stale features are never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np

from streamrnn.audio.files import frame_targets, read_audio, read_labels
from streamrnn.audio.frontend import LogMel, as_frontend
from streamrnn.audio.resample import Resampler
from streamrnn.audio.stream import out_of_range_peak
from streamrnn.config import json_lines, read_text_file
from streamrnn.errors import AudioError, ConfigError, TrainingError

log = logging.getLogger(__name__)

_MANIFEST_KEYS = {"audio", "labels", "class"}
MAX_MANIFEST_BYTES = 64 * 2**20  # a JSONL manifest larger than this is refused (about 500,000 entries)
# What an audio file starts with (WAV, RF64, W64, FLAC, Ogg, MP3 with a tag, AIFF) and its usual suffixes
AUDIO_MAGIC = (b"RIFF", b"RF64", b"riff", b"fLaC", b"OggS", b"ID3", b"FORM")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".w64", ".caf", ".au")
MANIFEST_HINT = ('write a JSONL manifest, one line per audio file: {"audio": "a.wav", "labels": "a.txt"} '
                 '(docs/frontend.md, "Datasets for the trainer")')


def looks_like_audio(path: Path) -> bool:
    """Whether ``path`` is an audio file by its first bytes (or, unreadable, its suffix)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return path.suffix.lower() in AUDIO_SUFFIXES
    return head.startswith(AUDIO_MAGIC) or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)
_NPZ_KEYS = {"x", "y", "mask"}


class Sequence(NamedTuple):
    """One training sequence.

    x (T, F) float32 features; y None, (T,) int64 class indices or (T, O) float32
    targets; mask (T,) float32 (1: the frame counts in the loss); name (the audio
    or .npz path as a string).
    """

    x: np.ndarray
    y: np.ndarray | None
    mask: np.ndarray
    name: str


class ManifestEntry(NamedTuple):
    audio: Path
    labels: Path | None
    cls: str | None
    line: int


def read_manifest(path) -> list[ManifestEntry]:
    """Parse a JSONL manifest; errors name ``file:line``."""
    path = Path(path)
    text = read_text_file(path, MAX_MANIFEST_BYTES, "manifest", ConfigError)
    base = path.parent
    out = []
    for i, d in json_lines(text, path):
        where = f"{path}:{i}"
        if not isinstance(d, dict) or "audio" not in d:
            raise ConfigError(f"{where}: each line must be an object with an 'audio' path, got "
                              f"{'an object without one' if isinstance(d, dict) else 'a JSON ' + type(d).__name__}")
        unknown = sorted(set(d) - _MANIFEST_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(_MANIFEST_KEYS)}")
        if "labels" in d and "class" in d:
            raise ConfigError(f"{where}: give 'labels' or 'class', not both")
        for k in ("audio", "labels", "class"):
            if k in d and (not isinstance(d[k], str) or not d[k]):
                raise ConfigError(f"{where}: {k!r} must be a non-empty string, got {d[k]!r}")
        out.append(ManifestEntry(base / d["audio"], base / d["labels"] if "labels" in d else None,
                                 d.get("class"), i))
    if not out:
        raise ConfigError(f"{path}: manifest has no entries")
    kinds = {("labels" if e.labels else "class" if e.cls else "audio") for e in out}
    if len(kinds) > 1:
        raise ConfigError(f"{path}: manifest mixes entry kinds {sorted(kinds)}; use one kind per manifest")
    return out


def signal_at_rate(x: np.ndarray, rate, out_rate, quality="HQ") -> np.ndarray:
    """Resample a whole mono signal as the live stream would (block-wise == one-shot), plus the flush."""
    if rate == out_rate:
        return x
    r = Resampler(rate, out_rate, 1, quality)
    return np.concatenate([r.push(x), r.flush()])


class FeatureCache:
    """On-disk cache of features per (front end settings, audio file); counts hits and misses.

    ``cache_dir=None`` disables it (always computes).
    """

    def __init__(self, cache_dir=None):
        self.dir = None if cache_dir is None else Path(cache_dir)
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(frontend: LogMel, audio: Path, nonfinite="error", quality="HQ") -> str:
        st = audio.stat()
        blob = json.dumps({"frontend": frontend.to_dict(), "nonfinite": nonfinite, "quality": quality,
                           "path": str(audio.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def features(self, frontend: LogMel, audio, nonfinite="error", quality="HQ"):
        """(x (T, F) float32, n_samples at the front-end rate) for an audio file, cached."""
        audio = Path(audio)
        if not audio.is_file():
            raise AudioError(f"{audio}: no such audio file")
        path = None
        if self.dir is not None:
            path = self.dir / f"{audio.stem}-{self.key(frontend, audio, nonfinite, quality)}.npz"
            if path.is_file():
                try:
                    with np.load(path, allow_pickle=False) as z:
                        x, n = z["x"], int(z["n_samples"])
                    if x.ndim == 2 and x.shape[1] == frontend.n_features:
                        self.hits += 1
                        return x, n
                except (OSError, ValueError, KeyError) as e:  # damaged cache file: recompute it
                    log.warning("ignoring unreadable cache file %s: %s", path, e)
        self.misses += 1
        x, n = compute_features(frontend, audio, nonfinite, quality)
        if path is not None:
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, x=x, n_samples=np.int64(n))
            tmp.replace(path)  # atomic: a crash never leaves half a cache file
        return x, n


def compute_features(frontend: LogMel, audio, nonfinite="error", quality="HQ"):
    """Features of one audio file: read, downmix, resample to the front end's rate, ``compute``.

    Returns (x (T, F) float32, n_samples at the front-end rate).
    """
    x, rate = read_audio(audio, mono=True, nonfinite=nonfinite)  # NaN/Inf: error, or 0 with a warning
    peak = out_of_range_peak(x)
    if peak:
        log.warning("%s: float samples peak at %.4g, far outside [-1, 1]: int16-scale audio stored as float?", audio,
                    peak)
    x = signal_at_rate(x, rate, frontend.sample_rate, quality)
    feats = frontend.compute(x)
    if len(feats) == 0:
        raise AudioError(f"{audio}: {len(x)} samples at {frontend.sample_rate} Hz is shorter than one frame "
                         f"(win_length={frontend.win_length})")
    return feats, len(x)


def load_npz_folder(folder) -> list[Sequence]:
    """Precomputed sequences: every ``*.npz`` in ``folder`` (sorted by name); see module doc."""
    folder = Path(folder)
    files = sorted(folder.glob("*.npz"))
    if not files:
        audio = [p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES][:100_000]
        if audio:
            kinds = ", ".join(sorted({p.suffix.lower() for p in audio}))
            raise ConfigError(f"{folder}: no .npz files but {len(audio)} audio file(s) ({kinds}): a folder is read "
                              f"as precomputed features (.npz); for audio, {MANIFEST_HINT}")
        raise ConfigError(f"{folder}: no .npz files")
    out, F = [], None
    for p in files:
        if not p.is_file():  # a FIFO or device named x.npz would block or never end
            raise TrainingError(f"{p}: not a regular file")
        try:
            with np.load(p, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise TrainingError(f"{p}: cannot read .npz (pickled objects are refused): {e}") from None
        unknown = sorted(set(d) - _NPZ_KEYS)
        if unknown or "x" not in d:
            raise TrainingError(f"{p}: needs 'x' and optionally 'y', 'mask'; got keys {sorted(d)}")
        x = d["x"]
        if x.ndim != 2 or x.dtype.kind != "f" or len(x) == 0:
            raise TrainingError(f"{p}: x must be a non-empty (T, F) float array, got {x.dtype} {x.shape}")
        if F is not None and x.shape[1] != F:
            raise TrainingError(f"{p}: x has {x.shape[1]} features per frame, the first file has {F}")
        F = x.shape[1]
        if not np.isfinite(x).all():
            raise TrainingError(f"{p}: x contains NaN/Inf")
        T = len(x)
        y = d.get("y")
        if y is not None:
            if y.ndim == 1 and y.dtype.kind in "iu" and len(y) == T:
                if y.min() < 0:
                    raise TrainingError(f"{p}: class indices y must be >= 0, got min {y.min()}")
                y = y.astype(np.int64)
            elif y.ndim == 2 and y.dtype.kind == "f" and len(y) == T:
                y = y.astype(np.float32)
            else:
                raise TrainingError(f"{p}: y must be ({T},) integer classes or ({T}, O) float targets, "
                                    f"got {y.dtype} {y.shape}")
        mask = d.get("mask")
        if mask is None:
            mask = np.ones(T, np.float32)
        elif mask.shape != (T,):
            raise TrainingError(f"{p}: mask must have shape ({T},), got {mask.shape}")
        out.append(Sequence(x.astype(np.float32), y, mask.astype(np.float32), str(p)))
    return out


def emphasise_offsets(seqs: list[Sequence], frames: int, weight: float) -> list[Sequence]:
    """Weigh the ``frames`` frames after each end of a target run by ``weight`` in the loss.

    For frame targets ``y`` (T, O) float (a frame is a target frame when any output is >= 0.5):
    after every target frame followed by a non-target frame at t, the mask of the non-target
    frames t .. t+frames-1 (up to the next target frame) is multiplied by ``weight``. A causal
    detector's probability lingers after the end of speech; weighing those frames more teaches
    it to let go sooner without moving any label. Sequences without (T, O) float targets are
    returned unchanged; the masks are copies. Returns a new list of ``Sequence``.

    >>> y = np.array([0, 1, 1, 0, 0, 0, 1, 0], np.float32)[:, None]
    >>> s = Sequence(np.zeros((8, 2), np.float32), y, np.ones(8, np.float32), "a")
    >>> emphasise_offsets([s], 2, 3.0)[0].mask
    array([1., 1., 1., 3., 3., 1., 1., 3.], dtype=float32)
    """
    if frames <= 0 or weight == 1.0:
        return list(seqs)
    out = []
    for s in seqs:
        if s.y is None or s.y.ndim != 2 or not np.issubdtype(s.y.dtype, np.floating):
            out.append(s)
            continue
        on = (s.y >= 0.5).any(axis=1)  # (T,)
        ends = np.flatnonzero(on[:-1] & ~on[1:]) + 1  # first non-target frame after a run
        mask = s.mask.copy()
        for t in ends:
            nxt = np.flatnonzero(on[t:t + frames])
            stop = t + (nxt[0] if len(nxt) else frames)
            mask[t:stop] *= weight
        out.append(s._replace(mask=mask))
    return out


def manifest_classes(path) -> list[str]:
    """Sorted class names of a manifest's "class" entries, or of the labels in its label files."""
    entries = read_manifest(path)
    names = set()
    for e in entries:
        if e.cls:
            names.add(e.cls)
        elif e.labels:
            names.update(n for _, _, n in read_labels(e.labels))
    return sorted(names)


def load_dataset(source, frontend=None, cache_dir=None, classes=None, threshold: float = 0.5,
                 nonfinite: str = "error", quality: str = "HQ", cache: FeatureCache | None = None
                 ) -> list[Sequence]:
    """Load training sequences -> ``list[Sequence(x (T,F) float32, y, mask (T,) float32, name)]``.

    ``source``: a JSONL manifest (needs ``frontend``: LogMel, MFCC or its dict)
    or a folder of .npz files (``frontend`` ignored).  ``classes``: class names
    (order = target index); see the module doc for the shapes of ``y``.
    ``cache_dir`` (or a ``FeatureCache``) caches the features on disk.

    >>> import tempfile, os, json, numpy as np, soundfile as sf
    >>> d = tempfile.mkdtemp()
    >>> sf.write(os.path.join(d, "a.wav"), np.zeros(8000), 8000)
    >>> with open(os.path.join(d, "m.jsonl"), "w") as f: _ = f.write(json.dumps({"audio": "a.wav", "class": "dog"}))
    >>> seq, = load_dataset(os.path.join(d, "m.jsonl"), frontend={"type": "logmel"})
    >>> seq.x.shape, seq.y[:3], seq.mask.shape
    ((98, 40), array([0, 0, 0]), (98,))
    """
    source = Path(source)
    if source.is_dir():
        return load_npz_folder(source)
    if not source.is_file():
        raise ConfigError(f"{source}: no such manifest file or folder")
    if looks_like_audio(source):
        raise ConfigError(f"{source} is an audio file, where a JSONL manifest or a folder of .npz files is "
                          f"expected; {MANIFEST_HINT}")
    if frontend is None:
        raise ConfigError("a manifest needs a front end (LogMel, MFCC or its settings dict) to compute features")
    fe = as_frontend(frontend)
    cache = cache if cache is not None else FeatureCache(cache_dir)
    entries = read_manifest(source)
    kind = "labels" if entries[0].labels else "class" if entries[0].cls else "audio"
    if kind == "class" and classes is None:
        classes = sorted({e.cls for e in entries})
    out = []
    for e in entries:
        x, n = cache.features(fe, e.audio, nonfinite, quality)
        T = len(x)
        mask = np.ones(T, np.float32)
        if kind == "labels":
            try:
                labels = read_labels(e.labels)  # its errors name the label file and its line
                try:
                    y = frame_targets(labels, T, fe.sample_rate, fe.hop_length, fe.win_length, classes=classes,
                                      threshold=threshold, n_samples=n)
                except AudioError as err:
                    raise AudioError(f"{e.labels}: {err}") from None
            except AudioError as err:  # ... and the manifest line that named it
                raise AudioError(f"{err} (labels of {source}:{e.line})") from None
            y = y[:, None] if classes is None else y  # (T, 1) or (T, C)
        elif kind == "class":
            if e.cls not in classes:
                raise ConfigError(f"{source}:{e.line}: class {e.cls!r} is not among the classes {list(classes)}")
            y = np.full(T, list(classes).index(e.cls), dtype=np.int64)
        else:
            y = None
        out.append(Sequence(x, y, mask, str(e.audio)))
    return out

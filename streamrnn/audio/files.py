"""Audio files (python-soundfile) and Audacity label files, and labels -> per-frame targets.

Label-to-frame rule (the same framing as the front end): frame t covers the
samples [t*hop, t*hop + win) at the front end's rate, i.e. the times
[t*hop/sr, (t*hop + win)/sr).  Its target for a class is 1 when the labels of
that class (their union: overlapping labels are not counted twice) cover at
least ``threshold`` (default 0.5) of the window's duration, else 0.

>>> labels = [(0.10, 0.20, "speech")]
>>> y = frame_targets(labels, n_frames=25, sample_rate=16000, hop_length=160, win_length=400)
>>> [int(t) for t in y.nonzero()[0]]   # frames 9 (60 % covered) .. 18 (80 %); 8: 20 %, 19: 40 %
[9, 10, 11, 12, 13, 14, 15, 16, 17, 18]
"""

from __future__ import annotations

import logging
import math
import os
import struct
from pathlib import Path

import numpy as np

from streamrnn.config import read_text_file
from streamrnn.errors import AudioError

log = logging.getLogger(__name__)


SAMPLE_RATE_RANGE = (1000, 384000)  # Hz: audio files outside it are refused (as the front end's rate)
NONFINITE_MODES = ("error", "zero")
MAX_LABEL_BYTES = 16 * 2**20  # a label file (text, one line per label) larger than this is refused
_READ_BLOCK = 1 << 16  # frames per read of read_audio


def _wav_declared_frames(path: Path) -> int | None:
    """Frames a WAV header declares (data chunk bytes / block align), or None (not RIFF/WAVE, or
    the size is unknown).  libsndfile silently shortens a WAV whose data chunk is cut, so the
    header is read here to tell a truncated file."""
    size = path.stat().st_size
    align = None
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None  # RF64/other: leave it to libsndfile
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            cid, n = struct.unpack("<4sI", f.read(8))
            if cid == b"fmt " and n >= 14:
                align = struct.unpack("<H", f.read(14)[12:14])[0]  # bytes per frame (all channels)
            if cid == b"data":
                if n in (0, 0xFFFFFFFF) or not align:  # 0 / 0xFFFFFFFF: size unknown (streamed WAV)
                    return None
                return n // align
            pos += 8 + n + (n & 1)  # chunks are padded to an even size
    return None


class AudioFile:
    """One audio file read in blocks: the single reader of every entry point (``read_audio`` for
    train/eval/features of a manifest, the ``file:`` source of ``stream`` and ``features``).

    Rules, the same everywhere (docs/frontend.md, "Audio and label files"):

    * a missing file, one libsndfile cannot open, a rate outside ``SAMPLE_RATE_RANGE`` or a file
      that declares no samples: AudioError (the CLI: one line, exit 2);
    * a file that ends early (a WAV cut short, a FLAC whose decoder loses sync): the audio up to
      the cut is used and ``finish()`` logs one warning with the duration actually read
      (``truncated`` holds that message); nothing read at all: AudioError;
    * NaN/Inf samples: ``nonfinite="zero"`` replaces them by 0, counts them (``n_nonfinite``)
      and logs one warning giving the position (seconds) of the first; ``"error"`` raises
      AudioError naming that position.

    ``read(n)`` -> (k, channels) float32 with k <= n (k < n only at the end; int formats are
    scaled to [-1, 1)).  ``rate`` (int Hz), ``channels``, ``frames`` (declared), ``n_read``.

    >>> import tempfile, os, numpy as np, soundfile as sf
    >>> p = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> sf.write(p, np.zeros((800, 2)), 8000, subtype="PCM_16")
    >>> with AudioFile(p) as f:
    ...     f.read(500).shape, f.read(500).shape, f.rate, f.n_read
    ((500, 2), (300, 2), 8000, 800)
    """

    def __init__(self, path, nonfinite: str = "zero"):
        import soundfile as sf

        if nonfinite not in NONFINITE_MODES:
            raise AudioError(f"nonfinite must be one of {NONFINITE_MODES}, got {nonfinite!r}")
        self.path = path = Path(path)
        self.nonfinite = nonfinite
        if not path.is_file():
            raise AudioError(f"{path}: no such audio file" if not path.exists() else
                             f"{path}: is a directory, not an audio file" if path.is_dir() else
                             f"{path}: not a regular file (audio must be read from a file)")
        wav_frames = _wav_declared_frames(path) if path.suffix.lower() == ".wav" else None
        try:
            self._f = sf.SoundFile(str(path))
        except (sf.SoundFileError, RuntimeError) as e:
            raise AudioError(f"{path}: cannot read audio: {_first_line(e)}") from None
        self.rate, self.channels = int(self._f.samplerate), int(self._f.channels)
        self.frames = max(self._f.frames, wav_frames or 0)  # what the header promises
        lo, hi = SAMPLE_RATE_RANGE
        if not lo <= self.rate <= hi:
            self.close()
            raise AudioError(f"{path}: sample rate {self.rate} Hz is outside the supported range {lo}-{hi} Hz")
        if self.frames == 0:
            self.close()
            raise AudioError(f"{path}: audio file holds no samples (0 frames)")
        self.n_read = 0
        self.n_nonfinite = 0
        self.truncated: str | None = None
        self._stopped = None  # the decoder's error, when it stopped before the end

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def read(self, n: int) -> np.ndarray:
        import soundfile as sf

        if self._f is None or self._stopped is not None:
            return np.zeros((0, self.channels), np.float32)
        try:
            x = self._f.read(n, dtype="float32", always_2d=True)  # (k, channels)
        except (sf.SoundFileError, RuntimeError) as e:  # e.g. "flac decoder lost sync": a cut file
            self._stopped = _first_line(e)
            x = self._salvage(n)  # the block's frames before the damage
        if not np.isfinite(x).all():
            x = self._fix_nonfinite(x)
        self.n_read += len(x)
        return x

    def _salvage(self, n: int) -> np.ndarray:
        """After a decoder error: the frames of the failed block up to the damage (reopened and
        read in small pieces; libsndfile loses the whole block otherwise)."""
        import soundfile as sf

        got = []
        try:
            with sf.SoundFile(str(self.path)) as f:
                f.seek(self.n_read)
                while sum(len(g) for g in got) < n:
                    g = f.read(min(1024, n - sum(len(g) for g in got)), dtype="float32", always_2d=True)
                    if not len(g):
                        break
                    got.append(g)
        except (sf.SoundFileError, RuntimeError):
            pass
        return np.concatenate(got) if got else np.zeros((0, self.channels), np.float32)

    def _fix_nonfinite(self, x: np.ndarray) -> np.ndarray:
        ok = np.isfinite(x)
        bad = int(ok.size - np.count_nonzero(ok))
        first = self.n_read + int(np.argmin(ok.all(axis=1)))
        where = f"{self.path}: {bad} NaN/Inf sample(s) at {first / self.rate:.3f} s (sample {first})"
        if self.nonfinite == "error":
            raise AudioError(f"{where}; set nonfinite='zero' (streamrnn train/eval: --set data.nonfinite=zero) "
                             "to replace them with 0")
        if self.n_nonfinite == 0:
            log.warning("%s replaced by 0 (later ones are counted, not logged)", where)
        self.n_nonfinite += bad
        return np.where(ok, x, np.float32(0))

    def finish(self) -> None:
        """At the end: AudioError if nothing could be read, else one warning if the file ended early."""
        if self.n_read == 0:
            why = f" ({self._stopped})" if self._stopped else ""
            raise AudioError(f"{self.path}: no audio could be read{why}: the file is empty, truncated or damaged")
        if self.n_read < self.frames:
            why = f"decoding stopped: {self._stopped}" if self._stopped else "the file ends early"
            self.truncated = (f"{self.path}: truncated audio file ({why}): read {self.n_read / self.rate:.2f} s "
                              f"of the {self.frames / self.rate:.2f} s its header declares; using what was read")
            log.warning("%s", self.truncated)

    def close(self) -> None:
        if getattr(self, "_f", None) is not None:
            self._f.close()
            self._f = None


def _first_line(e: Exception) -> str:
    """A library error's message, first line only (libsndfile's messages never quote file content)."""
    s = str(e).strip().splitlines()
    return s[0] if s else type(e).__name__


def read_audio(path, mono: bool = True, nonfinite: str = "error"):
    """Read an audio file (WAV, FLAC, OGG, ...; int16/int24/float) -> (samples float32, rate).

    ``mono=True``: (n,), multi-channel files downmixed by the mean of the
    channels; ``mono=False``: (n, channels).  Reads through ``AudioFile``: a
    missing, unreadable or empty file raises AudioError; a truncated one is read
    up to the cut with a warning; NaN/Inf raise AudioError (``nonfinite="error"``)
    or become 0 with a warning (``"zero"``).

    >>> import tempfile, os, numpy as np, soundfile as sf
    >>> p = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> sf.write(p, np.zeros((800, 2)), 8000, subtype="PCM_16")
    >>> x, sr = read_audio(p); x.shape, x.dtype, sr
    ((800,), dtype('float32'), 8000)
    """
    with AudioFile(path, nonfinite) as f:
        blocks = []
        while True:
            b = f.read(_READ_BLOCK)
            if len(b):
                blocks.append(b)
            if len(b) < _READ_BLOCK:
                break
        f.finish()
        rate = f.rate
    x = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    if mono:
        x = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
    return np.ascontiguousarray(x), rate


def read_labels(path):
    """Read an Audacity label file -> [(start_s, end_s, label)], in file order.

    Lines are ``start<TAB>end<TAB>label`` in seconds.  Blank lines and Audacity's
    spectral-selection lines (starting with a backslash) are skipped.  A bad
    line raises AudioError naming ``file:line``: wrong field count, a number that
    does not parse or is negative or non-finite, ``end < start``, empty label.
    The file must be a regular file of at most ``MAX_LABEL_BYTES``; messages never
    quote its lines (a label path may point at any file).
    """
    path = Path(path)
    text = read_text_file(path, MAX_LABEL_BYTES, "label file", AudioError)
    out = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("\\"):
            continue
        parts = line.split("\t", 2)
        where = f"{path}:{i}"
        if len(parts) != 3:
            raise AudioError(f"{where}: expected 'start<TAB>end<TAB>label', got {len(parts)} tab-separated "
                             f"field(s): not an Audacity label file?")
        try:
            start, end = float(parts[0]), float(parts[1])
        except ValueError:
            raise AudioError(f"{where}: start and end must be numbers of seconds: not an Audacity label file?") from None
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0:
            raise AudioError(f"{where}: start={start:g} end={end:g} must be finite and >= 0 seconds")
        if end < start:
            raise AudioError(f"{where}: end {end:g} s is before start {start:g} s")
        label = parts[2].strip()
        if not label:
            raise AudioError(f"{where}: empty label")
        out.append((start, end, label))
    return out


def frame_targets(labels, n_frames, sample_rate, hop_length, win_length, classes=None, threshold=0.5,
                  n_samples=None):
    """Per-frame targets from labels [(start_s, end_s, label)] by window coverage (see module doc).

    ``classes=None``: every label counts as one class -> (n_frames,) float32 0/1.
    ``classes=[names]``: (n_frames, len(classes)) float32 multi-hot; a label not
    in ``classes`` raises AudioError.  A frame is 1 when covered >= ``threshold``.
    ``n_samples``: the audio's length at ``sample_rate``; a label ending after
    it (by more than one sample) raises AudioError.  If None, the longest audio
    that still gives ``n_frames`` frames is assumed.
    """
    if not 0.0 < threshold <= 1.0:
        raise AudioError(f"threshold={threshold} must be in (0, 1]")
    if n_frames < 0 or hop_length < 1 or win_length < 1 or sample_rate <= 0:
        raise AudioError(f"bad framing: n_frames={n_frames}, hop_length={hop_length}, "
                         f"win_length={win_length}, sample_rate={sample_rate}")
    if n_samples is None:
        n_samples = (n_frames * hop_length + win_length - 1) if n_frames else win_length - 1
    limit = n_samples / sample_rate
    for i, (s, e, name) in enumerate(labels):
        if e * sample_rate > n_samples + 1:
            raise AudioError(f"label {i} ({name!r}, {s:g}-{e:g} s) ends after the audio, which lasts "
                             f"{limit:g} s ({n_samples} samples at {sample_rate} Hz)")
    names = [None] if classes is None else list(classes)
    if classes is not None:
        unknown = sorted({n for _, _, n in labels} - set(names))
        if unknown:
            raise AudioError(f"labels {unknown} are not among the classes {names}")
    f0 = np.arange(n_frames, dtype=np.float64) * hop_length  # window starts, samples (T,)
    f1 = f0 + win_length
    out = np.zeros((n_frames, len(names)), dtype=np.float32)
    for c, cname in enumerate(names):
        iv = sorted((s * sample_rate, e * sample_rate) for s, e, n in labels if cname is None or n == cname)
        merged: list[list[float]] = []
        for s, e in iv:  # union of the intervals, so overlapping labels are not counted twice
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        covered = np.zeros(n_frames)
        for s, e in merged:
            covered += np.clip(np.minimum(f1, e) - np.maximum(f0, s), 0.0, None)  # samples of overlap
        out[:, c] = covered / win_length >= threshold - 1e-9
    return out[:, 0] if classes is None else out


def write_labels(path, labels) -> None:
    """Write [(start_s, end_s, label)] as an Audacity label file."""
    with open(os.fspath(path), "w", encoding="utf-8") as f:
        for s, e, name in labels:
            f.write(f"{s:.6f}\t{e:.6f}\t{name}\n")

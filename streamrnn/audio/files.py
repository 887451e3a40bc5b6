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

from streamrnn.errors import AudioError

log = logging.getLogger(__name__)


def _check_wav_truncation(path: Path) -> None:
    """libsndfile silently shortens a WAV whose data chunk is cut; compare the header with the file size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return  # RF64/other: leave it to libsndfile
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            cid, n = struct.unpack("<4sI", f.read(8))
            if cid == b"data":
                have = size - (pos + 8)
                if n not in (0, 0xFFFFFFFF) and n > have:  # 0 / 0xFFFFFFFF: size unknown (streamed WAV)
                    raise AudioError(f"{path}: truncated WAV file: the header declares {n} bytes of audio "
                                     f"but only {have} are present")
                return
            pos += 8 + n + (n & 1)  # chunks are padded to an even size


def read_audio(path, mono: bool = True):
    """Read an audio file (WAV, FLAC, OGG, ...; int16/int24/float) -> (samples float32, rate).

    ``mono=True``: (n,), multi-channel files downmixed by the mean of the
    channels; ``mono=False``: (n, channels).  Raises AudioError for a missing,
    unreadable, truncated or empty file.

    >>> import tempfile, os, numpy as np, soundfile as sf
    >>> p = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> sf.write(p, np.zeros((800, 2)), 8000, subtype="PCM_16")
    >>> x, sr = read_audio(p); x.shape, x.dtype, sr
    ((800,), dtype('float32'), 8000)
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    if path.suffix.lower() == ".wav":
        _check_wav_truncation(path)
    try:
        with sf.SoundFile(str(path)) as f:
            declared = f.frames
            rate = f.samplerate
            x = f.read(dtype="float32", always_2d=True)  # (n, channels), int formats scaled to [-1, 1)
    except (sf.SoundFileError, RuntimeError) as e:
        raise AudioError(f"{path}: cannot read audio: {e}") from None
    if len(x) < declared:
        raise AudioError(f"{path}: truncated audio file: {len(x)} of {declared} frames could be read")
    if len(x) == 0:
        raise AudioError(f"{path}: audio file holds no samples")
    if rate <= 0:
        raise AudioError(f"{path}: sample rate {rate} must be > 0")
    if mono:
        x = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
    return np.ascontiguousarray(x), int(rate)


def read_labels(path):
    """Read an Audacity label file -> [(start_s, end_s, label)], in file order.

    Lines are ``start<TAB>end<TAB>label`` in seconds.  Blank lines and Audacity's
    spectral-selection lines (starting with a backslash) are skipped.  A bad
    line raises AudioError naming ``file:line``: wrong field count, a number that
    does not parse or is negative or non-finite, ``end < start``, empty label.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AudioError(f"{path}: no such label file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AudioError(f"{path}: cannot read label file: {e}") from None
    out = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("\\"):
            continue
        parts = line.split("\t", 2)
        where = f"{path}:{i}"
        if len(parts) != 3:
            raise AudioError(f"{where}: expected 'start<TAB>end<TAB>label', got {line!r}")
        try:
            start, end = float(parts[0]), float(parts[1])
        except ValueError:
            raise AudioError(f"{where}: start/end must be numbers of seconds, got {parts[0]!r}, {parts[1]!r}") from None
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0:
            raise AudioError(f"{where}: start={parts[0]} end={parts[1]} must be finite and >= 0 seconds")
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

"""Validation shared by the audio modules: settings, sample rates, front-end budgets, signals, NaN/Inf,
snapshots.

Each check raises a typed error (ConfigError, AudioError, SnapshotError) naming the value and the
limit.

>>> check_rate(16000.0), check_int("n_mels", 40, 1, 4096)
(16000, 40)
>>> as_signal(np.array([0, 16384], np.int16)).tolist()       # int16 full scale -> [-1, 1)
[0.0, 0.5]
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from streamrnn.audio.kernels import all_finite
from streamrnn.errors import AudioError, ConfigError, SnapshotError

NONFINITE_MODES = ("error", "zero")

# --- checks -------------------------------------------------------------------------

def check_int(name, v, lo=1, hi=None):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise ConfigError(f"{name} must be an integer, got {v!r}")
    v = int(v)
    if v < lo or (hi is not None and v > hi):
        lim = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ConfigError(f"{name}={v} is out of range: must be {lim}")
    return v


def check_number(name, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        raise ConfigError(f"{name} must be a finite number, got {v!r}")
    return int(v) if float(v).is_integer() and isinstance(v, numbers.Integral) else float(v)


def check_rate(rate, what="sample_rate", error=AudioError):
    """A positive finite sample rate (int if integral) or ``error``."""
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not math.isfinite(float(rate)):
        raise error(f"{what} must be a positive number of samples per second, got {rate!r}")
    if rate <= 0:
        raise error(f"{what}={rate} must be > 0 samples per second")
    return int(rate) if float(rate).is_integer() else float(rate)


# Budgets a front end's settings must fit (docs/frontend.md, "Limits"): checked before any table
# is built, so a model file's numbers never decide a multi-gigabyte allocation or a front end
# that cannot keep up with real time.
SAMPLE_RATE_RANGE = (1000, 384000)   # Hz: telephone-band 1 kHz up to 384 kHz studio audio
MAX_TABLE_BYTES = 128 * 2**20        # bytes: peak while building the tables (mel matrix and its temporaries)
MAX_OPS_PER_SECOND = 2e9             # estimated operations per second of audio (about one core)


def frontend_budget(sample_rate, n_fft, win_length, hop_length, n_mels, n_mfcc=0) -> dict:
    """Estimated costs of front-end settings: ``table_bytes`` (peak while building the tables),
    ``ops_per_second`` (per second of audio) and ``frame_rate``; ConfigError when one is above
    its limit (``MAX_TABLE_BYTES``, ``MAX_OPS_PER_SECOND``) or the rate is outside
    ``SAMPLE_RATE_RANGE``.  The message names the settings, the estimate and the limit.

    >>> frontend_budget(16000, 512, 400, 160, 40)["frame_rate"]
    100.0
    >>> frontend_budget(16000, 65536, 65536, 1, 4096)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streamrnn.errors.ConfigError: front end n_fft=65536, n_mels=4096 needs about 6148 MiB of tables ...
    """
    lo, hi = SAMPLE_RATE_RANGE
    if not lo <= sample_rate <= hi:
        raise ConfigError(f"sample_rate={sample_rate:g} Hz is outside the supported range {lo}-{hi} Hz")
    n_bins = n_fft // 2 + 1
    fft = n_fft >= 8 and (n_fft & (n_fft - 1)) == 0
    # the mel matrix (n_mels, n_bins) float64 and the five temporaries of the same shape that
    # build it; the DFT path: its cos/sin tables (n_bins, win) and the four temporaries that build
    # them; the DCT (n_mfcc, n_mels)
    table = 8 * (6 * n_mels * n_bins + (0 if fft else 6 * n_bins * win_length) + n_mfcc * n_mels + 8 * n_fft)
    per_frame = ((5 * n_fft * max(1, n_fft.bit_length() - 1)) if fft else 2 * n_bins * win_length) \
        + 2 * n_bins + n_mels + n_mfcc * n_mels
    frame_rate = sample_rate / hop_length
    ops = frame_rate * per_frame
    if table > MAX_TABLE_BYTES:
        raise ConfigError(f"front end n_fft={n_fft}, n_mels={n_mels} needs about {table / 2**20:.0f} MiB of tables "
                          f"(limit {MAX_TABLE_BYTES // 2**20} MiB): use fewer mels or a smaller n_fft")
    if ops > MAX_OPS_PER_SECOND:
        raise ConfigError(f"front end n_fft={n_fft}, hop_length={hop_length} at {sample_rate:g} Hz "
                          f"({frame_rate:g} frames/s) needs about {ops:.2g} operations per second of audio "
                          f"(limit {MAX_OPS_PER_SECOND:.0e}): use a larger hop_length or a smaller n_fft")
    return {"table_bytes": table, "ops_per_second": ops, "frame_rate": frame_rate}


def as_signal(x, what="signal", allow_2d=False) -> np.ndarray:
    """Validate audio samples; returns float64 (float input as is, int16 scaled by 1/32768).

    1-D (n,) always; (n, channels) only if ``allow_2d``.
    """
    if type(x) is np.ndarray and x.ndim == 1 and x.dtype.char in "fd":  # the common case, checked cheaply
        return x.astype(np.float64, copy=False)
    if isinstance(x, (list, tuple)):
        x = np.asarray(x, dtype=np.float64)
    if not isinstance(x, np.ndarray):
        raise AudioError(f"{what} must be a numpy array of samples, got {type(x).__name__}")
    if x.dtype == np.int16:
        y = x.astype(np.float64) / 32768.0  # full scale int16 -> [-1, 1)
    elif x.dtype.kind == "f" and x.dtype.itemsize in (4, 8):
        y = x.astype(np.float64, copy=False)
    else:
        raise AudioError(f"{what} must be float32, float64 or int16 samples, got dtype {x.dtype}")
    if y.ndim == 1 or (allow_2d and y.ndim == 2):
        if y.ndim == 2 and y.shape[1] < 1:
            raise AudioError(f"{what} has shape {x.shape}: zero channels")
        return y
    want = "(n,) or (n, channels)" if allow_2d else "(n,) (mono; downmix first)"
    raise AudioError(f"{what} must have shape {want}, got {x.shape}")


def guarded_restore(restore, snap, what: str) -> None:
    """``restore(snap)``, with a hand-made or damaged dict (KeyError/TypeError/ValueError inside)
    reported as one SnapshotError naming ``what`` instead of a traceback."""
    try:
        restore(snap)
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise SnapshotError(f"malformed {what} snapshot: {e!r}") from None


def fix_nonfinite(x: np.ndarray, nonfinite: str, what="signal"):
    """Return (x, n_replaced): NaN/Inf raise AudioError (``"error"``) or become 0 (``"zero"``)."""
    if nonfinite not in NONFINITE_MODES:
        raise ConfigError(f"nonfinite must be one of {NONFINITE_MODES}, got {nonfinite!r}")
    if all_finite(x.reshape(-1)):  # the common case, without np.isfinite's temporary array
        return x, 0
    ok = np.isfinite(x)
    n_bad = int(ok.size - np.count_nonzero(ok))
    if nonfinite == "error":
        raise nonfinite_error(x, what)
    x = np.where(ok, x, 0.0)
    return x, n_bad


def nonfinite_error(x: np.ndarray, what: str) -> AudioError:
    """The AudioError for NaN/Inf in ``x`` (n,) or (n, channels): how many, and the first sample."""
    ok = np.isfinite(x)
    n_bad = int(ok.size - np.count_nonzero(ok))
    first = int(np.argmin(ok.reshape(len(x), -1).all(axis=1)))
    return AudioError(f"{what} contains {n_bad} NaN/Inf samples (first at sample {first}); "
                      "pass nonfinite='zero' to replace them with zeros")


def zero_nonfinite(nonfinite: str) -> bool:
    """The ``nonfinite`` mode as the kernels' flag: True for "zero", False for "error"."""
    if nonfinite == "error":
        return False
    if nonfinite == "zero":
        return True
    raise ConfigError(f"nonfinite must be one of {NONFINITE_MODES}, got {nonfinite!r}")

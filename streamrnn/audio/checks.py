"""Validation shared by the audio modules: settings, sample rates, signals, NaN/Inf, snapshots.

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

"""Streaming log-mel / MFCC front end: the same numbers live and offline.

Framing (no centring, no padding: a live stream has no future)::

    frame t covers samples [t * hop_length, t * hop_length + win_length)
    T = 1 + (n_samples - win_length) // hop_length   (0 if n_samples < win_length)

Each frame: optional pre-emphasis (applied to the whole signal, state carried
across pushes), window of ``win_length`` samples, zero-padded at the end to
``n_fft``, real FFT, |X|**power, mel projection, log.  ``MFCC`` adds a
DCT-II (orthonormal) over the log-mel values and optional liftering.

Three modules: ``audio.kernels`` (the Numba kernels), ``audio.checks`` (validation shared by
the audio modules) and this one (the tables and the ``LogMel``/``MFCC`` classes).
The per-frame work runs in one Numba kernel (``_frames_kernel``; ``_dft_frames_kernel``
for an n_fft that is not a power of two) over a whole block of frames, in tiles of 8
frames that advance together, then one frame at a time.  Before it, ``_push_kernel``
checks the new samples for NaN/Inf, converts them to float64 after the leftover
samples, pre-emphasises them and keeps the new tail: ``push`` and ``compute`` both go
through it.  Every frame goes through the same floating-point operations from the
same float64 samples whatever tile it falls in, so ``push`` in any block sizes gives
frames bit-identical to ``compute`` on the whole signal.

Input normalisation is *not* part of the front end: a model's ``norm.mean`` /
``norm.std`` tensors hold it and the model kernel applies it.

>>> import numpy as np
>>> fe = LogMel()                                   # 16 kHz, 25 ms window, 10 ms hop, 40 mels
>>> x = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
>>> fe.compute(x).shape                             # 1 + (16000 - 400) // 160 frames
(98, 40)
>>> y = np.concatenate([fe.push(x[:1234]), fe.push(x[1234:])])
>>> bool(np.array_equal(y, fe.compute(x)))
True
"""

from __future__ import annotations

import logging
import math
import threading
from typing import NamedTuple

import numpy as np

from streamrnn.audio.checks import (  # noqa: F401 (as_signal, check_rate, fix_nonfinite, frontend_budget, guarded_restore:
    NONFINITE_MODES,                  # re-exported for the modules that take them from here)
    as_signal,
    check_int,
    check_number,
    check_rate,
    fix_nonfinite,
    frontend_budget,
    guarded_restore,
    nonfinite_error,
    zero_nonfinite,
)
from streamrnn.audio.kernels import (_HEAD, _NF, _NI, _TILE, _dft_frames_kernel, _frames1_kernel, _frames_kernel,
                                     _push_kernel)
from streamrnn.errors import AudioError, ConfigError, SnapshotError
from streamrnn.snapshot import SNAPSHOT_VERSION, check_snapshot
log = logging.getLogger(__name__)

_LOG_CODES = {None: 0, "ln": 1, "db": 2}

# --- window ---------------------------------------------------------------------------------------

_COSINE_WINDOWS = {"hann": (0.5, 1.0 - 0.5), "hamming": (0.54, 1.0 - 0.54)}  # scipy's (alpha, 1 - alpha)


def periodic_window(name, n: int) -> np.ndarray:
    """The periodic ("fftbins") window of length n, as librosa takes it from scipy.

    Hann and Hamming are computed here with scipy's own formula (a sum of cosines on
    linspace(-pi, pi, n + 1), last point dropped), so they equal scipy's values exactly
    without importing scipy.signal (about a second of start-up); other names go to scipy.
    """
    if isinstance(name, str) and name in _COSINE_WINDOWS:
        if n <= 1:
            return np.ones(n)
        fac = np.linspace(-np.pi, np.pi, n + 1)
        w = np.zeros(n + 1)
        for k, a in enumerate(_COSINE_WINDOWS[name]):
            w += a * np.cos(k * fac)
        return w[:n]
    import scipy.signal

    try:
        return scipy.signal.get_window(name, n, fftbins=True)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"window={name!r} is not a window scipy knows: {e}") from None


# --- mel scale and filterbank (librosa's definitions, written from the equations) -------------

def hz_to_mel(f, htk: bool = False):
    """Hz -> mel.  HTK: 2595 log10(1 + f/700).  Slaney: linear below 1 kHz, log above."""
    f = np.asarray(f, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    f_sp = 200.0 / 3  # Hz per mel in the linear part
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0  # the log part: 27 mels per factor 6.4 in frequency
    lin = f / f_sp
    with np.errstate(divide="ignore"):
        lg = min_log_mel + np.log(np.maximum(f, 1e-300) / min_log_hz) / logstep
    return np.where(f >= min_log_hz, lg, lin)


def mel_to_hz(m, htk: bool = False):
    """mel -> Hz, the inverse of ``hz_to_mel``."""
    m = np.asarray(m, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(sample_rate, n_fft, n_mels=40, fmin=0.0, fmax=None, htk=False, norm="slaney"):
    """Triangular mel filters (n_mels, 1 + n_fft//2) float64, as ``librosa.filters.mel``.

    Filter m rises from mel point m to m+1 and falls to m+2, where the n_mels+2
    points are equally spaced in mel between fmin and fmax.  ``norm="slaney"``
    scales each filter by 2 / (its bandwidth in Hz), so the filters have equal area.
    """
    if fmax is None:
        fmax = sample_rate / 2.0
    fft_hz = np.linspace(0.0, sample_rate / 2.0, 1 + n_fft // 2)  # (n_bins,)
    mel_pts = np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels + 2)
    hz_pts = mel_to_hz(mel_pts, htk)  # (n_mels + 2,)
    fdiff = np.diff(hz_pts)
    ramps = hz_pts[:, None] - fft_hz[None, :]  # (n_mels + 2, n_bins)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    w = np.maximum(0.0, np.minimum(lower, upper))  # (n_mels, n_bins)
    if norm == "slaney":
        w *= (2.0 / (hz_pts[2:] - hz_pts[:-2]))[:, None]
    return w


def dct_matrix(n_out: int, n_in: int, lifter: float = 0.0) -> np.ndarray:
    """Orthonormal DCT-II rows (n_out, n_in) times the lifter weights, as librosa.feature.mfcc."""
    n = np.arange(n_in)
    k = np.arange(n_out)[:, None]
    d = np.cos(np.pi * k * (2 * n + 1) / (2.0 * n_in)) * math.sqrt(2.0 / n_in)
    d[0] /= math.sqrt(2.0)
    if lifter > 0:
        d *= (1.0 + (lifter / 2.0) * np.sin(np.pi * (np.arange(n_out) + 1) / lifter))[:, None]
    return d

class FrameTables(NamedTuple):
    """The packed tables of one front-end setting, shared by every front end with those settings."""

    itab: np.ndarray   # int64: settings and part offsets, then the int tables (see _frames_kernel)
    ftab: np.ndarray   # float64: power, log floor, then the float tables
    kernel: object     # _frames_kernel (n_fft a power of two) or _dft_frames_kernel
    kernel_small: object  # for fewer than _TILE frames: _frames1_kernel or _dft_frames_kernel
    n_out: int         # values per frame
    n_scratch: int     # float64 scratch values the kernel needs


_local = threading.local()
_MAX_KEPT_DATA = 1 << 20  # samples (8 MB): a longer push gets a temporary frame-data array
_TABLES: dict = {}  # (class, settings) -> table attributes, shared by front ends with equal settings
_TABLES_MAX = 32  # distinct settings kept
_TABLES_LOCK = threading.Lock()


def _scratch(need: int) -> np.ndarray:
    """Kernel scratch of at least ``need`` float64 values, one array per thread, grown on demand.

    Shared by every front end of the thread (a stream server holds thousands of
    front ends; 52 KB at n_fft 512, 40 mels).  The kernel holds the GIL, so one
    scratch array per thread is never used by two calls at once.
    """
    s = getattr(_local, "scratch", None)
    if s is None or len(s) < need:
        s = _local.scratch = np.empty(need if s is None else max(need, len(s)))
    return s

# --- LogMel / MFCC ------------------------------------------------------------------------------

class LogMel:
    """Log-mel filterbank features, streaming or offline, with librosa's parameter names.

    ``log``: ``"ln"`` -> ln(mel + log_floor); ``"db"`` -> 10 log10(max(mel, log_floor))
    (librosa.power_to_db with ref=1, amin=log_floor, top_db=None); ``None`` -> the
    mel power itself.  ``preemphasis`` a: x'[n] = x[n] - a x[n-1] (x[-1] = 0 after a reset).

    >>> import numpy as np
    >>> fe = LogMel(n_mels=8, fmax=4000.0)
    >>> fe.n_features, fe.to_dict()["type"]
    (8, 'logmel')
    >>> fe.compute(np.zeros(560, np.float32)).shape    # 1 + (560 - 400) // 160
    (2, 8)
    """

    kind = "logmel"

    def __init__(self, sample_rate=16000, n_fft=512, win_length=400, hop_length=160, window="hann",
                 n_mels=40, fmin=0.0, fmax=None, htk=False, norm="slaney", power=2.0, log="ln",
                 log_floor=1e-6, preemphasis=0.0):
        self.sample_rate = check_rate(sample_rate, "sample_rate", ConfigError)
        self.n_fft = check_int("n_fft", n_fft, 2, 1 << 16)
        self.win_length = check_int("win_length", win_length, 1)
        if self.win_length > self.n_fft:
            raise ConfigError(f"win_length={self.win_length} must be <= n_fft={self.n_fft} "
                              "(a frame is one window zero-padded to n_fft)")
        self.hop_length = check_int("hop_length", hop_length, 1, 1 << 20)  # up to ~1 min at 16 kHz
        if not isinstance(window, str):
            raise ConfigError(f"window must be a window name such as 'hann', got {window!r}")
        self.window = window
        self.n_mels = check_int("n_mels", n_mels, 1, 4096)
        nyquist = self.sample_rate / 2.0
        self.fmin = float(check_number("fmin", fmin))
        if fmax is not None:
            fmax = float(check_number("fmax", fmax))
            if fmax > nyquist:
                raise ConfigError(f"fmax={fmax:g} Hz is above the Nyquist frequency {nyquist:g} Hz "
                                  f"(sample_rate {self.sample_rate} / 2)")
        self.fmax = fmax
        top = nyquist if fmax is None else fmax
        if not 0.0 <= self.fmin < top:
            raise ConfigError(f"fmin={self.fmin:g} Hz must be >= 0 and below fmax={top:g} Hz")
        if not isinstance(htk, bool):
            raise ConfigError(f"htk must be true or false, got {htk!r}")
        self.htk = htk
        if norm not in ("slaney", None):
            raise ConfigError(f"norm must be 'slaney' or None, got {norm!r}")
        self.norm = norm
        self.power = float(check_number("power", power))
        if self.power <= 0:
            raise ConfigError(f"power={self.power:g} must be > 0 (1: magnitude, 2: power)")
        if log not in _LOG_CODES:
            raise ConfigError(f"log must be 'ln', 'db' or None, got {log!r}")
        self.log = log
        self.log_floor = float(check_number("log_floor", log_floor))
        if self.log_floor <= 0:
            raise ConfigError(f"log_floor={self.log_floor:g} must be > 0 (it keeps log(0) finite)")
        self.preemphasis = float(check_number("preemphasis", preemphasis))
        if not 0.0 <= self.preemphasis < 1.0:
            raise ConfigError(f"preemphasis={self.preemphasis:g} must be in [0, 1)")
        frontend_budget(self.sample_rate, self.n_fft, self.win_length, self.hop_length, self.n_mels,
                        getattr(self, "n_mfcc", 0))
        self._share_tables()
        self.reset()

    # --- tables (built once per settings; the kernel only reads them) ---
    def _share_tables(self):
        """Take the tables of an earlier front end with the same class and settings, or build them.

        A stream server holds one front end per stream, all with the model's settings: shared
        tables (~100 KB at n_fft 512, 40 mels: the mel matrix, window, twiddles) stay in the
        CPU cache from one stream's push to the next instead of 1000 copies evicting each
        other (measured 1000 streams: see docs/frontend.md).  Never written after building.
        """
        key = (type(self), tuple(self.to_dict().items()))
        with _TABLES_LOCK:
            tabs = _TABLES.get(key)
        if tabs is None:
            tabs = self._pack_tables(self._build_tables())
            with _TABLES_LOCK:
                if len(_TABLES) >= _TABLES_MAX:
                    del _TABLES[next(iter(_TABLES))]  # the oldest settings
                _TABLES[key] = tabs
        self._tables = tabs

    def _build_tables(self) -> dict:
        """The tables of these settings by name (window, FFT/DFT, mel filters, DCT), before packing."""
        t: dict = {}
        w = periodic_window(self.window, self.win_length)
        t["window"] = np.ascontiguousarray(w, dtype=np.float64)  # (win,)
        n = self.n_fft
        n_bins = n // 2 + 1
        t["use_fft"] = n >= 8 and (n & (n - 1)) == 0
        if t["use_fft"]:
            m = n // 2  # real FFT of size n = complex FFT of size m + a split step
            bits = m.bit_length() - 1
            idx = np.arange(m)
            rev = np.zeros(m, dtype=np.int64)
            for b in range(bits):
                rev |= ((idx >> b) & 1) << (bits - 1 - b)
            # slot j of the bit-reversed packed input z holds samples 2 rev[j] (real) and 2 rev[j] + 1
            # (imaginary) of the frame times the window; past win_length, zero padding: sample 0 times 0
            for part, src in (("re", 2 * rev), ("im", 2 * rev + 1)):
                inside = src < self.win_length
                t[f"src_{part}"] = np.where(inside, src, 0)  # (m,)
                t[f"w_{part}"] = np.where(inside, t["window"][np.where(inside, src, 0)], 0.0)
            k = np.arange(3 * m // 4)  # radix-4 steps read up to e^{-2 pi i (3m/4 - 1)/m}
            t["tw_re"] = np.cos(2 * np.pi * k / m)  # e^{-2 pi i k / m}, (3m/4,)
            t["tw_im"] = -np.sin(2 * np.pi * k / m)
            k = np.arange(m + 1)
            t["tw2_re"] = np.cos(2 * np.pi * k / n)  # e^{-2 pi i k / n}, (m+1,)
            t["tw2_im"] = -np.sin(2 * np.pi * k / n)
            t["dft_cos"] = t["dft_sin"] = np.zeros((1, 1))
        else:  # any other n_fft: direct DFT over the win_length nonzero samples
            t["src_re"] = t["src_im"] = np.zeros(1, dtype=np.int64)
            t["w_re"] = t["w_im"] = np.zeros(1)
            t["tw_re"] = t["tw_im"] = t["tw2_re"] = t["tw2_im"] = np.zeros(1)
            ang = 2 * np.pi * np.outer(np.arange(n_bins), np.arange(self.win_length)) / n
            t["dft_cos"] = np.cos(ang)  # (n_bins, win)
            t["dft_sin"] = -np.sin(ang)
        fb = mel_filterbank(self.sample_rate, n, self.n_mels, self.fmin, self.fmax, self.htk, self.norm)
        empty = np.flatnonzero(fb.max(axis=1) <= 0)
        if len(empty):
            log.warning("mel filters %s are empty (n_mels=%d too many for n_fft=%d); they output log_floor",
                        empty.tolist(), self.n_mels, n)
        nz = fb > 0
        t["fb"] = np.ascontiguousarray(fb)
        t["fb_lo"] = np.where(nz.any(1), nz.argmax(1), 0).astype(np.int64)
        t["fb_hi"] = np.where(nz.any(1), n_bins - nz[:, ::-1].argmax(1), 0).astype(np.int64)
        t["dct"] = np.zeros((1, 1))
        t["use_dct"] = False
        return t

    def _pack_tables(self, t: dict) -> "FrameTables":
        """Settings and tables as the kernel's two flat arrays (see ``_frames_kernel``)."""
        ints = [t["src_re"], t["src_im"], t["fb_lo"], t["fb_hi"]]
        floats = [t["window"], t["w_re"], t["w_im"], t["tw_re"], t["tw_im"], t["tw2_re"],
                  t["tw2_im"], t["dft_cos"].ravel(), t["dft_sin"].ravel(), t["fb"].ravel(), t["dct"].ravel()]
        assert len(ints) == _NI and len(floats) == _NF
        oi = _HEAD + np.cumsum([0] + [len(a) for a in ints])
        of = 2 + np.cumsum([0] + [len(a) for a in floats])
        head = [self.hop_length, int(t["use_fft"]), _LOG_CODES[self.log], int(t["use_dct"]),
                self.n_fft // 2 + 1, self.n_mels, t["dft_cos"].shape[1], t["dct"].shape[0]]
        m = self.n_fft // 2
        return FrameTables(itab=np.concatenate([head, oi, of] + ints).astype(np.int64),
                           ftab=np.concatenate([[self.power, self.log_floor]] + floats).astype(np.float64),
                           kernel=_frames_kernel if t["use_fft"] else _dft_frames_kernel,
                           kernel_small=_frames1_kernel if t["use_fft"] else _dft_frames_kernel,
                           n_out=self.n_features,  # (a property: read once here, not on every push)
                           n_scratch=(2 * m + m + 1 + self.n_mels) * _TILE)  # re, im (m,), spec (m+1,), mel per frame

    # --- properties ---
    @property
    def n_features(self) -> int:
        """Values per frame (n_mels; n_mfcc for MFCC)."""
        return self.n_mels

    @property
    def frame_rate(self) -> float:
        """Frames per second (sample_rate / hop_length)."""
        return self.sample_rate / self.hop_length

    def n_frames_for(self, n_samples: int) -> int:
        """Frames ``compute`` yields for a signal of ``n_samples``: 1 + (n - win) // hop, or 0."""
        if n_samples < self.win_length:
            return 0
        return 1 + (n_samples - self.win_length) // self.hop_length

    def to_dict(self) -> dict:
        """Every setting, JSON-able; ``frontend_from_dict(fe.to_dict())`` rebuilds it."""
        return {"type": self.kind, "sample_rate": self.sample_rate, "n_fft": self.n_fft,
                "win_length": self.win_length, "hop_length": self.hop_length, "window": self.window,
                "n_mels": self.n_mels, "fmin": self.fmin, "fmax": self.fmax, "htk": self.htk,
                "norm": self.norm, "power": self.power, "log": self.log, "log_floor": self.log_floor,
                "preemphasis": self.preemphasis}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "type")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return isinstance(other, LogMel) and other.to_dict() == self.to_dict()

    __hash__ = None

    # --- computation ---
    def _run(self, x: np.ndarray, n_frames: int) -> np.ndarray:
        """Kernel call on float64 samples x; allocates the output (scratch is reused)."""
        out = np.empty((n_frames, self.n_features), dtype=np.float32)
        if n_frames:
            tb = self._tables
            (tb.kernel if n_frames >= _TILE else tb.kernel_small)(x, n_frames, tb.itab, tb.ftab,
                                                                  _scratch(tb.n_scratch), out)
        return out

    def compute(self, signal, nonfinite: str = "error") -> np.ndarray:
        """Offline features of a whole mono signal (n,) -> (T, n_features) float32.

        Independent of (and not touching) the streaming state.  float32/float64
        samples are used as they are; int16 is scaled by 1/32768.  An empty signal
        raises AudioError; a signal shorter than ``win_length`` gives (0, F).
        """
        zero = zero_nonfinite(nonfinite)
        x = signal
        if not (type(x) is np.ndarray and x.ndim == 1 and x.dtype.char in "fd" and x.flags.c_contiguous):
            x = np.ascontiguousarray(as_signal(x))
        if len(x) == 0:
            raise AudioError("signal is empty (0 samples); need at least win_length="
                             f"{self.win_length} samples for one frame")
        t = self.n_frames_for(len(x))
        data = np.empty(len(x))  # float64 samples after the NaN/Inf check and pre-emphasis
        state = np.zeros(1 + self.win_length)  # a fresh stream's state
        bad = _push_kernel(x, zero, state, 0, 0, t, self.hop_length, self.preemphasis, data)[0]
        if bad and not zero:
            raise nonfinite_error(x, "signal")
        return self._run(data, t)

    def push(self, block, nonfinite: str = "error") -> np.ndarray:
        """Stream: add mono samples (n,), get the (t, n_features) frames they complete.

        The leftover samples and the pre-emphasis state carry over to the next
        push; any chunking gives the frames of ``compute`` on the concatenation.
        NaN/Inf raise AudioError, or with ``nonfinite="zero"`` become 0 and are
        counted in ``n_nonfinite``.
        """
        out, bad, _ = self._push(block, nonfinite, "block")
        self.n_nonfinite += bad
        return out

    def _push(self, block, nonfinite: str, what: str):
        """``push`` without touching ``n_nonfinite``: returns (frames, NaN/Inf samples replaced, the
        block's peak |sample|).

        Two kernel calls do the work (``_push_kernel``: check, convert, pre-emphasise,
        keep the tail; then the frames kernel): the per-push Python work is a few checks
        and the output allocation (the many-streams server pays it on every 100 ms
        message of every stream).
        """
        zero = nonfinite == "zero"
        if not zero and nonfinite != "error":
            zero_nonfinite(nonfinite)  # raises ConfigError
        if not (type(block) is np.ndarray and block.ndim == 1 and block.dtype.char in "fd"
                and block.flags.c_contiguous):  # the common case is a float32/float64 array: as it is
            block = np.ascontiguousarray(as_signal(block, what))
        n_left = self._n_left
        n = len(block)
        k = min(self._skip, n)
        total = n_left + n - k
        t = 1 + (total - self.win_length) // self.hop_length if total >= self.win_length else 0
        data = getattr(_local, "data", None)  # the frame data: per thread, reused (the kernel holds the GIL)
        if data is None or len(data) < total:
            data = np.empty(total)
            if total <= _MAX_KEPT_DATA:
                _local.data = data
        bad, peak = _push_kernel(block, zero, self._state, n_left, self._skip, t, self.hop_length, self.preemphasis,
                                 data)
        if bad and not zero:  # the kernel changed nothing
            raise nonfinite_error(block, what)
        out = np.empty((t, self._tables.n_out), dtype=np.float32)
        if t:
            tb = self._tables
            (tb.kernel if t >= _TILE else tb.kernel_small)(data, t, tb.itab, tb.ftab, _scratch(tb.n_scratch), out)
        used = t * self.hop_length
        if used > total:
            self._skip = used - total
            self._n_left = 0
        else:
            self._skip -= k
            self._n_left = total - used
        self.n_frames += t
        return out, bad, peak

    def reset(self) -> None:
        """Forget leftover samples and pre-emphasis state; frame count back to 0."""
        # [last raw sample (pre-emphasis of the next block), the leftover samples (already
        # pre-emphasised), float64]: (1 + win,)
        self._state = np.zeros(1 + self.win_length)
        self._n_left = 0  # leftover samples in _state[1:]
        self._skip = 0  # samples of the next block before the next frame (hop > win)
        self.n_frames = 0
        self.n_nonfinite = 0

    @property
    def pending(self) -> int:
        """Samples held back for the next frame."""
        return self._n_left

    def snapshot(self) -> dict:
        """Versioned copy of the carried state (leftover samples, pre-emphasis, counters)."""
        return self._snapshot_of(self._state, self._n_left, self._skip, self.n_frames, self.n_nonfinite)

    def _snapshot_of(self, state: np.ndarray, n_left: int, skip: int, n_frames: int, n_nonfinite: int) -> dict:
        """The snapshot dict of carried state ``state`` (1 + win_length,) and its counters: this
        front end's own, or a ``FeatureBank`` row's (the same dict, so it moves between them)."""
        return {"version": SNAPSHOT_VERSION, "kind": "frontend", "settings": self.to_dict(),
                "buffer": state[1:1 + n_left].copy(), "prev": float(state[0]),
                "skip": int(skip), "n_frames": int(n_frames), "n_nonfinite": int(n_nonfinite)}

    def restore(self, snap: dict) -> None:
        """Put back a snapshot taken from a front end with identical settings."""
        guarded_restore(self._restore, snap, "front-end")

    def _restore(self, snap: dict) -> None:
        state, n_left, skip, n_frames, n_nonfinite = self._read_snapshot(snap, type(self).__name__)
        # assigned only once every value has been read
        self._state, self._n_left, self._skip = state, n_left, skip
        self.n_frames, self.n_nonfinite = n_frames, n_nonfinite

    def _read_snapshot(self, snap: dict, what: str) -> tuple:
        """Check a front-end snapshot against these settings -> (state (1 + win_length,) float64,
        n_left, skip, n_frames, n_nonfinite), touching nothing (SnapshotError; KeyError, TypeError,
        ValueError for a damaged dict).  ``what`` names the restoring object in the messages."""
        check_snapshot(snap, "frontend", what, self.to_dict())
        buf = np.asarray(snap["buffer"], dtype=np.float64)
        if buf.ndim != 1 or len(buf) >= self.win_length:
            raise SnapshotError(f"front-end snapshot buffer has shape {buf.shape}; "
                                f"expected (n,) with n < win_length={self.win_length}")
        prev, skip, n_frames, n_nonfinite = (float(snap["prev"]), int(snap["skip"]), int(snap["n_frames"]),
                                             int(snap["n_nonfinite"]))
        state = np.zeros(1 + self.win_length)
        state[0] = prev
        state[1:1 + len(buf)] = buf
        return state, len(buf), skip, n_frames, n_nonfinite


class MFCC(LogMel):
    """MFCCs: orthonormal DCT-II of the log-mel frame, first ``n_mfcc`` coefficients, optional lifter.

    librosa parity: ``MFCC(log="db", log_floor=1e-10, ...)`` equals
    ``librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=None))``; librosa's
    own default ``top_db=80`` clips relative to the whole file's maximum, which
    a stream cannot know.

    >>> fe = MFCC(n_mfcc=13)
    >>> fe.n_features, fe.to_dict()["type"]
    (13, 'mfcc')
    """

    kind = "mfcc"

    def __init__(self, n_mfcc=13, lifter=0, **logmel_kwargs):
        self.n_mfcc = check_int("n_mfcc", n_mfcc, 1, 4096)  # <= n_mels (checked once n_mels is)
        self.lifter = check_number("lifter", lifter)
        if self.lifter < 0:
            raise ConfigError(f"lifter={self.lifter} must be >= 0 (0: no liftering)")
        super().__init__(**logmel_kwargs)
        if self.n_mfcc > self.n_mels:
            raise ConfigError(f"n_mfcc={self.n_mfcc} must be <= n_mels={self.n_mels}")

    def _build_tables(self) -> dict:
        t = super()._build_tables()
        t["dct"] = dct_matrix(self.n_mfcc, self.n_mels, float(self.lifter))  # (n_mfcc, n_mels)
        t["use_dct"] = True
        return t

    @property
    def n_features(self) -> int:
        return self.n_mfcc

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["n_mfcc"] = self.n_mfcc
        d["lifter"] = self.lifter
        return d


_LOGMEL_KEYS = frozenset(LogMel().to_dict()) - {"type"}
_MFCC_KEYS = _LOGMEL_KEYS | {"n_mfcc", "lifter"}


def frontend_from_dict(d) -> LogMel:
    """Build a LogMel or MFCC from its ``to_dict()`` (the model file's "frontend" metadata).

    Missing settings take their defaults; unknown keys and bad values raise
    ConfigError naming them.

    >>> frontend_from_dict({"type": "mfcc", "n_mfcc": 20}).n_features
    20
    >>> frontend_from_dict({"type": "logmel", "nmels": 40})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streamrnn.errors.ConfigError: unknown front-end setting(s) ['nmels'] for type 'logmel'; known: ...
    """
    if not isinstance(d, dict):
        raise ConfigError(f"front-end settings must be a dict/object, got {type(d).__name__}")
    kind = d.get("type")
    if kind not in ("logmel", "mfcc"):
        raise ConfigError(f"front-end 'type' must be 'logmel' or 'mfcc', got {kind!r}")
    known = _LOGMEL_KEYS if kind == "logmel" else _MFCC_KEYS
    unknown = sorted(k for k in d if k != "type" and k not in known)
    if unknown:
        raise ConfigError(f"unknown front-end setting(s) {unknown} for type {kind!r}; known: {sorted(known)}")
    kw = {k: v for k, v in d.items() if k != "type"}
    return LogMel(**kw) if kind == "logmel" else MFCC(**kw)


def as_frontend(fe) -> LogMel:
    """A fresh front end (own streaming state) from a LogMel/MFCC or a settings dict."""
    if isinstance(fe, LogMel):
        return frontend_from_dict(fe.to_dict())
    if isinstance(fe, dict):
        return frontend_from_dict(fe)
    raise ConfigError(f"front end must be a LogMel, MFCC or settings dict, got {type(fe).__name__}")

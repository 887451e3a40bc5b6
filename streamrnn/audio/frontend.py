"""Streaming log-mel / MFCC front end: the same numbers live and offline.

Framing (no centring, no padding: a live stream has no future)::

    frame t covers samples [t * hop_length, t * hop_length + win_length)
    T = 1 + (n_samples - win_length) // hop_length   (0 if n_samples < win_length)

Each frame: optional pre-emphasis (applied to the whole signal, state carried
across pushes), window of ``win_length`` samples, zero-padded at the end to
``n_fft``, real FFT, |X|**power, mel projection, log.  ``MFCC`` adds a
DCT-II (orthonormal) over the log-mel values and optional liftering.

The per-frame work runs in one Numba kernel (``_frames_kernel``) over a whole
block of frames; ``LogMel.push`` only concatenates the leftover samples with
the new block and keeps the tail.  Because every frame is computed by the same
kernel from the same float64 samples, ``push`` in any block sizes gives frames
bit-identical to ``compute`` on the whole signal.

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
import numbers

import numpy as np
from numba import njit

from streamrnn.errors import AudioError, ConfigError, SnapshotError

log = logging.getLogger(__name__)

SNAPSHOT_VERSION = 1
_LOG_CODES = {None: 0, "ln": 1, "db": 2}
NONFINITE_MODES = ("error", "zero")


# --- kernel -----------------------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def _cfft_kernel(re, im, tw_re, tw_im, m):
    """In-place radix-2 complex FFT of size m >= 4 on input already in bit-reversed order.

    tw_re/tw_im (m/2,) hold e^{-2 pi i k / m}.  The first two stages have the
    trivial twiddles 1 and -i and are written out; the others load one twiddle
    per k per stage.
    """
    for a in range(0, m, 2):  # size 2: twiddle 1
        b = a + 1
        tr = re[b]
        ti = im[b]
        re[b] = re[a] - tr
        im[b] = im[a] - ti
        re[a] += tr
        im[a] += ti
    for a in range(0, m, 4):  # size 4: twiddles 1 and -i
        b = a + 2
        tr = re[b]
        ti = im[b]
        re[b] = re[a] - tr
        im[b] = im[a] - ti
        re[a] += tr
        im[a] += ti
        a1 = a + 1
        b1 = a + 3
        tr = im[b1]  # (re + i im) * (-i) = im - i re
        ti = -re[b1]
        re[b1] = re[a1] - tr
        im[b1] = im[a1] - ti
        re[a1] += tr
        im[a1] += ti
    size = 8
    while size <= m:
        half = size // 2
        step = m // size
        for k in range(half):
            wr = tw_re[k * step]
            wi = tw_im[k * step]
            for a in range(k, m, size):
                b = a + half
                tr = re[b] * wr - im[b] * wi
                ti = re[b] * wi + im[b] * wr
                re[b] = re[a] - tr
                im[b] = im[a] - ti
                re[a] += tr
                im[a] += ti
        size *= 2


@njit(cache=True, error_model="numpy")
def _frames_kernel(x, n_frames, hop, window, n_fft, use_fft, bitrev, tw_re, tw_im, tw2_re, tw2_im,
                   dft_cos, dft_sin, power, fb, fb_lo, fb_hi, log_mode, log_floor, dct, use_dct,
                   re, im, spec, mel, out):
    """Features of ``n_frames`` frames of ``x`` (float64) into ``out`` (n_frames, F) float32.

    x (N,) with N >= (n_frames - 1) * hop + win; window (win,).
    ``use_fft`` (n_fft a power of two >= 8): real FFT of size n_fft as one complex
    FFT of size m = n_fft/2 on z[j] = x[2j] + i x[2j+1]; bitrev (m,), twiddles
    tw_re/tw_im (m/2,) = e^{-2 pi i k/m}, tw2_re/tw2_im (m+1,) = e^{-2 pi i k/n_fft}.
    Otherwise a direct DFT with tables dft_cos/dft_sin (n_bins, win).
    fb (n_mels, n_bins), nonzero on [fb_lo[m], fb_hi[m]); dct (F, n_mels) when ``use_dct``.
    Scratch: re, im (n_fft,), spec (n_bins,), mel (n_mels,).
    """
    win = window.shape[0]
    n_bins = n_fft // 2 + 1
    n_mels = fb.shape[0]
    half_n = n_fft // 2
    for t in range(n_frames):
        s = t * hop
        if use_fft:
            for i in range(half_n):
                re[i] = 0.0
                im[i] = 0.0
            # windowed frame packed as z[j] = x[2j] + i x[2j+1], scattered into bit-reversed order;
            # the tail [win, n_fft) stays zero padding
            for i in range(win):
                v = x[s + i] * window[i]
                j = bitrev[i >> 1]
                if i & 1:
                    im[j] = v
                else:
                    re[j] = v
            _cfft_kernel(re, im, tw_re, tw_im, half_n)
            # split Z into the spectra of the even and odd samples: X_k = E_k + e^{-2 pi i k/n} O_k
            for k in range(half_n + 1):
                k1 = k % half_n
                k2 = (half_n - k) % half_n
                ar = re[k1]
                ai = im[k1]
                br = re[k2]
                bi = -im[k2]  # conj(Z[m - k])
                er = 0.5 * (ar + br)
                ei = 0.5 * (ai + bi)
                o_r = 0.5 * (ai - bi)  # O_k = (Z_k - conj Z_{m-k}) / 2i
                o_i = -0.5 * (ar - br)
                wr = tw2_re[k]
                wi = tw2_im[k]
                xr = er + o_r * wr - o_i * wi
                xi = ei + o_r * wi + o_i * wr
                spec[k] = xr * xr + xi * xi  # |X_k|^2
        else:
            for k in range(n_bins):
                acc_r = 0.0
                acc_i = 0.0
                for i in range(win):
                    v = x[s + i] * window[i]
                    acc_r += v * dft_cos[k, i]
                    acc_i += v * dft_sin[k, i]
                spec[k] = acc_r * acc_r + acc_i * acc_i  # |X_k|^2
        if power == 1.0:
            for k in range(n_bins):
                spec[k] = math.sqrt(spec[k])
        elif power != 2.0:
            for k in range(n_bins):
                spec[k] = spec[k] ** (0.5 * power)
        for m in range(n_mels):
            acc = 0.0
            for k in range(fb_lo[m], fb_hi[m]):
                acc += fb[m, k] * spec[k]
            if log_mode == 1:
                acc = math.log(acc + log_floor)
            elif log_mode == 2:
                acc = 10.0 * math.log10(max(acc, log_floor))
            mel[m] = acc
        if use_dct:
            for j in range(dct.shape[0]):
                acc = 0.0
                for m in range(n_mels):
                    acc += dct[j, m] * mel[m]
                out[t, j] = acc
        else:
            for m in range(n_mels):
                out[t, m] = mel[m]


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


# --- validation helpers -------------------------------------------------------------------------

def _int(name, v, lo=1, hi=None):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise ConfigError(f"{name} must be an integer, got {v!r}")
    v = int(v)
    if v < lo or (hi is not None and v > hi):
        lim = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ConfigError(f"{name}={v} is out of range: must be {lim}")
    return v


def _num(name, v):
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


def fix_nonfinite(x: np.ndarray, nonfinite: str, what="signal"):
    """Return (x, n_replaced): NaN/Inf raise AudioError (``"error"``) or become 0 (``"zero"``)."""
    if nonfinite not in NONFINITE_MODES:
        raise ConfigError(f"nonfinite must be one of {NONFINITE_MODES}, got {nonfinite!r}")
    ok = np.isfinite(x)
    if ok.all():
        return x, 0
    n_bad = int(ok.size - np.count_nonzero(ok))
    if nonfinite == "error":
        first = int(np.argmin(ok.reshape(len(x), -1).all(axis=1)))
        raise AudioError(f"{what} contains {n_bad} NaN/Inf samples (first at sample {first}); "
                         "pass nonfinite='zero' to replace them with zeros")
    x = np.where(ok, x, 0.0)
    return x, n_bad


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
        self.n_fft = _int("n_fft", n_fft, 2, 1 << 16)
        self.win_length = _int("win_length", win_length, 1)
        if self.win_length > self.n_fft:
            raise ConfigError(f"win_length={self.win_length} must be <= n_fft={self.n_fft} "
                              "(a frame is one window zero-padded to n_fft)")
        self.hop_length = _int("hop_length", hop_length, 1)
        if not isinstance(window, str):
            raise ConfigError(f"window must be a window name such as 'hann', got {window!r}")
        self.window = window
        self.n_mels = _int("n_mels", n_mels, 1, 4096)
        nyquist = self.sample_rate / 2.0
        self.fmin = float(_num("fmin", fmin))
        if fmax is not None:
            fmax = float(_num("fmax", fmax))
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
        self.power = float(_num("power", power))
        if self.power <= 0:
            raise ConfigError(f"power={self.power:g} must be > 0 (1: magnitude, 2: power)")
        if log not in _LOG_CODES:
            raise ConfigError(f"log must be 'ln', 'db' or None, got {log!r}")
        self.log = log
        self.log_floor = float(_num("log_floor", log_floor))
        if self.log_floor <= 0:
            raise ConfigError(f"log_floor={self.log_floor:g} must be > 0 (it keeps log(0) finite)")
        self.preemphasis = float(_num("preemphasis", preemphasis))
        if not 0.0 <= self.preemphasis < 1.0:
            raise ConfigError(f"preemphasis={self.preemphasis:g} must be in [0, 1)")
        self._build_tables()
        self.reset()

    # --- tables (built once; the kernel only reads them) ---
    def _build_tables(self):
        import scipy.signal

        try:
            w = scipy.signal.get_window(self.window, self.win_length, fftbins=True)  # periodic, as librosa
        except (ValueError, TypeError) as e:
            raise ConfigError(f"window={self.window!r} is not a window scipy knows: {e}") from None
        self._window = np.ascontiguousarray(w, dtype=np.float64)  # (win,)
        n = self.n_fft
        n_bins = n // 2 + 1
        self._use_fft = n >= 8 and (n & (n - 1)) == 0
        if self._use_fft:
            m = n // 2  # real FFT of size n = complex FFT of size m + a split step
            bits = m.bit_length() - 1
            idx = np.arange(m)
            rev = np.zeros(m, dtype=np.int64)
            for b in range(bits):
                rev |= ((idx >> b) & 1) << (bits - 1 - b)
            self._bitrev = rev  # (m,)
            k = np.arange(m // 2)
            self._tw_re = np.cos(2 * np.pi * k / m)  # e^{-2 pi i k / m}, (m/2,)
            self._tw_im = -np.sin(2 * np.pi * k / m)
            k = np.arange(m + 1)
            self._tw2_re = np.cos(2 * np.pi * k / n)  # e^{-2 pi i k / n}, (m+1,)
            self._tw2_im = -np.sin(2 * np.pi * k / n)
            self._dft_cos = self._dft_sin = np.zeros((1, 1))
        else:  # any other n_fft: direct DFT over the win_length nonzero samples
            self._bitrev = np.zeros(1, dtype=np.int64)
            self._tw_re = self._tw_im = self._tw2_re = self._tw2_im = np.zeros(1)
            ang = 2 * np.pi * np.outer(np.arange(n_bins), np.arange(self.win_length)) / n
            self._dft_cos = np.cos(ang)  # (n_bins, win)
            self._dft_sin = -np.sin(ang)
        fb = mel_filterbank(self.sample_rate, n, self.n_mels, self.fmin, self.fmax, self.htk, self.norm)
        empty = np.flatnonzero(fb.max(axis=1) <= 0)
        if len(empty):
            log.warning("mel filters %s are empty (n_mels=%d too many for n_fft=%d); they output log_floor",
                        empty.tolist(), self.n_mels, n)
        nz = fb > 0
        self._fb = np.ascontiguousarray(fb)
        self._fb_lo = np.where(nz.any(1), nz.argmax(1), 0).astype(np.int64)
        self._fb_hi = np.where(nz.any(1), n_bins - nz[:, ::-1].argmax(1), 0).astype(np.int64)
        self._dct = np.zeros((1, 1))
        self._use_dct = False

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
        """Kernel call on float64 samples x; allocates the output and scratch once per call."""
        out = np.empty((n_frames, self.n_features), dtype=np.float32)
        if n_frames == 0:
            return out
        n = self.n_fft
        re, im = np.empty(n), np.empty(n)
        spec, mel = np.empty(n // 2 + 1), np.empty(self.n_mels)
        _frames_kernel(x, n_frames, self.hop_length, self._window, n, self._use_fft, self._bitrev,
                       self._tw_re, self._tw_im, self._tw2_re, self._tw2_im, self._dft_cos,
                       self._dft_sin, self.power, self._fb,
                       self._fb_lo, self._fb_hi, _LOG_CODES[self.log], self.log_floor, self._dct,
                       self._use_dct, re, im, spec, mel, out)
        return out

    def _preemph(self, x: np.ndarray, prev: float) -> np.ndarray:
        if self.preemphasis == 0.0 or len(x) == 0:
            return np.ascontiguousarray(x, dtype=np.float64)
        y = np.array(x, dtype=np.float64)  # copy: never mutate the caller's array
        y[1:] -= self.preemphasis * x[:-1]
        y[0] -= self.preemphasis * prev
        return y

    def compute(self, signal, nonfinite: str = "error") -> np.ndarray:
        """Offline features of a whole mono signal (n,) -> (T, n_features) float32.

        Independent of (and not touching) the streaming state.  float32/float64
        samples are used as they are; int16 is scaled by 1/32768.  An empty signal
        raises AudioError; a signal shorter than ``win_length`` gives (0, F).
        """
        x = as_signal(signal)
        if len(x) == 0:
            raise AudioError("signal is empty (0 samples); need at least win_length="
                             f"{self.win_length} samples for one frame")
        x, _ = fix_nonfinite(x, nonfinite)
        x = self._preemph(x, 0.0)
        return self._run(x, self.n_frames_for(len(x)))

    def push(self, block, nonfinite: str = "error") -> np.ndarray:
        """Stream: add mono samples (n,), get the (t, n_features) frames they complete.

        The leftover samples and the pre-emphasis state carry over to the next
        push; any chunking gives the frames of ``compute`` on the concatenation.
        NaN/Inf raise AudioError, or with ``nonfinite="zero"`` become 0 and are
        counted in ``n_nonfinite``.
        """
        x = as_signal(block, "block")
        x, bad = fix_nonfinite(x, nonfinite, "block")
        self.n_nonfinite += bad
        if len(x) == 0:
            return np.empty((0, self.n_features), dtype=np.float32)
        y = self._preemph(x, self._prev)
        self._prev = float(x[-1])
        if self._skip:  # hop > win: samples between frames that no frame uses
            k = min(self._skip, len(y))
            y = y[k:]
            self._skip -= k
        data = np.concatenate([self._buf, y]) if len(self._buf) else y
        t = self.n_frames_for(len(data))
        out = self._run(data, t)
        used = t * self.hop_length
        if used > len(data):
            self._skip = used - len(data)
            self._buf = np.empty(0)
        else:
            self._buf = data[used:].copy()
        self.n_frames += t
        return out

    def reset(self) -> None:
        """Forget leftover samples and pre-emphasis state; frame count back to 0."""
        self._buf = np.empty(0)  # (n_left,) float64, already pre-emphasised
        self._prev = 0.0  # last raw sample, for pre-emphasis of the next block
        self._skip = 0
        self.n_frames = 0
        self.n_nonfinite = 0

    @property
    def pending(self) -> int:
        """Samples held back for the next frame."""
        return len(self._buf)

    def snapshot(self) -> dict:
        """Versioned copy of the carried state (leftover samples, pre-emphasis, counters)."""
        return {"version": SNAPSHOT_VERSION, "kind": "frontend", "settings": self.to_dict(),
                "buffer": self._buf.copy(), "prev": self._prev, "skip": self._skip,
                "n_frames": self.n_frames, "n_nonfinite": self.n_nonfinite}

    def restore(self, snap: dict) -> None:
        """Put back a snapshot taken from a front end with identical settings."""
        try:
            self._restore(snap)
        except SnapshotError:
            raise
        except (KeyError, TypeError, ValueError) as e:  # a hand-made or damaged dict
            raise SnapshotError(f"malformed front-end snapshot: {e!r}") from None

    def _restore(self, snap: dict) -> None:
        if not isinstance(snap, dict) or snap.get("kind") != "frontend":
            raise SnapshotError(f"not a front-end snapshot: {type(snap).__name__} "
                                f"kind={snap.get('kind') if isinstance(snap, dict) else None!r}")
        if snap.get("version") != SNAPSHOT_VERSION:
            raise SnapshotError(f"front-end snapshot version {snap.get('version')!r} is not supported "
                                f"(this streamrnn reads {SNAPSHOT_VERSION})")
        if snap.get("settings") != self.to_dict():
            diff = sorted(k for k in set(self.to_dict()) | set(snap.get("settings") or {})
                          if (snap.get("settings") or {}).get(k) != self.to_dict().get(k))
            raise SnapshotError(f"front-end snapshot settings differ from this front end in {diff}")
        buf = np.asarray(snap["buffer"], dtype=np.float64)
        if buf.ndim != 1 or len(buf) >= self.win_length:
            raise SnapshotError(f"front-end snapshot buffer has shape {buf.shape}; "
                                f"expected (n,) with n < win_length={self.win_length}")
        vals = (float(snap["prev"]), int(snap["skip"]), int(snap["n_frames"]), int(snap["n_nonfinite"]))
        self._buf = buf.copy()  # assigned only once every value has been read
        self._prev, self._skip, self.n_frames, self.n_nonfinite = vals


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
        self.n_mfcc = _int("n_mfcc", n_mfcc, 1)
        self.lifter = _num("lifter", lifter)
        if self.lifter < 0:
            raise ConfigError(f"lifter={self.lifter} must be >= 0 (0: no liftering)")
        super().__init__(**logmel_kwargs)
        if self.n_mfcc > self.n_mels:
            raise ConfigError(f"n_mfcc={self.n_mfcc} must be <= n_mels={self.n_mels}")

    def _build_tables(self):
        super()._build_tables()
        self._dct = dct_matrix(self.n_mfcc, self.n_mels, float(self.lifter))  # (n_mfcc, n_mels)
        self._use_dct = True

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

"""Streaming log-mel / MFCC front end: the same numbers live and offline.

Framing (no centring, no padding: a live stream has no future)::

    frame t covers samples [t * hop_length, t * hop_length + win_length)
    T = 1 + (n_samples - win_length) // hop_length   (0 if n_samples < win_length)

Each frame: optional pre-emphasis (applied to the whole signal, state carried
across pushes), window of ``win_length`` samples, zero-padded at the end to
``n_fft``, real FFT, |X|**power, mel projection, log.  ``MFCC`` adds a
DCT-II (orthonormal) over the log-mel values and optional liftering.

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
import numbers
import threading

import numpy as np
from numba import njit

from streamrnn.errors import AudioError, ConfigError, SnapshotError

log = logging.getLogger(__name__)

SNAPSHOT_VERSION = 1
_LOG_CODES = {None: 0, "ln": 1, "db": 2}
NONFINITE_MODES = ("error", "zero")


# --- kernel -----------------------------------------------------------------------------------

_TILE = 8  # frames per tile: the innermost loops run over 8 frames
_U = np.uint64  # index cast: unsigned indices skip the negative-index wrap-around


@njit(cache=True, error_model="numpy", inline="always")
def _tile_kernel(x, t0, W, hop, src_re, w_re, src_im, w_im, tw_re, tw_im, tw2_re, tw2_im,
                 power, fb, fb_lo, fb_hi, log_mode, log_floor, dct, use_dct, re, im, spec, mel, out):
    """Frames t0 .. t0+W-1 of ``x`` into out[t0:t0+W]; W is a constant at every call site.

    Scratch is laid out (row, frame): re[j*W + t] holds bin j of frame t0+t, and every
    butterfly, split step and mel sum is done for the W frames in its innermost loop,
    so index arithmetic, table loads and loop control are paid once per W frames and
    the W independent chains keep the floating-point units busy.  Each frame goes
    through the operations of a one-frame transform, in the same order: results do
    not depend on W or on a frame's place in its tile.
    Indices are cast to unsigned (_U): they are never negative, and a signed index
    makes Numba emit a negative-index wrap-around select for every access.
    """
    s0 = t0 * hop
    m = src_re.shape[0]  # complex FFT size n_fft/2
    # windowed frame packed as z[j] = x[2j] + i x[2j+1] in bit-reversed order (slot j takes
    # samples src_re[j], src_im[j] times w_re[j], w_im[j]), and in the same pass the first two
    # radix-2 stages on each group of 4 slots: their twiddles are 1 and -i.  Zero-padding slots
    # (past win_length) read sample 0 times a zero weight: +-0, whose sign never reaches the
    # power (a signed zero can only change the sign of another zero, and |X|^2 squares it)
    for a in range(0, m, 4):
        sr0 = src_re[a]
        sr1 = src_re[a + 1]
        sr2 = src_re[a + 2]
        sr3 = src_re[a + 3]
        si0 = src_im[a]
        si1 = src_im[a + 1]
        si2 = src_im[a + 2]
        si3 = src_im[a + 3]
        for t in range(W):
            o = s0 + t * hop
            r0 = x[_U(o + sr0)] * w_re[a]
            r1 = x[_U(o + sr1)] * w_re[a + 1]
            r2 = x[_U(o + sr2)] * w_re[a + 2]
            r3 = x[_U(o + sr3)] * w_re[a + 3]
            q0 = x[_U(o + si0)] * w_im[a]
            q1 = x[_U(o + si1)] * w_im[a + 1]
            q2 = x[_U(o + si2)] * w_im[a + 2]
            q3 = x[_U(o + si3)] * w_im[a + 3]
            tr = r1  # size 2, twiddle 1: (0, 1) and (2, 3)
            ti = q1
            r1 = r0 - tr
            q1 = q0 - ti
            r0 = r0 + tr
            q0 = q0 + ti
            tr = r3
            ti = q3
            r3 = r2 - tr
            q3 = q2 - ti
            r2 = r2 + tr
            q2 = q2 + ti
            tr = r2  # size 4: (0, 2) twiddle 1, (1, 3) twiddle -i
            ti = q2
            re[_U(a * W + 2 * W + t)] = r0 - tr
            im[_U(a * W + 2 * W + t)] = q0 - ti
            re[_U(a * W + t)] = r0 + tr
            im[_U(a * W + t)] = q0 + ti
            tr = q3  # (re + i im) * (-i) = im - i re
            ti = -r3
            re[_U(a * W + 3 * W + t)] = r1 - tr
            im[_U(a * W + 3 * W + t)] = q1 - ti
            re[_U(a * W + W + t)] = r1 + tr
            im[_U(a * W + W + t)] = q1 + ti
    # the other stages, two at a time
    size = 8
    while size <= m:
        half = size // 2
        step = m // size
        if 2 * size <= m:
            # stages `size` and 2 `size` in one pass, as one radix-4 step: each group of 4 values
            # z0..z3 at a, a+half, a+size, a+size+half takes 3 complex products instead of the
            # 4 of two radix-2 stages.  Stage `size` gives b0, b1 = z0 +- w1 z1, b2, b3 = z2 +- w1 z3;
            # stage 2 `size` then multiplies b2 by w2 and b3 by w2 e^{-i pi/2} = -i w2, with
            # w2 b2 = A + B and w2 b3 = A - B for A = w2 z2, B = w1 w2 z3 (w1 w2 = w3, from the table)
            for k in range(half):
                w1r = tw_re[k * step]  # e^{-2 pi i k/size}
                w1i = tw_im[k * step]
                w2r = tw_re[k * step // 2]  # e^{-2 pi i k/(2 size)}
                w2i = tw_im[k * step // 2]
                w3r = tw_re[3 * k * step // 2]  # w1 w2 = e^{-2 pi i 3k/(2 size)}
                w3i = tw_im[3 * k * step // 2]
                for a in range(k, m, 2 * size):
                    for t in range(W):
                        i0 = _U(a * W + t)
                        i1 = _U((a + half) * W + t)
                        i2 = _U((a + size) * W + t)
                        i3 = _U((a + size + half) * W + t)
                        r0 = re[i0]
                        q0 = im[i0]
                        r1 = re[i1]
                        q1 = im[i1]
                        r2 = re[i2]
                        q2 = im[i2]
                        r3 = re[i3]
                        q3 = im[i3]
                        cr = r1 * w1r - q1 * w1i  # w1 z1
                        ci = r1 * w1i + q1 * w1r
                        ar = r2 * w2r - q2 * w2i  # A = w2 z2
                        ai = r2 * w2i + q2 * w2r
                        br = r3 * w3r - q3 * w3i  # B = w3 z3
                        bi = r3 * w3i + q3 * w3r
                        b0r = r0 + cr
                        b0i = q0 + ci
                        b1r = r0 - cr
                        b1i = q0 - ci
                        sr = ar + br  # w2 b2
                        si = ai + bi
                        dr = ar - br  # w2 b3
                        di = ai - bi
                        re[i0] = b0r + sr
                        im[i0] = b0i + si
                        re[i2] = b0r - sr
                        im[i2] = b0i - si
                        re[i1] = b1r + di  # b1 - i (w2 b3)
                        im[i1] = b1i - dr
                        re[i3] = b1r - di  # b1 + i (w2 b3)
                        im[i3] = b1i + dr
            size *= 4
        else:  # the last stage when their number is odd
            for k in range(half):
                wr = tw_re[k * step]
                wi = tw_im[k * step]
                for a in range(k, m, size):
                    for t in range(W):
                        ia = _U(a * W + t)
                        ib = _U((a + half) * W + t)
                        tr = re[ib] * wr - im[ib] * wi
                        ti = re[ib] * wi + im[ib] * wr
                        re[ib] = re[ia] - tr
                        im[ib] = im[ia] - ti
                        re[ia] += tr
                        im[ia] += ti
            size *= 2
    # split Z into the spectra of the even and odd samples: X_k = E_k + e^{-2 pi i k/n} O_k
    # (Z_m = Z_0), fused with the power |X_k|^2.  Bins k and m - k share one product:
    # E_{m-k} = conj E_k, O_{m-k} = conj O_k and e^{-2 pi i (m-k)/n} = -conj e^{-2 pi i k/n}, so
    # X_{m-k} = conj(E_k - e^{-2 pi i k/n} O_k) (bin m when k = 0: E_0 - O_0).  E and O are
    # kept doubled (2 E_k = Z_k + conj Z_{m-k}) and the power scaled by 1/4: exact factors of 2
    mh = m // 2
    for k in range(mh + 1):
        k2 = m - k if k > 0 else 0
        wr = tw2_re[k]
        wi = tw2_im[k]
        for t in range(W):
            ar = re[_U(k * W + t)]
            ai = im[_U(k * W + t)]
            br = re[_U(k2 * W + t)]
            bi = -im[_U(k2 * W + t)]  # conj(Z[m - k])
            er = ar + br  # 2 E_k
            ei = ai + bi
            o_r = ai - bi  # 2 O_k = (Z_k - conj Z_{m-k}) / i
            o_i = br - ar
            pr = o_r * wr - o_i * wi  # 2 e^{-2 pi i k/n} O_k
            pi = o_r * wi + o_i * wr
            xr = er + pr
            xi = ei + pi
            spec[_U(k * W + t)] = 0.25 * (xr * xr + xi * xi)  # |X_k|^2
            if k < mh:  # bin m - k (bin m when k = 0)
                xr = er - pr
                xi = ei - pi
                spec[_U((m - k) * W + t)] = 0.25 * (xr * xr + xi * xi)
    _mel_tile(t0, W, power, fb, fb_lo, fb_hi, log_mode, log_floor, dct, use_dct, spec, mel, out)


@njit(cache=True, error_model="numpy", inline="always")
def _mel_tile(t0, W, power, fb, fb_lo, fb_hi, log_mode, log_floor, dct, use_dct, spec, mel, out):
    """|X|^2 of W frames in spec (n_bins*W,) -> |X|^power, mel, log, [DCT] -> out[t0:t0+W]."""
    n_mels = fb.shape[0]
    n_bins = fb.shape[1]
    if power == 1.0:
        for k in range(n_bins * W):
            spec[k] = math.sqrt(spec[k])
    elif power != 2.0:
        for k in range(n_bins * W):
            spec[k] = spec[k] ** (0.5 * power)
    # mel projection over each filter's nonzero bins, then the log
    for mm in range(n_mels):
        for t in range(W):
            mel[_U(mm * W + t)] = 0.0
        for k in range(fb_lo[mm], fb_hi[mm]):
            f = fb[mm, k]
            for t in range(W):
                mel[_U(mm * W + t)] += f * spec[_U(k * W + t)]
    if log_mode == 1:
        for i in range(n_mels * W):
            mel[i] = math.log(mel[i] + log_floor)
    elif log_mode == 2:
        for i in range(n_mels * W):
            mel[i] = 10.0 * math.log10(max(mel[i], log_floor))
    if use_dct:
        for t in range(W):
            for j in range(dct.shape[0]):
                acc = 0.0
                for mm in range(n_mels):
                    acc += dct[j, mm] * mel[_U(mm * W + t)]
                out[t0 + t, j] = acc
    else:
        for t in range(W):
            for mm in range(n_mels):
                out[t0 + t, mm] = mel[_U(mm * W + t)]


# int table itab: 8 settings, then the start offsets of its 4 parts (+ end) and of ftab's 11 parts (+ end)
_NI, _NF = 4, 11
_HEAD = 8 + (_NI + 1) + (_NF + 1)


@njit(cache=True, error_model="numpy", inline="always")
def _mel_tables(itab, ftab):
    """The settings and tables both frame kernels read from the packed itab/ftab (see
    ``_frames_kernel``): hop, log_mode, use_dct, n_bins, n_mels, the offset tables oi and of,
    fb_lo, fb_hi, power, log_floor, the filterbank fb (n_mels, n_bins) and dct (F, n_mels)."""
    n_bins = itab[4]
    n_mels = itab[5]
    oi = itab[8:8 + _NI + 1]
    of = itab[8 + _NI + 1:_HEAD]
    fb = ftab[of[9]:of[10]].reshape((n_mels, n_bins))
    dct = ftab[of[10]:of[11]].reshape((itab[7], (of[11] - of[10]) // itab[7]))  # (1, 1) if unused
    return (itab[0], itab[2], itab[3] != 0, n_bins, n_mels, oi, of, itab[oi[2]:oi[3]], itab[oi[3]:oi[4]],
            ftab[0], ftab[1], fb, dct)


@njit(cache=True, error_model="numpy")
def _frames_kernel(x, n_frames, itab, ftab, scratch, out):
    """Features of ``n_frames`` frames of ``x`` (float64) into ``out`` (n_frames, F) float32.

    x (N,) with N >= (n_frames - 1) * hop + win.  Settings and tables come packed in
    two flat arrays (``LogMel._pack_tables``; few arguments keep the call cheap):
    itab (int64) = [hop, use_fft, log_mode, use_dct, n_bins, n_mels, dft_cols, dct_rows,
    offsets..., src_re, src_im, fb_lo, fb_hi]; ftab (float64) = [power, log_floor,
    window, w_re, w_im, tw_re, tw_im, tw2_re, tw2_im, dft_cos, dft_sin, fb, dct].

    Only for ``use_fft`` (n_fft a power of two >= 8; ``_dft_frames_kernel`` takes the
    others, with window (win,) and tables dft_cos/dft_sin (n_bins, win)): real FFT of size n_fft as one complex
    FFT of size m = n_fft/2 on z[j] = x[2j] + i x[2j+1]: slot j of the bit-reversed
    input takes sample src_re[j] (real part) and src_im[j] (imaginary part) times
    the window values w_re[j], w_im[j] (zero for the padding); twiddles
    tw_re/tw_im (3m/4,) = e^{-2 pi i k/m}, tw2_re/tw2_im (m+1,) = e^{-2 pi i k/n_fft}.
    fb (n_mels, n_bins), nonzero on [fb_lo[m], fb_hi[m]); dct (F, n_mels) when ``use_dct``.
    scratch: room for _TILE frames of re, im (m,), spec (n_bins,), mel (n_mels,).
    Frames go in tiles of W = 8, the rest (and a live push of 1 or 2 frames) one at a time,
    W = 1; W is a constant in each inlined copy.  (More tile widths, e.g. 4 and 2, measured
    no faster on 10-frame blocks and more than double the first compile.)
    """
    hop, log_mode, use_dct, n_bins, n_mels, oi, of, fb_lo, fb_hi, power, log_floor, fb, dct = _mel_tables(itab, ftab)
    src_re = itab[oi[0]:oi[1]]
    src_im = itab[oi[1]:oi[2]]
    w_re = ftab[of[1]:of[2]]
    w_im = ftab[of[2]:of[3]]
    tw_re = ftab[of[3]:of[4]]
    tw_im = ftab[of[4]:of[5]]
    tw2_re = ftab[of[5]:of[6]]
    tw2_im = ftab[of[6]:of[7]]
    mt = (n_bins - 1) * _TILE
    re = scratch[:mt]
    im = scratch[mt:2 * mt]
    spec = scratch[2 * mt:2 * mt + n_bins * _TILE]
    mel = scratch[2 * mt + n_bins * _TILE:2 * mt + (n_bins + n_mels) * _TILE]
    t0 = 0
    while n_frames - t0 >= _TILE:
        _tile_kernel(x, t0, _TILE, hop, src_re, w_re, src_im, w_im, tw_re, tw_im, tw2_re, tw2_im,
                     power, fb, fb_lo, fb_hi, log_mode, log_floor, dct, use_dct, re, im, spec, mel, out)
        t0 += _TILE
    while n_frames - t0 >= 1:
        _tile_kernel(x, t0, 1, hop, src_re, w_re, src_im, w_im, tw_re, tw_im, tw2_re, tw2_im,
                     power, fb, fb_lo, fb_hi, log_mode, log_floor, dct, use_dct, re, im, spec, mel, out)
        t0 += 1


@njit(cache=True, error_model="numpy")
def _dft_frames_kernel(x, n_frames, itab, ftab, scratch, out):
    """``_frames_kernel`` for an n_fft that is not a power of two (>= 8): a direct DFT, one frame
    at a time.  A kernel of its own so that the FFT kernel's first compile does not pay for it."""
    hop, log_mode, use_dct, n_bins, n_mels, oi, of, fb_lo, fb_hi, power, log_floor, fb, dct = _mel_tables(itab, ftab)
    window = ftab[of[0]:of[1]]
    win = window.shape[0]
    dft_cos = ftab[of[7]:of[8]].reshape((n_bins, win))
    dft_sin = ftab[of[8]:of[9]].reshape((n_bins, win))
    spec = scratch[:n_bins]
    mel = scratch[n_bins:n_bins + n_mels]
    for t0 in range(n_frames):
        s = t0 * hop
        for k in range(n_bins):
            acc_r = 0.0
            acc_i = 0.0
            for i in range(win):
                v = x[s + i] * window[i]
                acc_r += v * dft_cos[k, i]
                acc_i += v * dft_sin[k, i]
            spec[k] = acc_r * acc_r + acc_i * acc_i  # |X_k|^2
        _mel_tile(t0, 1, power, fb, fb_lo, fb_hi, log_mode, log_floor, dct, use_dct, spec, mel, out)


@njit(cache=True)
def _all_finite(x):
    """True if no sample of x (n,) is NaN or Inf."""
    for v in x:
        if not math.isfinite(v):
            return False
    return True


@njit(cache=True, error_model="numpy")
def _push_kernel(block, zero_bad, state, n_left, skip, t, hop, a, data):
    """A ``LogMel.push`` up to the frames: check, convert, pre-emphasise; returns the NaN/Inf count.

    block (n,) float32/float64, C-contiguous.  state (1 + win,) float64 = [prev, the n_left
    leftover samples (already pre-emphasised)...]; n_left, skip as in ``LogMel``; t the
    frames that n_left + n - min(skip, n) samples give; hop; a the pre-emphasis.
    Writes the frame data (leftover, then the new samples; float64) into data[:total]
    and the new leftover (data[t*hop:total]) and last raw sample into state.
    NaN/Inf: with zero_bad false the count is returned before anything is written (the
    caller raises); with zero_bad true they become 0 (and the count is returned).
    The samples go through the operations of ``compute`` (float64, then x[i] - a x[i-1]):
    frames are bit-identical to it.  (The frames themselves are a second call: a Numba
    function that calls ``_frames_kernel`` re-optimises its whole body, 1.7 s of first
    compile per block dtype, to save one 0.7 us dispatch.)
    """
    n = block.shape[0]
    if n == 0:
        return 0
    k = min(skip, n)  # samples no frame uses (hop > win)
    m = n - k  # new samples that go into the frame data
    total = n_left + m
    prev = state[0]  # the raw sample before src[0]
    if k > 0:
        prev = np.float64(block[k - 1])
    src = block[k:]  # (m,)
    d = data[n_left:total]  # (m,)
    # the new samples into the frame data (data is scratch: the state is written only once the
    # block is known to be clean, or zeroed).  Loops over slices from 0 (indices provably >= 0)
    # with no carried value: LLVM vectorises them
    n_bad = 0
    if a == 0.0:
        for i in range(m):
            v = np.float64(src[i])
            d[i] = v
            n_bad += not math.isfinite(v)
    elif m > 0:
        d[0] = np.float64(src[0]) - a * prev
        s0 = src[:m - 1]
        s1 = src[1:]
        d1 = d[1:]
        for i in range(m - 1):
            v = np.float64(s1[i])
            d1[i] = v - a * np.float64(s0[i])
            n_bad += not math.isfinite(v)
        n_bad += not math.isfinite(src[0])
    for i in range(k):  # skipped samples are checked too (and count), as in compute
        n_bad += not math.isfinite(block[i])
    if n_bad and not zero_bad:
        return n_bad
    if n_bad:  # NaN/Inf to zero (rare): again, one sample at a time
        if not math.isfinite(prev):
            prev = 0.0
        for i in range(m):
            v = np.float64(src[i])
            if not math.isfinite(v):
                v = 0.0
            d[i] = v - a * prev if a != 0.0 else v
            prev = v
    elif m > 0:
        prev = np.float64(src[m - 1])
    kept = state[1:1 + n_left]  # the leftover samples go before the new ones
    head = data[:n_left]
    for i in range(n_left):
        head[i] = kept[i]
    state[0] = prev  # the last raw sample (after zeroing)
    used = t * hop
    if used < total:
        rest = data[used:total]
        kept = state[1:1 + total - used]
        for i in range(total - used):
            kept[i] = rest[i]
    return n_bad


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
    if _all_finite(x.reshape(-1)):  # the common case, without np.isfinite's temporary array
        return x, 0
    ok = np.isfinite(x)
    n_bad = int(ok.size - np.count_nonzero(ok))
    if nonfinite == "error":
        raise _nonfinite_error(x, what)
    x = np.where(ok, x, 0.0)
    return x, n_bad


def _nonfinite_error(x: np.ndarray, what: str) -> AudioError:
    """The AudioError for NaN/Inf in ``x`` (n,) or (n, channels): how many, and the first sample."""
    ok = np.isfinite(x)
    n_bad = int(ok.size - np.count_nonzero(ok))
    first = int(np.argmin(ok.reshape(len(x), -1).all(axis=1)))
    return AudioError(f"{what} contains {n_bad} NaN/Inf samples (first at sample {first}); "
                      "pass nonfinite='zero' to replace them with zeros")


def _zero_nonfinite(nonfinite: str) -> bool:
    """The ``nonfinite`` mode as the kernels' flag: True for "zero", False for "error"."""
    if nonfinite == "error":
        return False
    if nonfinite == "zero":
        return True
    raise ConfigError(f"nonfinite must be one of {NONFINITE_MODES}, got {nonfinite!r}")


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
        self.n_fft = _int("n_fft", n_fft, 2, 1 << 16)
        self.win_length = _int("win_length", win_length, 1)
        if self.win_length > self.n_fft:
            raise ConfigError(f"win_length={self.win_length} must be <= n_fft={self.n_fft} "
                              "(a frame is one window zero-padded to n_fft)")
        self.hop_length = _int("hop_length", hop_length, 1, 1 << 20)  # up to ~1 min at 16 kHz
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
            before = set(vars(self))
            self._build_tables()
            self._pack_tables()
            tabs = {k: v for k, v in vars(self).items() if k not in before}
            with _TABLES_LOCK:
                if len(_TABLES) >= _TABLES_MAX:
                    del _TABLES[next(iter(_TABLES))]  # the oldest settings
                _TABLES[key] = tabs
        else:
            vars(self).update(tabs)

    def _build_tables(self):
        w = periodic_window(self.window, self.win_length)
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
            # slot j of the bit-reversed packed input z holds samples 2 rev[j] (real) and 2 rev[j] + 1
            # (imaginary) of the frame times the window; past win_length, zero padding: sample 0 times 0
            for part, src in (("re", 2 * rev), ("im", 2 * rev + 1)):
                inside = src < self.win_length
                setattr(self, f"_src_{part}", np.where(inside, src, 0))  # (m,)
                setattr(self, f"_w_{part}", np.where(inside, self._window[np.where(inside, src, 0)], 0.0))
            k = np.arange(3 * m // 4)  # radix-4 steps read up to e^{-2 pi i (3m/4 - 1)/m}
            self._tw_re = np.cos(2 * np.pi * k / m)  # e^{-2 pi i k / m}, (3m/4,)
            self._tw_im = -np.sin(2 * np.pi * k / m)
            k = np.arange(m + 1)
            self._tw2_re = np.cos(2 * np.pi * k / n)  # e^{-2 pi i k / n}, (m+1,)
            self._tw2_im = -np.sin(2 * np.pi * k / n)
            self._dft_cos = self._dft_sin = np.zeros((1, 1))
        else:  # any other n_fft: direct DFT over the win_length nonzero samples
            self._src_re = self._src_im = np.zeros(1, dtype=np.int64)
            self._w_re = self._w_im = np.zeros(1)
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

    def _pack_tables(self):
        """Settings and tables as the kernel's two flat arrays (see ``_frames_kernel``)."""
        ints = [self._src_re, self._src_im, self._fb_lo, self._fb_hi]
        floats = [self._window, self._w_re, self._w_im, self._tw_re, self._tw_im, self._tw2_re,
                  self._tw2_im, self._dft_cos.ravel(), self._dft_sin.ravel(), self._fb.ravel(), self._dct.ravel()]
        assert len(ints) == _NI and len(floats) == _NF
        oi = _HEAD + np.cumsum([0] + [len(a) for a in ints])
        of = 2 + np.cumsum([0] + [len(a) for a in floats])
        head = [self.hop_length, int(self._use_fft), _LOG_CODES[self.log], int(self._use_dct),
                self.n_fft // 2 + 1, self.n_mels, self._dft_cos.shape[1], self._dct.shape[0]]
        self._itab = np.concatenate([head, oi, of] + ints).astype(np.int64)
        self._ftab = np.concatenate([[self.power, self.log_floor]] + floats).astype(np.float64)
        self._kernel = _frames_kernel if self._use_fft else _dft_frames_kernel
        self._n_out = self.n_features  # (a property: read once here, not on every push)
        m = self.n_fft // 2
        self._n_scratch = (2 * m + m + 1 + self.n_mels) * _TILE  # re, im (m,), spec (m+1,), mel per frame

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
            self._kernel(x, n_frames, self._itab, self._ftab, _scratch(self._n_scratch), out)
        return out

    def compute(self, signal, nonfinite: str = "error") -> np.ndarray:
        """Offline features of a whole mono signal (n,) -> (T, n_features) float32.

        Independent of (and not touching) the streaming state.  float32/float64
        samples are used as they are; int16 is scaled by 1/32768.  An empty signal
        raises AudioError; a signal shorter than ``win_length`` gives (0, F).
        """
        zero = _zero_nonfinite(nonfinite)
        x = signal
        if not (type(x) is np.ndarray and x.ndim == 1 and x.dtype.char in "fd" and x.flags.c_contiguous):
            x = np.ascontiguousarray(as_signal(x))
        if len(x) == 0:
            raise AudioError("signal is empty (0 samples); need at least win_length="
                             f"{self.win_length} samples for one frame")
        t = self.n_frames_for(len(x))
        data = np.empty(len(x))  # float64 samples after the NaN/Inf check and pre-emphasis
        state = np.zeros(1 + self.win_length)  # a fresh stream's state
        bad = _push_kernel(x, zero, state, 0, 0, t, self.hop_length, self.preemphasis, data)
        if bad and not zero:
            raise _nonfinite_error(x, "signal")
        return self._run(data, t)

    def push(self, block, nonfinite: str = "error") -> np.ndarray:
        """Stream: add mono samples (n,), get the (t, n_features) frames they complete.

        The leftover samples and the pre-emphasis state carry over to the next
        push; any chunking gives the frames of ``compute`` on the concatenation.
        NaN/Inf raise AudioError, or with ``nonfinite="zero"`` become 0 and are
        counted in ``n_nonfinite``.
        """
        out, bad = self._push(block, nonfinite, "block")
        self.n_nonfinite += bad
        return out

    def _push(self, block, nonfinite: str, what: str):
        """``push`` without touching ``n_nonfinite``: returns (frames, NaN/Inf samples replaced).

        Two kernel calls do the work (``_push_kernel``: check, convert, pre-emphasise,
        keep the tail; then the frames kernel): the per-push Python work is a few checks
        and the output allocation (the many-streams server pays it on every 100 ms
        message of every stream).
        """
        zero = nonfinite == "zero"
        if not zero and nonfinite != "error":
            _zero_nonfinite(nonfinite)  # raises ConfigError
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
        bad = _push_kernel(block, zero, self._state, n_left, self._skip, t, self.hop_length, self.preemphasis, data)
        if bad and not zero:  # the kernel changed nothing
            raise _nonfinite_error(block, what)
        out = np.empty((t, self._n_out), dtype=np.float32)
        if t:
            self._kernel(data, t, self._itab, self._ftab, _scratch(self._n_scratch), out)
        used = t * self.hop_length
        if used > total:
            self._skip = used - total
            self._n_left = 0
        else:
            self._skip -= k
            self._n_left = total - used
        self.n_frames += t
        return out, bad

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
        return {"version": SNAPSHOT_VERSION, "kind": "frontend", "settings": self.to_dict(),
                "buffer": self._state[1:1 + self._n_left].copy(), "prev": float(self._state[0]),
                "skip": self._skip, "n_frames": self.n_frames, "n_nonfinite": self.n_nonfinite}

    def restore(self, snap: dict) -> None:
        """Put back a snapshot taken from a front end with identical settings."""
        guarded_restore(self._restore, snap, "front-end")

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
        prev, skip, n_frames, n_nonfinite = (float(snap["prev"]), int(snap["skip"]), int(snap["n_frames"]),
                                             int(snap["n_nonfinite"]))
        state = np.zeros(1 + self.win_length)
        state[0] = prev
        state[1:1 + len(buf)] = buf
        # assigned only once every value has been read
        self._state, self._n_left, self._skip = state, len(buf), skip
        self.n_frames, self.n_nonfinite = n_frames, n_nonfinite


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
        self.n_mfcc = _int("n_mfcc", n_mfcc, 1, 4096)  # <= n_mels (checked once n_mels is)
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

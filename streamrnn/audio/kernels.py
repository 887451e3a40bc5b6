"""The front end's Numba kernels: framing, windowed FFT, mel, log and DCT of a block of frames,
and the push kernel (NaN/Inf check, conversion, pre-emphasis, leftover samples).

Kernel plus wrapper: these compute on plain arrays and write into outputs they are given; the
``LogMel``/``MFCC`` classes (``streamrnn.audio.frontend``) validate, build the tables and allocate.
See the module docstring of ``streamrnn.audio.frontend`` for what the numbers are.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from streamrnn.compiling import announce_compiles

announce_compiles()  # the first compile of a kernel says so on stderr (cold cache)

# --- frame kernels -----------------------------------------------------------------------------------

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
    Frames go in tiles of W = 8, the rest one at a time, W = 1; W is a constant in each inlined
    copy.  (More tile widths, e.g. 4 and 2, measured no faster on 10-frame blocks and more than
    double the first compile.)  Fewer than 8 frames (a live push of 1 or 2 frames) go to
    ``_frames1_kernel``, the W = 1 copy alone: a live source never compiles the tiled one.
    """
    (hop, log_mode, use_dct, n_bins, n_mels, fb_lo, fb_hi, power, log_floor, fb, dct, src_re, w_re, src_im, w_im,
     tw_re, tw_im, tw2_re, tw2_im, re, im, spec, mel) = _fft_parts(itab, ftab, scratch)
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
def _frames1_kernel(x, n_frames, itab, ftab, scratch, out):
    """``_frames_kernel`` one frame at a time (W = 1) only: for pushes of fewer than 8 frames, a
    third of the tiled kernel's first compile (docs/bench.md, "Start-up")."""
    (hop, log_mode, use_dct, n_bins, n_mels, fb_lo, fb_hi, power, log_floor, fb, dct, src_re, w_re, src_im, w_im,
     tw_re, tw_im, tw2_re, tw2_im, re, im, spec, mel) = _fft_parts(itab, ftab, scratch)
    for t0 in range(n_frames):
        _tile_kernel(x, t0, 1, hop, src_re, w_re, src_im, w_im, tw_re, tw_im, tw2_re, tw2_im,
                     power, fb, fb_lo, fb_hi, log_mode, log_floor, dct, use_dct, re, im, spec, mel, out)


@njit(cache=True, error_model="numpy", inline="always")
def _fft_parts(itab, ftab, scratch):
    """``_mel_tables`` plus the FFT tables and the scratch regions of ``_frames_kernel``."""
    hop, log_mode, use_dct, n_bins, n_mels, oi, of, fb_lo, fb_hi, power, log_floor, fb, dct = _mel_tables(itab, ftab)
    mt = (n_bins - 1) * _TILE
    spec0 = 2 * mt + n_bins * _TILE
    return (hop, log_mode, use_dct, n_bins, n_mels, fb_lo, fb_hi, power, log_floor, fb, dct,
            itab[oi[0]:oi[1]], ftab[of[1]:of[2]], itab[oi[1]:oi[2]], ftab[of[2]:of[3]],  # src_re, w_re, src_im, w_im
            ftab[of[3]:of[4]], ftab[of[4]:of[5]], ftab[of[5]:of[6]], ftab[of[6]:of[7]],  # tw_re, tw_im, tw2_re, tw2_im
            scratch[:mt], scratch[mt:2 * mt], scratch[2 * mt:spec0], scratch[spec0:spec0 + n_mels * _TILE])


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
def all_finite(x):
    """True if no sample of x (n,) is NaN or Inf."""
    for v in x:
        if not math.isfinite(v):
            return False
    return True


@njit(cache=True, error_model="numpy")
def _push_kernel(block, zero_bad, state, n_left, skip, t, hop, a, data):
    """A ``LogMel.push`` up to the frames: check, convert, pre-emphasise; returns (the NaN/Inf
    count, the block's peak |sample| over its finite samples, 0.0 when empty).

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
    peak = 0.0  # what FeatureStream's float-range check needs, here instead of two NumPy passes
    for i in range(n):
        v = abs(np.float64(block[i]))
        if v > peak:
            peak = v
    if n == 0:
        return 0, peak
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
        return n_bad, peak
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
    return n_bad, peak


@njit(cache=True, error_model="numpy")
def _push_many_kernel(x, offs, slots, states, n_left, skip, t, fo, hop, a, use_fft, itab, ftab, data, scratch,
                      out, bad, peak):
    """Many streams' ``LogMel.push`` in one call: the front ends of a bank (``FeatureBank``).

    x (N,) float32/float64: the n streams' new samples one after the other, stream i owning
    x[offs[i]:offs[i+1]]; slots (n,) their rows of the per-stream state: states (capacity, 1 + win)
    float64 (``LogMel``'s ``_state``), n_left and skip (capacity,) int64, all updated in place.
    t (n,) the frames each stream's samples complete (``FeatureBank`` computes them: the same
    arithmetic as ``LogMel._push``); stream i's frames go to out[fo[i]:fo[i+1]] (fo (n+1,)).
    data: room for the largest n_left + new samples (float64); scratch: the frames kernel's.
    bad (n,) gets each stream's NaN/Inf count (such a stream is left untouched, its rows
    unwritten), peak (n,) each block's peak |sample|.  Each stream goes through exactly the
    operations of its own ``LogMel.push``: its frames are bit-identical.
    """
    for i in range(slots.shape[0]):
        r = slots[i]
        block = x[offs[i]:offs[i + 1]]
        nl = n_left[r]
        k = min(skip[r], block.shape[0])
        total = nl + block.shape[0] - k
        nb, pk = _push_kernel(block, False, states[r], nl, skip[r], t[i], hop, a, data)
        bad[i], peak[i] = nb, pk
        if nb:
            continue
        ti = t[i]
        if ti:
            o = out[fo[i]:fo[i + 1]]
            if use_fft:
                _frames_kernel(data, ti, itab, ftab, scratch, o)
            else:
                _dft_frames_kernel(data, ti, itab, ftab, scratch, o)
        used = ti * hop
        if used > total:
            skip[r] = used - total
            n_left[r] = 0
        else:
            skip[r] -= k
            n_left[r] = total - used


@njit(cache=True, error_model="numpy")
def _frame_counts_kernel(offs, slots, n_left, skip, n_frames, win, hop, t, fo):
    """The frames each of a ``FeatureBank`` call's n streams completes (``LogMel._push``'s
    arithmetic: total = n_left + len - min(skip, len); 1 + (total - win) // hop if total >= win):
    t[:n], their offsets fo[:n + 1] (fo[0] = 0), n_frames[slots] += t.  Returns (all frames, the
    largest total, the largest t): what ``_push_many_kernel``'s caller sizes its buffers with.
    offs (n + 1,) the streams' sample offsets, slots (n,) their rows."""
    n = slots.shape[0]
    fo[0] = 0
    need = 0
    tmax = 0
    for i in range(n):
        r = slots[i]
        m = offs[i + 1] - offs[i]
        total = n_left[r] + m - min(skip[r], m)
        ti = 1 + (total - win) // hop if total >= win else 0
        t[i] = ti
        fo[i + 1] = fo[i] + ti
        n_frames[r] += ti
        if total > need:
            need = total
        if ti > tmax:
            tmax = ti
    return fo[n], need, tmax

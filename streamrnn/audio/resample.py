"""Streaming resampler on python-soxr (``soxr.ResampleStream``), with downmix and snapshots.

* Multi-channel input (n, channels) is downmixed to mono by the mean of the
  channels *before* resampling; the output is always mono float32.
* Equal rates: identity pass-through (no filter, no delay, exact).
* soxr's output is delay-compensated: output sample j is the signal at time
  j / out_rate, so times in seconds (labels) stay aligned.  It holds back
  ``delay()`` output samples until more input arrives; ``flush()`` drains them
  at the end of a signal.
* Snapshots: a soxr object is opaque, so a snapshot keeps the last
  ``history_seconds`` (default 1 s) of input or a little more, starting at a
  sample index that is a multiple of ``align``: the rate ratio's period
  P = in_rate / gcd(in_rate, out_rate) and soxr's block period (``block_period``:
  its DFT stages process fixed blocks counted from the stream's start, e.g. 830
  input samples for 8 -> 16 kHz, 4404 for 48 -> 16 kHz).  ``restore`` feeds that
  history to a fresh soxr stream and discards the outputs that were already
  emitted.  soxr's output is the same bits whatever the chunking of its input,
  and a stream started at a multiple of ``align`` computes, after its filter's
  warm-up (under 2000 outputs), exactly the bits of one running since sample 0:
  so the restored stream continues bit for bit, with the same outputs from the
  same pushes (``tests/test_audio_bank.py`` checks every common rate).  The
  block period must fit in the history with 0.25 s to spare: at 8, 12, 24, 32,
  48 and 96 kHz it does (0.05-0.22 s); the 44.1 kHz family's is about 5 s, so
  at 11.025, 22.05 and 44.1 kHz exact restores need ``history_seconds`` >= 5.3
  (about 1 MB per stream at 44.1 kHz); with the default 1 s their restored
  stream continues within soxr's float32 tolerance (~1e-6) and may emit a
  frame's outputs a push earlier or later.  A stream younger than its history
  is replayed from its start (always exact).

>>> import numpy as np
>>> r = Resampler(48000, 16000)
>>> y = np.concatenate([r.push(np.zeros(4800, np.float32)), r.flush()])
>>> len(y)
1600
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np

from streamrnn.audio.checks import as_signal, check_rate, guarded_restore
from streamrnn.audio.kernels import all_finite
from streamrnn.errors import AudioError, ConfigError, SnapshotError
from streamrnn.snapshot import SNAPSHOT_VERSION, check_snapshot

QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")
_MAX_PERIOD = 1 << 20  # ratio periods longer than this (input samples) cannot be snapshotted


def downmix(x: np.ndarray) -> np.ndarray:
    """(n,) -> as is; (n, channels) -> mean over channels (n,).

    Summed channel by channel: several times faster than ``x.mean(axis=1)`` on the
    short blocks of a live stream, and the same values for fewer than 8 channels.
    """
    if x.ndim == 1:
        return x
    y = x[:, 0].copy()
    for c in range(1, x.shape[1]):
        y += x[:, c]
    if x.shape[1] > 1:
        y /= x.shape[1]
    return y


@functools.lru_cache(maxsize=64)
def filter_lookahead(in_rate, out_rate, quality="HQ") -> float:
    """How far (in input samples) past time j/out_rate output sample j still depends on input.

    Measured once per (rates, quality) from soxr's impulse response: coefficients
    below 1e-6 of the peak (soxr's own float32 noise floor) count as zero.
    """
    if in_rate == out_rate:
        return 0.0
    import soxr

    n = int(max(in_rate, out_rate))  # 1 s of zeros around the impulse
    i0 = n // 2
    imp = np.zeros(n, dtype=np.float64)
    imp[i0] = 1.0
    r = soxr.resample(imp, in_rate, out_rate, quality)
    nz = np.flatnonzero(np.abs(r) > 1e-6 * np.abs(r).max())
    j_lo = int(nz[0])  # the first output that sees the impulse at input i0
    return max(0.0, i0 - j_lo * in_rate / out_rate)


# soxr's block periods (input samples) of common rate pairs at "HQ", found by block_period's search
# with soxr 0.3-0.5; each is confirmed by one check before use (tests/test_resample.py re-derives them).
_KNOWN_PERIODS = {(8000, 16000): 830, (11025, 16000): 361620, (12000, 16000): 2490, (22050, 16000): 109368,
                  (24000, 16000): 2202, (32000, 16000): 1660, (44100, 16000): 218736, (48000, 16000): 4404,
                  (96000, 16000): 20928, (16000, 8000): 1660, (16000, 22050): 13120, (16000, 44100): 6560,
                  (16000, 48000): 1468}
_WARM, _WINDOW = 4096, 256  # outputs: longer than soxr's warm-up (measured <= 1663); outputs compared
_MAX_CHECKS = 20000  # restart points tried by block_period's search (~1 s at most)


def _starts_aligned(rs, x, full, s: int, p: int, p_out: int, win_in: int) -> bool:
    """Whether a fresh soxr stream (``rs``, cleared) fed x[s:] computes, past its warm-up, exactly the
    outputs ``full`` of one fed x from sample 0."""
    rs.clear()
    part = rs.resample_chunk(x[s:s + win_in])
    k0 = s // p * p_out
    return np.array_equal(part[_WARM:_WARM + _WINDOW], full[k0 + _WARM:k0 + _WARM + _WINDOW])


@functools.lru_cache(maxsize=64)
def block_period(in_rate, out_rate, quality="HQ") -> int | None:
    """Input samples (a multiple of the ratio's period) after which soxr's block processing repeats:
    a stream restarted at a multiple of it computes the same bits as one never restarted (after a
    warm-up).  None if there is none up to ``_MAX_PERIOD``.  Known pairs cost one check (~2 ms);
    others a search (0.05-0.7 s, once per process and rate pair).
    """
    import soxr

    ratio = Fraction(in_rate) / Fraction(out_rate)
    p, p_out = ratio.numerator, ratio.denominator
    win_in = int((_WARM + _WINDOW + 2048) * ratio) + 64  # + 2048 outputs soxr may hold back
    new = functools.partial(soxr.ResampleStream, in_rate, out_rate, 1, dtype="float32", quality=quality)
    known = _KNOWN_PERIODS.get((in_rate, out_rate)) if quality == "HQ" else None
    rng = np.random.default_rng(0)
    if known and known % p == 0:
        x = rng.standard_normal(known + win_in).astype(np.float32)
        if _starts_aligned(new(), x, new().resample_chunk(x), known, p, p_out, win_in):
            return known
    limit = min(_MAX_PERIOD, _MAX_CHECKS * p)
    x = rng.standard_normal(limit + win_in).astype(np.float32)
    full, rs = new().resample_chunk(x), new()
    for s in range(p, limit + 1, p):
        if _starts_aligned(rs, x, full, s, p, p_out, win_in):
            return s
    return None


class Resampler:
    """Streaming resampler: ``push(block)`` -> mono float32 samples at ``out_rate``.

    ``channels`` is the channel count of the pushed blocks ((n,) or (n, channels));
    they are averaged to mono first.  ``quality`` is soxr's ("QQ", "LQ", "MQ",
    "HQ", "VHQ").  ``history_seconds`` bounds what a snapshot keeps: at most that much input
    (or, where soxr's block period does not fit in it, at least that much and less than one more
    ratio period; see module doc).  None: what exact restores need (1 s; about 5.3 s at 11.025,
    22.05 and 44.1 kHz).
    """

    def __init__(self, in_rate, out_rate, channels=1, quality="HQ", history_seconds=1.0):
        self.in_rate = check_rate(in_rate, "in_rate")
        self.out_rate = check_rate(out_rate, "out_rate")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise AudioError(f"channels must be an integer >= 1, got {channels!r}")
        self.channels = channels
        if quality not in QUALITIES:
            raise ConfigError(f"quality must be one of {QUALITIES}, got {quality!r}")
        self.quality = quality
        self.identity = self.in_rate == self.out_rate
        ratio = Fraction(self.in_rate) / Fraction(self.out_rate)
        self._period = ratio.numerator  # input samples per phase period (output: ratio.denominator)
        self._period_out = ratio.denominator
        q = None if self.identity else block_period(self.in_rate, self.out_rate, quality)
        lo = int(math.ceil(0.25 * self.in_rate))  # soxr's warm-up and look-ahead, with room to spare
        if history_seconds is None:  # "exact": 1 s, or one block period + 0.25 s where that is longer
            history_seconds = 1.0 if q is None else max(1.0, (math.lcm(self._period, q) + lo) / self.in_rate)
        if not isinstance(history_seconds, (int, float)) or not history_seconds >= 0.25:
            raise ConfigError(f"history_seconds={history_seconds!r} must be >= 0.25 s (longer than soxr's filter)")
        hist_max = int(math.ceil(history_seconds * self.in_rate))
        # History starts at multiples of _align and holds [_hist_len, hist_max) samples.  Exact restores
        # need soxr's block period in _align; it fits when a block is shorter than the history's
        # slack above 0.25 s (true at 8, 12, 24, 32, 48, 96 kHz with the default 1 s; the 44.1 kHz
        # family's period is ~5 s: those need history_seconds >= 5.3, else restores are within 1e-6).
        if q is not None and hist_max - math.lcm(self._period, q) >= lo:
            self._align = math.lcm(self._period, q)
            self._hist_len = hist_max - self._align  # the least kept: the most is then hist_max
        else:
            self._align, self._hist_len = self._period, hist_max
        self._rs = None
        self.reset()

    @property
    def ratio(self) -> float:
        """out_rate / in_rate."""
        return self.out_rate / self.in_rate

    @property
    def lookahead(self) -> float:
        """Input samples past an output sample's time that it depends on (0 for identity)."""
        return filter_lookahead(self.in_rate, self.out_rate, self.quality)

    def _new(self):
        import soxr

        return soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="float32", quality=self.quality)

    def reset(self) -> None:
        """Start a fresh signal: no history, no pending output."""
        if not self.identity:
            if self._rs is None:
                self._rs = self._new()
            else:
                self._rs.clear()
        self.n_in = 0  # input samples consumed since reset
        self.n_out = 0  # output samples emitted since reset
        # input [_hist_start, n_in), for snapshots: _hbuf[_hoff:_hoff + _hn], appended in place
        # (a push copies its own samples, not the whole history; see _remember)
        self._hbuf = np.empty(0, dtype=np.float32)
        self._hoff = self._hn = 0
        self._hist_start = 0
        self._pending = np.empty(0, dtype=np.float32)  # outputs owed after a restore
        self._drop = 0  # outputs to discard after a restore (already emitted before the snapshot)

    @property
    def _hist(self) -> np.ndarray:
        return self._hbuf[self._hoff:self._hoff + self._hn]

    def _mono(self, block) -> np.ndarray:
        if (type(block) is np.ndarray and block.dtype == np.float32 and self.channels == 1
                and (block.ndim == 1 or (block.ndim == 2 and block.shape[1] == 1))):
            # the common case (float32 mono, the wire's (n, 1) layout too): no float64 round trip
            x = np.ascontiguousarray(block.reshape(-1))
            if not all_finite(x):
                raise AudioError("block contains NaN/Inf samples; they would poison the resampler's filter state")
            return x
        x = as_signal(block, "block", allow_2d=True)
        ch = 1 if x.ndim == 1 else x.shape[1]
        if ch != self.channels:
            raise AudioError(f"block has {ch} channel(s) but this resampler was made for {self.channels}")
        if not np.isfinite(x).all():
            raise AudioError("block contains NaN/Inf samples; they would poison the resampler's filter state")
        return np.ascontiguousarray(downmix(x), dtype=np.float32)

    def _remember(self, x: np.ndarray) -> None:
        # keep at least _hist_len input samples, starting at a multiple of _align.
        # x is appended after the kept samples; when the buffer's end is reached they move to
        # its front (or it grows to 4x what is kept): each sample is moved about 1/3 time on
        # average, instead of the whole history being copied on every push.
        if self.identity:
            return
        n = len(x)
        buf, off, hn = self._hbuf, self._hoff, self._hn
        if off + hn + n > len(buf):
            if 2 * (hn + n) > len(buf):
                nb = np.empty(4 * (hn + n), dtype=np.float32)
                nb[:hn] = buf[off:off + hn]
                buf = nb
            else:
                buf[:hn] = buf[off:off + hn].copy()  # overlapping move to the front
            off = 0
        buf[off + hn:off + hn + n] = x
        hn += n
        want = self.n_in - self._hist_len  # self.n_in is the index just past x
        if want > self._hist_start:
            start = (want // self._align) * self._align
            if start > self._hist_start:
                d = start - self._hist_start
                off, hn = off + d, hn - d
                self._hist_start = start
        self._hbuf, self._hoff, self._hn = buf, off, hn

    def _emit(self, y: np.ndarray) -> np.ndarray:
        if self._drop:
            k = min(self._drop, len(y))
            y = y[k:]
            self._drop -= k
        if len(self._pending):
            y = np.concatenate([self._pending, y])
            self._pending = np.empty(0, dtype=np.float32)
        self.n_out += len(y)
        return y

    def push(self, block) -> np.ndarray:
        """Resample a block (n,) or (n, channels) of float32/float64/int16 samples; returns (m,) float32."""
        x = self._mono(block)
        if self.identity:
            self.n_in += len(x)
            self.n_out += len(x)
            return x.copy() if np.may_share_memory(x, block) else x  # never a view of the caller's block
        self.n_in += len(x)
        self._remember(x)
        y = self._rs.resample_chunk(x) if len(x) else np.empty(0, dtype=np.float32)
        return self._emit(np.asarray(y, dtype=np.float32))

    def flush(self) -> np.ndarray:
        """End of signal: drain the outputs soxr holds back (then ``reset`` to reuse)."""
        if self.identity:
            return np.empty(0, dtype=np.float32)
        y = self._rs.resample_chunk(np.empty(0, dtype=np.float32), last=True)
        return self._emit(np.asarray(y, dtype=np.float32))

    def delay(self) -> float:
        """Output samples soxr currently holds back (0 for identity)."""
        return 0.0 if self.identity else float(self._rs.delay())

    # --- snapshots ---
    def _settings(self) -> dict:
        return {"in_rate": self.in_rate, "out_rate": self.out_rate, "channels": self.channels,
                "quality": self.quality}

    def snapshot(self) -> dict:
        """Versioned state: counters and (if resampling) the input history to replay on restore."""
        if not self.identity and self._period > _MAX_PERIOD:
            raise SnapshotError(f"cannot snapshot a resampler {self.in_rate} -> {self.out_rate} Hz: the rate "
                                f"ratio repeats only every {self._period} input samples (limit {_MAX_PERIOD})")
        return {"version": SNAPSHOT_VERSION, "kind": "resampler", "settings": self._settings(),
                "n_in": self.n_in, "n_out": self.n_out, "hist_start": self._hist_start,
                "history": self._hist.copy()}

    def restore(self, snap: dict) -> None:
        """Rebuild the soxr state by replaying the snapshot's input history (see module doc)."""
        guarded_restore(self._restore, snap, "resampler")

    def _restore(self, snap: dict) -> None:
        check_snapshot(snap, "resampler", "Resampler", self._settings())
        n_in, n_out, start = int(snap["n_in"]), int(snap["n_out"]), int(snap["hist_start"])
        hist = np.asarray(snap["history"], dtype=np.float32)
        if not self.identity and (start % self._period or start + len(hist) != n_in):
            raise SnapshotError("resampler snapshot history is inconsistent with its counters")
        self.reset()
        self.n_in, self.n_out = n_in, n_out
        if self.identity:
            return
        self._hbuf, self._hoff, self._hn, self._hist_start = hist.copy(), 0, len(hist), start
        k0 = start // self._period * self._period_out  # global output index of the history's first sample
        y = np.asarray(self._rs.resample_chunk(hist), dtype=np.float32) if len(hist) else np.empty(0, np.float32)
        # the replay yields global outputs [k0, k0 + len(y)); [0, n_out) were emitted before the snapshot.
        # (Outputs the snapshotted stream still owed are regenerated by the replay itself.)
        already = n_out - k0
        if already < 0:
            raise SnapshotError(f"resampler snapshot history starts at output {k0}, after the {n_out} outputs "
                                "already emitted; history_seconds is too short")
        if len(y) >= already:
            self._pending = y[already:].copy()
        else:
            self._drop = already - len(y)

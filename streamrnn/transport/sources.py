"""Sources: where samples or feature frames come from, as ``Chunk``s.

URIs (``open_source``): ``mic`` / ``mic:DEVICE``, ``file:PATH``, ``stdin``, ``demo``,
``zmq+sub://HOST:PORT``, ``zmq+pull://HOST:PORT`` and their ``zmq+sub+ipc://PATH``
forms (see ``streamrnn.transport.endpoints``).

A source is used from one thread (the pipeline's): ``open()`` creates sockets
and devices there, ``read(timeout)`` returns the chunks available (possibly of
many streams), ``exhausted`` says a finite source is done, ``close()`` releases.
Sources count what they drop or reject in the shared ``Stats``:
``bad[<reason>]`` (malformed messages, reasons of ``wire.REASONS`` plus
``no_descriptor``, ``mismatch``, ``direction``), ``drops[<reason>]``,
``gaps[seq|sample_index]``, ``overflows``.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import select
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamrnn.audio.checks import SAMPLE_RATE_RANGE
from streamrnn.audio.files import AudioFile
from streamrnn.config import DEFAULT_TICK_MS, StreamConfig
from streamrnn.errors import AudioError, ConfigError, WireError
from streamrnn.models import MODELS_DIR
from streamrnn.stats import RecentIds, Stats
from streamrnn.transport import wire
from streamrnn.transport.endpoints import (RateLimitedLog, ZmqSocketOwner, hwm_messages, is_zmq_uri, open_socket,
                                           parse_zmq_uri)

log = logging.getLogger(__name__)

DEMO_NAMES = ("demo.flac", "demo.wav", "demo.ogg")
READ_AHEAD = 1.0  # s of a file decoded per read (a paced source hands it out block by block)

# What one ZeroMQ stream's descriptor may ask of the server (docs/protocol.md, "Stream limits"):
# outside these ranges the stream is refused (counted in refused[<reason>], named once in the log),
# so a peer's numbers never decide a resampler's buffer or a non-finite time.
AUDIO_RATE_RANGE = SAMPLE_RATE_RANGE      # Hz: what the front end and the resampler serve
MAX_AUDIO_CHANNELS = 64                   # audio channels (downmixed to mono by the front end)
FEATURE_RATE_RANGE = (0.01, 100000.0)     # frames/s of a features stream
MAX_REMEMBERED_IDS = 1024                 # refused stream ids remembered (LRU), for counting and logging once
REFUSED_NAMED_PER_10S = 20                # refused streams named in the log per 10 s (a flood of ids: counted only)
# The window of plausible capture times (docs/protocol.md, "Capture times"), one rule for the counters
# and the latency statistics: a data message's first row cannot be captured after the message arrives
# (a clock ahead of the server's, or a made-up time), nor more than MAX_AGE s before.
MAX_AGE = 3600.0                          # s


def implausible_time(t_capture: float, now: float) -> str | None:
    """"future" if ``t_capture`` (of a message's first row) is after ``now`` (its arrival), "past" if it is
    more than ``MAX_AGE`` s before it, else None (Unix seconds).

    >>> implausible_time(99.0, 100.0), implausible_time(100.5, 100.0), implausible_time(0.0, 4000.0)
    (None, 'future', 'past')
    """
    if t_capture > now:
        return "future"
    if t_capture < now - MAX_AGE:
        return "past"
    return None


def stream_limits_error(d: dict) -> tuple[str, str] | None:
    """(reason, message) if a well-formed descriptor ``d`` asks for more than the server serves, else None.

    >>> stream_limits_error({"content": "audio", "rate": 1e-300, "channels": 1})[0]
    'rate'
    >>> stream_limits_error({"content": "audio", "rate": 16000.0, "channels": 2}) is None
    True
    """
    rate, ch = float(d["rate"]), int(d["channels"])
    if d["content"] == "audio":
        lo, hi = AUDIO_RATE_RANGE
        if not lo <= rate <= hi:
            return "rate", f"audio rate {rate:g} Hz is outside {lo}-{hi} Hz"
        if ch > MAX_AUDIO_CHANNELS:
            return "channels", f"{ch} audio channels is above the limit of {MAX_AUDIO_CHANNELS}"
    else:
        lo, hi = FEATURE_RATE_RANGE
        if not lo <= rate <= hi:
            return "rate", f"feature rate {rate:g} frames/s is outside {lo:g}-{hi:g} frames/s"
    return None


def new_epoch() -> int:
    """A random nonzero epoch below 2**53 (exact in JSON in every language)."""
    return secrets.randbits(53) | 1


@dataclass
class Chunk:
    """A block of one stream: audio samples (n, channels) or feature frames (n, F), float32."""

    stream: str
    epoch: int
    content: str            # "audio" or "features"
    data: np.ndarray        # (n, channels|F) float32
    rate: float             # samples (audio) or frames (features) per second
    sample_index: int       # index of data[0] since the epoch began
    t_capture: float        # Unix seconds when data[0] was captured
    flags: int = 0          # wire.FLAG_* to carry to the outputs
    seq: int = 0            # seq of the input message (for ref_seq)
    desc: dict = field(default_factory=dict)
    end: bool = False       # the stream ends after this chunk
    time_ok: bool = True    # t_capture inside the plausible window on arrival (see implausible_time)
    t_arrival: float = math.inf  # Unix s the message arrived (ZeroMQ): no row was captured later


def to_float32(a: np.ndarray) -> np.ndarray:
    """int16 -> float32 in [-1, 1); float -> float32."""
    if a.dtype == np.int16:  # one ufunc pass (cast and scale), no intermediate array: exact either way
        return np.multiply(a, np.float32(1.0 / 32768.0), dtype=np.float32)
    return np.ascontiguousarray(a, dtype=np.float32)


class Source:
    """Base class; see the module docstring for the protocol."""

    live = True          # runs until stopped (mic, zmq) vs. ends by itself (file, stdin)
    paced = False        # delivers blocks of block_ms as they are captured (mic, a real-time file)
    exhausted = False
    expected_rate: float | None = None   # samples/s if known before open (for warm-up)
    backlog = False      # the last read stopped at its limits with messages still waiting: read again now
    default_tick_ms = 0.0  # ms between reads unless StreamConfig.tick_ms says (a block is read when due)

    def __init__(self, stats: Stats | None = None):
        self.stats = stats if stats is not None else Stats()

    def open(self) -> None:
        pass

    def read(self, timeout: float) -> list[Chunk]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def forget(self, stream: str) -> None:
        """Drop what the source keeps about ``stream`` (the pipeline closed it as idle); if it sends
        again, it starts afresh.  Single-stream sources keep nothing."""

    def reap_idle(self, timeout: float) -> int:
        """Forget streams announced but silent for ``timeout`` s; returns how many (none here)."""
        return 0

    def describe(self) -> str:
        return type(self).__name__

    def latency_note(self) -> str | None:
        """What the latency statistics are measured from, when that is not the capture time (None)."""
        return None


# --- single-stream audio sources --------------------------------------------------------------
class _SingleStream(Source):
    def __init__(self, stream_id: str, stats=None):
        super().__init__(stats)
        self.stream = wire.check_stream_id(stream_id)
        self.epoch = new_epoch()
        self.next_index = 0
        self.seq = 0
        self._desc_key = self._desc_value = None

    def _desc(self, rate, channels):
        # one dict per (rate, channels), not one per block: a live source makes 50 chunks a second
        key = (rate, channels)
        if self._desc_key != key:
            self._desc_key, self._desc_value = key, wire.descriptor(self.stream, self.epoch, "audio", "float32",
                                                                    channels, rate)
        return self._desc_value

    def _chunk(self, data, rate, t_capture, flags=0, end=False) -> Chunk:
        ch = Chunk(self.stream, self.epoch, "audio", data, rate, self.next_index, t_capture,
                   flags=flags, seq=self.seq, desc=self._desc(rate, data.shape[1]), end=end)
        self.next_index += data.shape[0]
        self.seq += 1
        return ch


class FileSource(_SingleStream):
    """``file:PATH``: any format soundfile reads, in blocks; ``realtime`` paces it like a microphone."""

    live = False
    paced = property(lambda self: bool(self.realtime))

    def __init__(self, path, stream_id="file0", block_ms=20.0, realtime=False, stats=None):
        super().__init__(stream_id, stats)
        self.path = Path(path)
        self.block_ms, self.realtime = block_ms, realtime
        if self.path.is_dir():
            raise AudioError(f"file:{path} is a directory: file: reads one audio file; for every audio file "
                             f"of a folder use `streamrnn batch` (or name one file, file:{self.path / 'x.wav'})")
        self._f = AudioFile(self.path, nonfinite="zero")  # the one reader: AudioError for a bad file, now
        self.rate, self.channels, self.frames = float(self._f.rate), self._f.channels, self._f.frames
        self.expected_rate = self.rate

    def open(self):
        self._block = max(1, int(round(self.rate * self.block_ms / 1000)))
        if not self.realtime:
            # As fast as possible, nobody waits for a block: read at least 1 s at a time, which
            # cuts the per-block overhead 50-fold.  Outputs do not depend on the chunking.
            self._block = max(self._block, int(self.rate))
        # decoded ahead, not yet handed out: blocks [_bi:] of _blocks, then _rest (under a block)
        self._blocks, self._bi, self._rest = [], 0, np.zeros((0, self.channels), np.float32)
        self._eof = False
        self._t0 = time.time()

    def read(self, timeout):
        if self.exhausted:
            return []
        t_first = self._t0 + self.next_index / self.rate
        if self.realtime:
            # A block is "captured" when its last sample would have arrived from a microphone.
            due = t_first + self._block / self.rate
            wait = due - time.time()
            if wait > timeout:
                time.sleep(timeout)
                return []
            if wait > 0:
                time.sleep(wait)
        data = self._take(self._block)  # (n, channels); NaN/Inf already 0, counted, the first logged
        if data.shape[0] < self._block:
            self.exhausted = True
            self._f.finish()  # one warning if the file ended before its header said; AudioError if empty
        if data.shape[0] == 0:
            return [self._chunk(np.zeros((0, self.channels), np.float32), self.rate,
                                t_first if self.realtime else time.time(), end=True)]
        # As fast as possible: the block is treated as captured just now, ending at this instant.
        t_cap = t_first if self.realtime else time.time() - data.shape[0] / self.rate
        return [self._chunk(data, self.rate, t_cap, end=self.exhausted)]

    def _take(self, n: int) -> np.ndarray:
        """The next ``n`` samples (fewer at the end of the file), decoded ahead ``READ_AHEAD`` s at a
        time and cut into blocks then: a paced 20 ms block costs a list item, not a decoder call
        (a FLAC read of 320 samples cost about 0.3 ms of CPU after each sleep) nor a NumPy slice."""
        if self._bi == len(self._blocks):
            if self._eof:
                return self._blocks[-1][:0] if self._blocks else np.zeros((0, self.channels), np.float32)
            self._refill(n)
        b = self._blocks[self._bi]
        self._bi += 1
        return b

    def _refill(self, n: int) -> None:
        """Decode the next ``READ_AHEAD`` s (at least ``n`` samples) after the samples left over, and
        cut them into blocks of ``n``; at the end of the file the last block is what is left (fewer
        than ``n`` samples, maybe none)."""
        want = max(n, int(self.rate * READ_AHEAD))
        bad = self._f.n_nonfinite
        more = self._f.read(want)
        if self._f.n_nonfinite > bad:
            self.stats.count("bad", "non_finite", self._f.n_nonfinite - bad)
        self._eof = more.shape[0] < want
        ahead = np.concatenate([self._rest, more]) if self._rest.shape[0] else more
        k = ahead.shape[0] // n  # whole blocks
        self._blocks = [ahead[i * n:(i + 1) * n] for i in range(k)]
        self._rest = ahead[k * n:]
        if self._eof:
            self._blocks.append(self._rest)
        self._bi = 0

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None

    def describe(self):
        return f"file {self.path} ({self.rate:g} Hz, {self.channels} ch, {self.frames / self.rate:.2f} s)"


def demo_path() -> Path:
    """The packaged demo recording; AudioError if it is not installed."""
    for n in DEMO_NAMES:
        p = MODELS_DIR / n
        if p.is_file():
            return p
    raise AudioError(f"the demo recording is missing: expected one of {', '.join(DEMO_NAMES)} in "
                     f"{MODELS_DIR} (reinstall streamrnn, or use --source file:PATH)")


# --- stdin: raw PCM, or a WAV stream whose header says what follows ------------------------------
MAX_WAV_HEADER = 1 << 20  # bytes of RIFF chunks before "data" that stdin buffers while looking for it
# WAVE format tags -> sample kind; 0xFFFE (WAVE_FORMAT_EXTENSIBLE) names one of these in its sub-format
_WAV_TAGS = {1: "int", 3: "float"}
_WAV_SAMPLES = {("int", 8): "u1", ("int", 16): "<i2", ("int", 24): "<i3", ("int", 32): "<i4",
                ("float", 32): "<f4", ("float", 64): "<f8"}
_SAMPLE_NAMES = {"u1": "u8", "<i2": "s16le", "<i3": "s24le", "<i4": "s32le", "<f4": "f32le", "<f8": "f64le"}
# first bytes of containers stdin cannot take (it reads raw PCM or WAV): refused in one line
_OTHER_CONTAINERS = {b"fLaC": "FLAC", b"OggS": "Ogg", b"ID3": "MP3 (ID3 tag)", b"FORM": "AIFF",
                     b".snd": "Sun AU", b"caff": "CAF", b"\x1aE\xdf\xa3": "Matroska/WebM", b"wvpk": "WavPack"}


def sniff_container(head: bytes) -> str | None:
    """The container whose magic bytes start ``head`` ("WAV" for RIFF/RF64 WAVE, "FLAC", "Ogg",
    ...), or None for headerless data (raw PCM).  ``head``: at least the first 12 bytes.

    >>> sniff_container(b"RIFF" + bytes(4) + b"WAVEfmt "), sniff_container(b"fLaC" + bytes(8)), sniff_container(bytes(12))
    ('WAV', 'FLAC', None)
    """
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "WAV"
    if head[4:8] == b"ftyp":
        return "MP4/M4A"
    return next((name for magic, name in _OTHER_CONTAINERS.items() if head.startswith(magic)), None)


def parse_wav_header(buf: bytes) -> tuple[int, int, int, str, int | None] | None:
    """``(data_offset, rate, channels, sample, data_bytes)`` of a RIFF/RF64 WAVE stream's start, or
    None while ``buf`` does not yet reach the ``data`` chunk.  ``sample`` is a NumPy dtype string
    (``"<i2"``, ``"<f4"``, ``"u1"``; ``"<i3"`` for 24-bit); ``data_bytes`` None when the header
    does not know the length (a pipe: 0 or 0xFFFFFFFF).  ConfigError for a compressed or
    malformed format, or no ``data`` chunk within ``MAX_WAV_HEADER`` bytes.

    >>> import io, wave
    >>> b = io.BytesIO()
    >>> with wave.open(b, "wb") as w:
    ...     w.setnchannels(2); w.setsampwidth(2); w.setframerate(22050); w.writeframes(bytes(8))
    >>> parse_wav_header(b.getvalue())
    (44, 22050, 2, '<i2', 8)
    """
    import struct

    pos, fmt, ds64 = 12, None, None
    while pos + 8 <= len(buf):
        cid, size = buf[pos:pos + 4], struct.unpack_from("<I", buf, pos + 4)[0]
        body = pos + 8
        if cid == b"data":
            if fmt is None:
                raise ConfigError("stdin: WAV header has no 'fmt ' chunk before its 'data'")
            if buf[:4] == b"RF64" and ds64 is not None:
                size = ds64
            return (body, *fmt, None if size in (0, 0xFFFFFFFF) else size)
        if body + size > MAX_WAV_HEADER:
            break
        if body + size > len(buf):
            return None  # the chunk is not all here yet
        if cid == b"fmt ":
            if size < 16:
                raise ConfigError(f"stdin: WAV 'fmt ' chunk of {size} bytes (at least 16)")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", buf, body)
            if tag == 0xFFFE and size >= 26:
                tag = struct.unpack_from("<H", buf, body + 24)[0]  # the sub-format GUID's first two bytes
            sample = _WAV_SAMPLES.get((_WAV_TAGS.get(tag), bits))
            if sample is None:
                raise ConfigError(f"stdin: WAV format tag {tag:#x} with {bits}-bit samples is not PCM "
                                  f"(8/16/24/32-bit) or float (32/64-bit); decode it first, e.g. "
                                  f"ffmpeg -i IN -f wav -acodec pcm_s16le -")
            if not 1 <= rate <= 1_000_000 or not 1 <= channels <= 64:
                raise ConfigError(f"stdin: WAV header declares {rate} Hz, {channels} channels "
                                  f"(1..1000000 Hz, 1..64 channels)")
            fmt = (rate, channels, sample)
        elif cid == b"ds64" and size >= 16:
            ds64 = struct.unpack_from("<Q", buf, body + 8)[0]  # RF64: riff size, then data size
        pos = body + size + (size & 1)  # chunks are padded to an even length
    if len(buf) >= MAX_WAV_HEADER or pos > MAX_WAV_HEADER:
        raise ConfigError(f"stdin: WAV header without a 'data' chunk in its first {MAX_WAV_HEADER} bytes")
    return None


class StdinSource(_SingleStream):
    """``stdin``: headerless raw interleaved PCM, ``s16le`` (default) or ``f32le``, at ``rate`` Hz
    (16000) with ``channels`` (1), e.g. from ``arecord -t raw``, ``sox -t raw`` or ``ffmpeg -f s16le``;
    or a **WAV stream** (RIFF/RF64 WAVE: ``arecord``'s default, ``ffmpeg -f wav``), whose header's
    rate, channels and sample format (PCM 8-32 bit, float 32/64) are used instead of those
    settings.  Other containers (FLAC, Ogg, MP3, ...) are refused with a ConfigError on the first
    read: decode them first, or use ``file:PATH``."""

    live = False
    FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}

    def __init__(self, rate=16000, fmt="s16le", channels=1, stream_id="stdin0", block_ms=20.0,
                 stats=None, fd=None):
        super().__init__(stream_id, stats)
        if fmt not in self.FORMATS:
            raise ConfigError(f"stdin format {fmt!r} is not one of {', '.join(self.FORMATS)}")
        if not 1 <= rate <= 1_000_000:
            raise ConfigError(f"stdin rate {rate} is not in 1..1000000 Hz")
        self.block_ms = block_ms
        self._set_format(float(rate), self.FORMATS[fmt].str, int(channels))
        self.expected_rate = self.rate
        self.fd = fd
        self._buf = bytearray()
        self._sniffed = False  # the first bytes were checked for a container header
        self._left = None  # bytes of WAV data still to come (None: to the end of stdin)
        self.container = "raw"

    def _set_format(self, rate: float, sample: str, channels: int) -> None:
        self.rate, self.channels, self.sample = rate, channels, sample
        self.dtype = np.dtype("V3") if sample == "<i3" else np.dtype(sample)
        self.frame_bytes = self.dtype.itemsize * self.channels
        self.block_bytes = max(1, int(round(rate * self.block_ms / 1000))) * self.frame_bytes

    def _sniff(self) -> bool:
        """Look at the first bytes: True once the format is known (raw, or the WAV header parsed)."""
        if len(self._buf) < 12 and not self.exhausted:
            return False
        kind = sniff_container(bytes(self._buf[:12]))
        if kind is None:
            return True
        if kind != "WAV":
            raise ConfigError(f"stdin holds a {kind} stream: --source stdin reads raw PCM ("
                              f"{_SAMPLE_NAMES[self.sample]}, {self.rate:g} Hz, {self.channels} ch as --format/--rate/"
                              f"--channels say) or WAV; decode it first (ffmpeg -i IN -f wav -) or use file:PATH")
        head = parse_wav_header(bytes(self._buf))
        if head is None:
            if self.exhausted:
                raise ConfigError("stdin: WAV stream ended inside its header")
            return False
        offset, rate, channels, sample, self._left = head
        del self._buf[:offset]
        self._set_format(float(rate), sample, channels)
        self.container = "WAV"
        log.info("stdin: WAV header: %d Hz, %d ch, %s samples", rate, channels, _SAMPLE_NAMES[sample])
        return True

    def _decode(self, raw: bytes) -> np.ndarray:
        """(n, channels) float32 in [-1, 1) (integers) or as sent (float) from whole frames."""
        if self.sample == "<i3":  # 24-bit: sign-extend three little-endian bytes into int32
            b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
            a = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8) >> 8
            return (a.astype(np.float32) * np.float32(2.0 ** -23)).reshape(-1, self.channels)
        a = np.frombuffer(raw, dtype=self.dtype).reshape(-1, self.channels)
        if self.dtype.kind == "u":  # 8-bit WAV: unsigned, 128 = silence
            return (a.astype(np.float32) - 128) * np.float32(1 / 128)
        if self.dtype.kind == "i":
            return a.astype(np.float32) * np.float32(2.0 ** (1 - 8 * self.dtype.itemsize))
        return to_float32(a)

    def open(self):
        if self.fd is None:
            self.fd = sys.stdin.fileno()

    def read(self, timeout):
        if self.exhausted:
            return []
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return []
        b = os.read(self.fd, 1 << 16)
        t = time.time()
        if not b:
            self.exhausted = True
        self._buf += b
        if not self._sniffed:
            self._sniffed = self._sniff()
            if not self._sniffed:
                return []
        if self._left is not None:  # a WAV's data chunk ends here: chunks after it are not samples
            if len(self._buf) >= self._left:
                del self._buf[self._left:]
                self.exhausted = True
        if self.exhausted and len(self._buf) % self.frame_bytes:
            self.stats.count("drops", "partial_sample", len(self._buf) % self.frame_bytes)
        n = len(self._buf) // self.frame_bytes * self.frame_bytes
        if not self.exhausted and n < self.block_bytes:
            return []
        raw = bytes(self._buf[:n])
        del self._buf[:n]
        if self._left is not None:
            self._left -= n
        data = self._decode(raw)
        if self.dtype.kind == "f" and not np.isfinite(data).all():
            # NaN/Inf would poison the hidden state: replace by silence, count the samples
            bad = ~np.isfinite(data)
            self.stats.count("bad", "non_finite", int(bad.sum()))
            data = np.where(bad, np.float32(0), data)
        # The newest byte just arrived: the first sample was captured n samples earlier.
        return [self._chunk(data, self.rate, t - data.shape[0] / self.rate, end=self.exhausted)]

    def describe(self):
        fmt = f"{_SAMPLE_NAMES[self.sample]}, {self.rate:g} Hz, {self.channels} ch"
        if not self._sniffed:  # the start-up line: nothing read yet
            return f"stdin (raw {fmt}, or what a WAV header says)"
        return f"stdin ({self.container} {fmt})"


class MicSource(_SingleStream):
    """``mic`` / ``mic:DEVICE``: a sounddevice InputStream.

    The PortAudio callback only copies the block into a bounded deque (about
    ``queue_seconds`` of audio); when it is full the oldest block is dropped,
    counted in ``overflows`` and the next chunk carries FLAG_OVERFLOW | FLAG_GAP.
    """

    paced = True

    def __init__(self, device=None, rate=16000, channels=1, stream_id="mic0", block_ms=20.0,
                 queue_seconds=2.0, stats=None):
        super().__init__(stream_id, stats)
        self.device = device
        self.rate, self.channels = float(rate), int(channels)
        self.expected_rate = self.rate
        self.block = max(1, int(round(rate * block_ms / 1000)))
        self.maxlen = max(2, int(np.ceil(queue_seconds * rate / self.block)))
        self._q: deque = deque()
        self._ready = threading.Event()
        self._cb_index = 0           # samples delivered by PortAudio (callback thread only)
        self._dropped = 0            # blocks dropped because the queue was full
        self._pa_overflows = 0       # PortAudio input_overflow statuses
        self._seen_dropped = 0
        self._seen_pa = 0
        self._stream = None
        self._warn_overflow = RateLimitedLog(log)
        self.adc_times = False       # whether PortAudio gave capture (ADC) times (callback thread sets it)
        self.device_name = None      # the device's own name, once open

    def latency_note(self) -> str | None:
        """What the latency statistics measure from, when it is not the capture itself."""
        if self.adc_times:
            return None
        return ("from the audio callback, not the capture: the host API reports no capture times, so its "
                "buffering is not included")

    def _callback(self, indata, frames, time_info, status):
        # Runs on PortAudio's thread: copy and enqueue only; never block or allocate much.
        # Chunk.t_capture is when the block's FIRST sample was captured: the ADC time PortAudio
        # reports for it, else (PulseAudio, some ALSA devices report none or another clock) the
        # callback's arrival minus the block's duration, which leaves the host's buffering out.
        t = time.time()
        try:
            lag = time_info.currentTime - time_info.inputBufferAdcTime
        except Exception:  # some host APIs report no times
            lag = -1.0
        if 0 < lag < 1:
            t -= lag
            self.adc_times = True
        else:
            t -= frames / self.rate
        if status and status.input_overflow:
            self._pa_overflows += 1
        if len(self._q) >= self.maxlen:
            self._q.popleft()
            self._dropped += 1
        self._q.append((self._cb_index, t, indata.copy()))
        self._cb_index += frames
        self._ready.set()

    def open(self):
        sd = import_sounddevice()
        dev = self.device if self.device is not None else "default"
        try:
            try:
                sd.check_input_settings(device=self.device, channels=self.channels, samplerate=self.rate,
                                        dtype="float32")
            except sd.PortAudioError:
                # Many hardware devices only run at their native rate: use it, the front end resamples.
                native = float(sd.query_devices(self.device, "input")["default_samplerate"])
                log.warning("microphone %r does not support %g Hz; recording at its native %g Hz",
                            dev, self.rate, native)
                self.rate = native
                self.block = max(1, int(round(self.rate * self.block / self.expected_rate)))
                self.maxlen = max(2, int(np.ceil(self.maxlen * self.rate / self.expected_rate)))
                self.expected_rate = self.rate
            self._stream = sd.InputStream(device=self.device, channels=self.channels,
                                          samplerate=self.rate, blocksize=self.block,
                                          dtype="float32", callback=self._callback)
            self._stream.start()
            self.device_name = str(sd.query_devices(self.device, "input")["name"])
        except Exception as e:  # PortAudioError, ValueError for an unknown device name
            raise AudioError(f"cannot open microphone {dev!r} at {self.rate:g} Hz: {e} "
                             f"(see `streamrnn devices`)") from None
        log.info("microphone %r open: %g Hz, %d ch, %d-sample blocks", self.device, self.rate,
                 self.channels, self.block)

    def read(self, timeout):
        if not self._q:
            self._ready.wait(timeout)
            self._ready.clear()
        out = []
        while self._q:
            idx, t, data = self._q.popleft()
            flags = 0
            d, p = self._dropped, self._pa_overflows
            if d != self._seen_dropped or p != self._seen_pa:
                self.stats.add("overflows", (d - self._seen_dropped) + (p - self._seen_pa))
                self._warn_overflow(f"microphone queue full ({self.maxlen} blocks = queue_seconds of audio): "
                                    f"{d} block(s) dropped, {p} PortAudio overflow(s) so far; the reader "
                                    f"is too slow (counted in overflows)")
                self._seen_dropped, self._seen_pa = d, p
                flags |= wire.FLAG_OVERFLOW
            if idx != self.next_index:
                self.stats.count("gaps", "sample_index")
                flags |= wire.FLAG_GAP
                self.next_index = idx
            out.append(self._chunk(data, self.rate, t, flags=flags))
        return out

    def close(self):
        if self._stream is not None:
            try:
                self._stream.stop()
                self._stream.close()
            finally:
                self._stream = None

    def describe(self):
        dev = "default" if self.device is None else str(self.device)
        if self.device_name and self.device_name != dev:
            dev += f" ({self.device_name})" if self.device is not None else f" device ({self.device_name})"
        return f"microphone {dev}, {self.rate:g} Hz, {self.channels} ch"


def import_sounddevice():
    """sounddevice, or AudioError saying how to install PortAudio."""
    try:
        import sounddevice as sd
    except OSError as e:  # sounddevice raises OSError when libportaudio cannot be loaded
        raise AudioError(f"PortAudio is not installed ({e}); install it with "
                         f"`apt-get install libportaudio2` (Debian/Ubuntu) or `brew install portaudio`") from None
    except ImportError:
        raise AudioError("the sounddevice package is missing: pip install sounddevice") from None
    return sd


# --- ZeroMQ source: many streams -----------------------------------------------------------
BULK_MIN_MESSAGES = 8  # a read of fewer messages decodes them one by one (wire.decode): cheaper below ~8
INPUT_KINDS = (wire.DATA, wire.DESC, wire.EOS)  # what a producer sends; other kinds are ignored


@dataclass
class _InStream:
    desc: dict | None = None
    epoch: int | None = None
    next_seq: int | None = None
    next_index: int | None = None
    last_seen: float = field(default_factory=time.monotonic)  # monotonic time of its last message
    had_data: bool = False


class ZmqSource(ZmqSocketOwner, Source):
    """``zmq+sub://`` / ``zmq+pull://``: streamrnn/1 data of any number of streams.

    Every stream needs a descriptor (kind 3) of its epoch before its data is
    used; data without one is dropped and counted (``drops[no_descriptor]``).
    Chunks carry their epoch and descriptor (the pipeline resets a stream whose
    epoch or descriptor changes); a jump in seq or sample_index counts a gap
    and sets FLAG_GAP; data not ahead of what was consumed is dropped
    (``drops[duplicate]``: the last seq again; ``drops[stale]``: an earlier seq,
    or rows already consumed); capture times outside the window of
    ``implausible_time`` are counted on arrival.
    An end-of-stream message (kind 5) of the stream's epoch ends that stream.
    """

    default_tick_ms = DEFAULT_TICK_MS  # many streams' messages arrive one by one: one read per tick

    def __init__(self, uri, max_message_bytes=wire.DEFAULT_MAX_MESSAGE_BYTES, max_streams=64,
                 hwm_seconds=2.0, msgs_per_second=None, stats=None, curve=None):
        super().__init__(stats)
        self.curve = curve
        self._warn_full = RateLimitedLog(log)
        self.ep = parse_zmq_uri(uri, allowed=("sub", "pull"))
        if self.ep.pattern == "sub" and self.ep.topic is None:
            self.ep = parse_zmq_uri(uri + ("&" if "?" in uri else "?") + "topic=in/", allowed=("sub",))
        self.max_message_bytes = int(max_message_bytes)
        self.max_streams = int(max_streams)
        if msgs_per_second is None:  # every stream may send a block each 40 ms (25 messages/s)
            msgs_per_second = 25.0 * max(4, self.max_streams)
        self.hwm = hwm_messages(msgs_per_second, hwm_seconds)
        self.table: dict[str, _InStream] = {}
        self.refused = RecentIds(MAX_REMEMBERED_IDS)  # ids whose descriptor was refused (bounded)
        self._named = deque(maxlen=REFUSED_NAMED_PER_10S)  # monotonic times of the last refused-stream lines
        self._ctx = self._sock = self._poller = None

    def open(self):
        import zmq

        self._ctx = zmq.Context.instance()
        # libzmq's MAXMSGSIZE is the hard memory cap (a frame above it drops the sender's
        # connection); messages between max_message_bytes and it are counted as too_large.
        self._sock = open_socket(self._ctx, self.ep, hwm=self.hwm,
                                 max_message_bytes=2 * self.max_message_bytes + 4096, curve=self.curve)
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)

    def read(self, timeout, max_messages=512, max_bytes=8 << 20):
        """The chunks of the messages waiting (at most ``max_messages``, and no more once ``max_bytes``
        have been received), after waiting up to ``timeout`` s for one.  The data messages among them
        are decoded together (``wire.decode_data_many``), the others one by one (``wire.decode``), and
        every message is then taken in arrival order, as it came."""
        import zmq

        if not self._poller.poll(int(timeout * 1000)):
            return []
        msgs = []
        # recv_multipart's loop, with Frame.more instead of a getsockopt(RCVMORE) per frame (that
        # costs more than the Frame object), each frame's bytes copied out like copy=True
        recv, again, size, noblock = self._sock.recv, zmq.Again, 0, int(zmq.NOBLOCK)
        for _ in range(max_messages):
            try:
                f = recv(noblock, copy=False)
            except again:
                break
            frames = [f.bytes]
            size += len(frames[0])
            while f.more:
                f = recv(noblock, copy=False)
                b = f.bytes
                frames.append(b)
                size += len(b)
            msgs.append(frames)
            if size >= max_bytes:  # the rest waits for the next read: one read's memory stays bounded
                break
        # stopped at a limit, not because the queue ran dry: the pipeline reads again without a tick's wait
        self.backlog = len(msgs) == max_messages or size >= max_bytes
        # every message of the read has arrived by now: one clock reading serves as their arrival time
        now, mono = time.time(), time.monotonic()
        out = []
        decode, accept, accept_data, limit = wire.decode, self._accept, self._accept_data, self.max_message_bytes
        # a few messages cost less one by one than NumPy's fixed cost of decoding them together
        bulk = wire.decode_data_many(msgs, limit) if len(msgs) >= BULK_MIN_MESSAGES else [None] * len(msgs)
        for frames, d in zip(msgs, bulk):
            if d is not None:
                ch = accept_data(*d, now, mono)
            else:
                try:
                    m = decode(frames, limit)
                except WireError as e:
                    self.stats.count("bad", e.reason)
                    log.debug("bad message skipped: %s", e)
                    continue
                ch = accept(m, now, mono)
            if ch is not None:
                out.append(ch)
        self.stats.add("messages_in", len(msgs))
        return out

    def _accept(self, m: wire.Message, now: float | None = None, mono: float | None = None) -> Chunk | None:
        """What one decoded message does (``now``/``mono``: its arrival, time.time()/time.monotonic())."""
        if m.kind not in INPUT_KINDS:
            return None  # heartbeats, events, stats, predictions (another server's outputs): nothing to compute
        if m.stream == wire.STATS_STREAM:
            self.stats.count("bad", "stream_id")  # reserved for the server's stats (out/_stats/stats)
            return None
        if m.kind == wire.DATA:
            return self._accept_data(m.stream, m.epoch, m.seq, m.sample_index, m.t_capture, m.flags, m.dtype,
                                     to_float32(m.data), now, mono)
        st = self.table.get(m.stream)
        if m.kind == wire.DESC:
            if m.meta["content"] not in ("audio", "features"):
                self.stats.count("bad", "content")  # "pred": what servers publish, not an input
                return None
            why = stream_limits_error(m.meta)
            if why is not None:
                return self._refuse(m.stream, *why)
            self.refused.discard(m.stream)
        if st is None:
            # Only a descriptor opens a stream, so stray data cannot fill the table.
            if m.kind != wire.DESC:  # eos
                self.stats.count("drops", "refused" if m.stream in self.refused else "no_descriptor")
                return None
            if len(self.table) >= self.max_streams and not self._reclaim_one():
                self.stats.count("drops", "max_streams")
                self._warn_full(f"stream {m.stream!r} refused: {len(self.table)} streams are open, the "
                                f"limit is max_streams={self.max_streams} (--max-streams); counted in "
                                f"drops.max_streams")
                return None
            st = self.table[m.stream] = _InStream()
        st.last_seen = time.monotonic() if mono is None else mono
        if m.kind == wire.DESC:
            d = m.meta
            if st.desc is not None and (st.epoch != m.epoch or _desc_key(st.desc) != _desc_key(d)):
                # a new epoch or descriptor: the seq/sample_index count starts afresh.  Whether the
                # stream's state resets is the pipeline's call (it compares epoch and descriptor).
                st.next_seq = st.next_index = None
            st.desc, st.epoch = d, m.epoch
            return None
        if m.kind == wire.EOS:
            if st.epoch != m.epoch or st.desc is None:
                self.stats.count("drops", "no_descriptor")  # the rule of data: an epoch not announced
                return None
            self.table.pop(m.stream, None)
            d = st.desc
            return Chunk(m.stream, m.epoch, d["content"], np.zeros((0, d["channels"]), np.float32),
                         float(d["rate"]), m.sample_index, m.t_capture, seq=m.seq, desc=d, end=True)
        return None

    def _accept_data(self, sid, epoch, seq, sample_index, t_capture, mflags, dtype, x, now=None, mono=None):
        """A decoded data message of stream ``sid`` (its header fields; ``x``: its samples, float32)."""
        st = self.table.get(sid)
        if st is None:  # only a descriptor opens a stream, so stray data cannot fill the table
            self.stats.count("drops", "refused" if sid in self.refused else "no_descriptor")
            return None
        st.last_seen = time.monotonic() if mono is None else mono
        d = st.desc
        if d is None or st.epoch != epoch:
            self.stats.count("drops", "no_descriptor")
            return None
        if x.shape[1] != d["channels"] or wire.DTYPE_NAMES[dtype] != d["dtype"]:
            self.stats.count("bad", "mismatch")
            return None
        n = x.shape[0]
        if st.next_seq is not None:
            # Only data ahead of what was consumed is used: a retransmission of the last message
            # (its seq again) or older data (an earlier seq, or rows already consumed) would feed
            # the model the same audio twice and corrupt the stream's state.
            if seq == st.next_seq - 1:
                self.stats.count("drops", "duplicate")
                return None
            if seq < st.next_seq or sample_index < st.next_index:
                self.stats.count("drops", "stale")
                return None
        if now is None:
            now = time.time()
        why = implausible_time(t_capture, now)
        if why is not None:
            self.stats.count("implausible_time", why)  # used as sent, left out of the latency statistics
        flags = mflags & (wire.FLAG_GAP | wire.FLAG_OVERFLOW | wire.FLAG_RESET)
        # The first message seen of an epoch starts at seq 0 and sample 0; a later one means the
        # start was lost (a subscription not yet live, a restart of this server): a gap too.
        if seq != (0 if st.next_seq is None else st.next_seq):
            self.stats.count("gaps", "seq")
            flags |= wire.FLAG_GAP
        want = 0 if st.next_index is None else st.next_index
        if sample_index != want:
            self.stats.count("gaps", "sample_index")
            self.stats.add("gap_samples", sample_index - want)  # forward only: stale data was dropped
            flags |= wire.FLAG_GAP
        st.had_data = True
        st.next_seq, st.next_index = seq + 1, sample_index + n
        end = bool(mflags & wire.FLAG_END)
        if end:
            self.table.pop(sid, None)
        return Chunk(sid, epoch, d["content"], x, float(d["rate"]), sample_index, t_capture, flags=flags, seq=seq,
                     desc=d, end=end, time_ok=why is None, t_arrival=now)

    def forget(self, stream: str) -> None:
        """Drop what is known of ``stream`` (its data is used again after its next descriptor)."""
        self.table.pop(stream, None)

    def reap_idle(self, timeout: float) -> int:
        """Forget the streams without a message for ``timeout`` s that never sent data (the
        pipeline closes those with data itself); counted in ``closed[no_data]``.  Returns how many."""
        now = time.monotonic()
        gone = [k for k, st in self.table.items() if not st.had_data and now - st.last_seen >= timeout]
        for k in gone:
            del self.table[k]
        if gone:
            self.stats.count("closed", "no_data", len(gone))
        return len(gone)

    def _reclaim_one(self) -> bool:
        """The table is full: forget the least recently seen stream that never sent data (counted in
        ``closed[no_data]``), so descriptors alone never lock out a live stream.  False if none."""
        idle = [(st.last_seen, k) for k, st in self.table.items() if not st.had_data]
        if not idle:
            return False
        del self.table[min(idle)[1]]
        self.stats.count("closed", "no_data")
        return True

    def _refuse(self, stream: str, reason: str, msg: str) -> None:
        """A descriptor asks for more than the server serves: refuse the stream (its later data is
        counted in ``drops[refused]``), count ``refused[reason]``, name it once in the log."""
        self.stats.count("refused", reason)
        self.table.pop(stream, None)
        if self.refused.add(stream):
            now = time.monotonic()
            if len(self._named) < self._named.maxlen or now - self._named[0] >= 10.0:
                self._named.append(now)
                log.warning("stream %r refused: %s (counted in refused.%s)", stream, msg, reason)
            else:
                self._warn_full(f"more streams refused than are named in the log ({REFUSED_NAMED_PER_10S} per "
                                f"10 s); every one is counted in refused.<reason>")
        return None


    def stream_state(self, stream: str) -> dict | None:
        """What this source knows of ``stream`` (its descriptor, epoch and the next seq and
        sample_index it expects), JSON-able; None if unknown.  ``resume_stream`` puts it back."""
        st = self.table.get(stream)
        if st is None or st.desc is None:
            return None
        return {"desc": st.desc, "epoch": st.epoch, "next_seq": st.next_seq, "next_index": st.next_index}

    def resume_stream(self, stream: str, state: dict) -> None:
        """Know ``stream`` again as ``stream_state`` described it (a restarted server restoring a
        snapshot): its data is used at once, and a jump from the expected seq/sample_index is a gap."""
        self.table[stream] = _InStream(desc=dict(state["desc"]), epoch=int(state["epoch"]),
                                       next_seq=state["next_seq"], next_index=state["next_index"], had_data=True)


def _desc_key(d: dict) -> tuple:
    return (d.get("content"), d.get("dtype"), d.get("channels"), d.get("rate"))


def open_source(uri: str, config: StreamConfig | None = None, *, stats=None, curve=None) -> Source:
    """Build the source named by ``uri`` (not yet opened) with the settings of ``config`` (rate,
    format, channels, block_ms, realtime, queue_seconds, max_message_bytes, max_streams,
    hwm_seconds, stream_id; default ``StreamConfig()``); ``curve``: a ``CurveConfig`` or None.
    ConfigError for an unknown URI."""
    c = config or StreamConfig()
    rate, channels, block_ms, realtime, stream_id = c.rate, c.channels, c.block_ms, c.realtime, c.stream_id
    kw = {"stream_id": stream_id} if stream_id else {}
    if uri == "mic" or uri.startswith("mic:"):
        dev = uri[4:] or None
        if dev is not None and dev.isdigit():
            dev = int(dev)
        return MicSource(dev, rate=rate, channels=channels, block_ms=block_ms,
                         queue_seconds=c.queue_seconds, stats=stats, **kw)
    if uri.startswith("file:"):
        return FileSource(uri[5:], block_ms=block_ms, realtime=bool(realtime), stats=stats, **kw)
    if uri == "demo":
        # The demo plays like a live source unless told otherwise (realtime=False): a listener
        # started beside it sees 24 s of predictions, not a burst.
        return FileSource(demo_path(), block_ms=block_ms, realtime=realtime is None or bool(realtime), stats=stats,
                          stream_id=stream_id or "demo0")
    if uri == "stdin":
        return StdinSource(rate=rate, fmt=c.format, channels=channels, block_ms=block_ms, stats=stats, **kw)
    if is_zmq_uri(uri):
        return ZmqSource(uri, max_message_bytes=c.max_message_bytes, max_streams=c.max_streams,
                         hwm_seconds=c.hwm_seconds, stats=stats, curve=curve)
    raise ConfigError(f"unknown source {uri!r}: use mic, mic:DEVICE, file:PATH, stdin, demo, "
                      f"zmq+sub://HOST:PORT, zmq+pull://HOST:PORT (or zmq+sub+ipc://PATH, zmq+pull+ipc://PATH)")

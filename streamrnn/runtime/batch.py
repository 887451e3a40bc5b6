"""Corpus runs: ``streamrnn batch`` (every file of a corpus through a model, on every core or a Ray
cluster) and ``speech_segments`` (one file or signal -> segments in seconds).

Every file goes through exactly what ``streamrnn stream --source file:PATH`` runs: a ``FileSource``
into the one ``Pipeline`` (``ModelProcessor``: resampler, front end, bank step) with the
``[events]`` hysteresis (``EventDetector``), so its frame predictions equal the ``stream``
command's bit for bit and its segments are that command's start/end events.  A bidirectional model
cannot stream: its file is read whole and runs through ``model.forward`` (the same front end and
the same ``EventDetector`` after it).  Segments are then padded (``pad``, below).

Outputs of a file found at ``REL`` under its input (docs/batch.md has every field)::

    OUT/REL.segments.jsonl  OUT/REL.labels.txt  OUT/REL.rttm  OUT/REL.csv  OUT/REL.npy
    OUT/REL.batch.json      the record: model hash, settings, source size and mtime, totals

Each is written to a temporary file in the same folder and moved into place (``os.replace``), the
record last, so an interrupted run leaves whole files only; a file whose record matches the model
file's SHA-256, the settings, the source file and the requested outputs is skipped (``force``
redoes it).

>>> import numpy as np
>>> x = np.zeros(16000, np.float32)            # 1 s of silence at 16 kHz
>>> speech_segments(x, 16000)
[]
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import glob
import hashlib
import json
import logging
import math
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from streamrnn.audio.files import AudioFile, write_labels
from streamrnn.audio.frontend import as_frontend
from streamrnn.audio.stream import FeatureStream
from streamrnn.config import EventParams, StreamConfig, json_lines, read_text_file
from streamrnn.errors import ConfigError, InputError, StreamRNNError
from streamrnn.nn.model import Model, load_model
from streamrnn.nn.modelfile import MAX_MODEL_BYTES, resolve_model_path
from streamrnn.runtime.events import EventDetector
from streamrnn.runtime.pipeline import ModelProcessor, Pipeline
from streamrnn.stats import Stats
from streamrnn.transport import wire
from streamrnn.transport.sinks import Sink
from streamrnn.transport.sources import Chunk, FileSource, new_epoch, to_float32

log = logging.getLogger(__name__)

# file name endings (lower case) that a folder input collects, recursively: what libsndfile reads
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd",
                    ".caf", ".w64", ".rf64")
# --write names -> the ending added to the file's output stem (OUT/REL)
OUTPUT_SUFFIXES = {"segments": ".segments.jsonl", "audacity": ".labels.txt", "rttm": ".rttm", "csv": ".csv",
                   "npy": ".npy"}
RECORD_SUFFIX = ".batch.json"
RECORD_FORMAT = "streamrnn-batch/1"
SUMMARY_NAME = "summary.json"
ALL_SEGMENTS_NAME = "segments.jsonl"  # every file's segments, in input order (with --write segments)
MAX_MANIFEST_BYTES = 64 * 2**20  # a JSONL manifest larger than this is refused (the trainer's limit)
# s of audio a bidirectional model reads at once (whole file in memory: 4 h of 16 kHz mono is 0.9 GB of
# samples plus 0.2 GB of log-mel frames); longer files fail with this limit named
MAX_OFFLINE_SECONDS = 4 * 3600.0
MAX_CHANNELS = 64  # channels of a signal given to speech_segments: more is a (channels, n) array
STREAM_ID = "file0"  # the file source's stream id, as `stream --source file:` names it
IN_FLIGHT_PER_WORKER = 2  # tasks queued per worker: enough to keep it busy, bounded memory for huge corpora


# --- settings -----------------------------------------------------------------------------------
def segment_params(threshold: float = EventParams.on_threshold, off_threshold: float | None = None,
                   min_speech: float = EventParams.min_on, min_silence: float = EventParams.min_off,
                   max_segment: float = EventParams.max_segment) -> EventParams:
    """``speech_segments``' arguments as the ``[events]`` settings of ``stream`` (``EventParams``).

    ``threshold`` -> ``on_threshold``; ``off_threshold`` None -> ``max(0, threshold - 0.15)``
    (0.35 for 0.5: the events' defaults); ``min_speech`` -> ``min_on``, ``min_silence`` ->
    ``min_off``, ``max_segment`` -> ``max_segment`` (seconds).  ConfigError for bad values.

    >>> segment_params(0.6).off_threshold, segment_params().on_threshold
    (0.45, 0.5)
    """
    off = max(0.0, round(threshold - 0.15, 12)) if off_threshold is None else off_threshold
    return EventParams(on_threshold=threshold, off_threshold=off, min_on=min_speech, min_off=min_silence,
                       max_segment=max_segment)


def check_pad(pad: float) -> float:
    if not (isinstance(pad, (int, float)) and math.isfinite(pad) and 0 <= pad <= 60):
        raise ConfigError(f"pad must be between 0 and 60 seconds, got {pad!r}")
    return float(pad)


def parse_write(text) -> tuple[str, ...]:
    """'segments,npy' (or a sequence of names) -> ('segments', 'npy'); ConfigError naming an unknown one."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    bad = [n for n in names if n not in OUTPUT_SUFFIXES]
    if bad or not names:
        raise ConfigError(f"--write {text!r}: choose from {', '.join(OUTPUT_SUFFIXES)} (comma-separated)")
    return tuple(dict.fromkeys(names))


# --- one file through the model ---------------------------------------------------------------------
class _Collect(Sink):
    """Keeps one file's prediction rows and events (the pipeline's messages, as the jsonl sink sees them)."""

    def __init__(self):
        super().__init__()
        self.clear()

    def clear(self):
        self.preds, self.events = [], []

    def write(self, m):
        if m.kind == wire.PRED:
            self.preds.append(m.data.copy())  # a view of the bank's output buffer: reused next call
        elif m.kind == wire.EVENT:
            self.events.append(m.meta)


class _Warnings(logging.Handler):
    """The streamrnn warnings logged while one file runs (a truncated file, NaN samples...)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@dataclasses.dataclass
class Prediction:
    """One file's (or signal's) run: ``y`` (T, O) float32 frame predictions (frame k at k /
    ``frame_rate`` s), the end events of the hysteresis, and the input's ``duration`` (s)."""

    y: np.ndarray
    events: list
    frame_rate: float
    duration: float
    labels: list
    rate: float = 0.0
    channels: int = 0
    warnings: list = dataclasses.field(default_factory=list)


class FileRunner:
    """A model and its pipeline, built once and reused for file after file (one per worker).

    ``run_file(path)`` is ``stream --source file:PATH``: the same source, pipeline and events;
    ``run_signal(x, rate)`` the same pipeline on samples already in memory, in the file source's
    1 s blocks.  A bidirectional model reads the whole signal through ``model.forward``.
    Raises ConfigError for a model that cannot make segments from audio, AudioError for a bad file.
    """

    def __init__(self, model: Model, events: EventParams | None = None):
        events = events or EventParams()
        if model.arch.vocab_size is not None:
            raise ConfigError(f"model {model.name!r} is a token model (it reads text), not an audio model")
        if model.frontend is None:
            raise ConfigError(f"model {model.name or '(unnamed)'!r} takes feature frames ({model.input_size} values "
                              "per frame, no audio front end): batch and speech_segments need a model with a front end")
        self.model, self.events = model, dataclasses.replace(events, enabled=True)
        self.labels = list(model.labels) if model.labels else [f"y{j}" for j in range(model.output_size)]
        self.segments_ok = model.activation == "sigmoid"
        self.frame_rate = as_frontend(model.frontend).frame_rate  # frames/s whatever the input rate
        self._collect = _Collect()
        self.config = StreamConfig(max_streams=1, events=self.events)
        self.pipeline = None if model.bidirectional else Pipeline(
            None, [self._collect], ModelProcessor(model, self.config), config=self.config, stats=Stats())

    # one implementation for files and arrays: the pipeline reads chunks, whatever made them
    def _run_chunks(self, chunks, rate, channels, duration_of) -> Prediction:
        p = self.pipeline
        p.close_all("reset")  # a previous file that failed mid-way
        self._collect.clear()
        bad0 = p.stats.get("bad", "input") + p.stats.get("bad", "content")
        for block in chunks:
            p.process_many(block)
        p.close_all("end of stream")
        bad = p.stats.get("bad", "input") + p.stats.get("bad", "content") - bad0
        if bad:
            raise InputError(f"{bad} block(s) could not be run through the model (see the warnings)")
        c = self._collect
        y = (np.concatenate(c.preds) if c.preds else np.zeros((0, self.model.output_size), np.float32))
        return Prediction(y, [e for e in c.events if e["event"] == "end"], self.frame_rate, duration_of(),
                          self.labels, rate, channels)

    def run_file(self, path) -> Prediction:
        with _captured_warnings() as warned:
            if self.pipeline is None:
                pred = self._offline_file(path)
            else:
                src = FileSource(path, stream_id=STREAM_ID, block_ms=self.config.block_ms, realtime=False,
                                 stats=self.pipeline.stats)
                try:
                    src.open()

                    def reads():
                        while not src.exhausted:
                            yield src.read(0.0)

                    pred = self._run_chunks(reads(), src.rate, src.channels, lambda: src.next_index / src.rate)
                finally:
                    src.close()
        pred.warnings = warned
        return pred

    def run_signal(self, x, rate: float) -> Prediction:
        x = np.asarray(x)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[0] == 0 or x.dtype.kind not in "fi" or (x.dtype.kind == "i" and x.dtype != np.int16):
            raise InputError(f"audio must be float or int16 samples, (n,) or (n, channels) with n > 0; got "
                             f"{x.dtype} of shape {x.shape}")
        if x.shape[1] > MAX_CHANNELS:
            raise InputError(f"audio of shape {x.shape} has {x.shape[1]} channels (at most {MAX_CHANNELS}): "
                             "samples go down the first axis, (n, channels), not (channels, n)")
        x = to_float32(x)  # as the file and stdin sources convert (int16 / 32768)
        rate = float(rate)
        if self.pipeline is None:
            return self._offline(x, rate)
        block = max(1, int(rate))  # the file source's block when not paced: 1 s
        epoch = new_epoch()

        def chunks():
            for i in range(0, x.shape[0], block):
                yield [Chunk(STREAM_ID, epoch, "audio", x[i:i + block], rate, i, time.time(), seq=i // block,
                             end=i + block >= x.shape[0])]

        return self._run_chunks(chunks(), rate, x.shape[1], lambda: x.shape[0] / rate)

    def _offline_file(self, path) -> Prediction:
        with AudioFile(path, nonfinite="zero") as f:  # the file source's reader and rules
            if f.frames / f.rate > MAX_OFFLINE_SECONDS:
                raise InputError(f"{path}: {f.frames / f.rate:.0f} s of audio is above the {MAX_OFFLINE_SECONDS:.0f} s "
                                 "a bidirectional model reads at once (it holds the whole file in memory)")
            blocks = []
            while True:
                b = f.read(1 << 16)
                if len(b):
                    blocks.append(b)
                if len(b) < 1 << 16:
                    break
            f.finish()
            return self._offline(np.concatenate(blocks), f.rate)

    def _offline(self, x, rate) -> Prediction:
        """A bidirectional model: the whole signal's frames through ``model.forward``, then the events."""
        fs = FeatureStream(self.model.frontend, rate, nonfinite="zero")
        step = max(1, int(rate))
        feats = [fs.push(x[i:i + step]) for i in range(0, x.shape[0], step)]
        y = self.model.forward(np.concatenate(feats)).astype(np.float32, copy=False)
        ends = []
        if self.segments_ok:
            det = EventDetector(self.labels, self.events, fs.frame_rate)
            ends = [e for e in det.push(y) + det.flush() if e["event"] == "end"]
        return Prediction(y, ends, fs.frame_rate, x.shape[0] / rate, self.labels, rate, x.shape[1])


class _captured_warnings:
    """Collect the warnings streamrnn logs inside the block (they go to the file's result, once)."""

    def __enter__(self):
        self.h = _Warnings()
        self.lg = logging.getLogger("streamrnn")
        self.prop = self.lg.propagate
        self.lg.addHandler(self.h)
        self.lg.propagate = False
        return self.h.messages

    def __exit__(self, *exc):
        self.lg.removeHandler(self.h)
        self.lg.propagate = self.prop


# --- segments ---------------------------------------------------------------------------------------
def segments_of(pred: Prediction, pad: float = 0.0) -> list[dict]:
    """The segments of a run: one per end event, ``start``/``end`` in s (6 decimals), ``label`` and
    ``score`` (the mean probability of that label over the segment's frames, before padding).

    Padding (Silero's rule): each segment grows by ``pad`` s on both sides, clipped to [0, duration];
    where two segments of a label are less than 2 * pad apart, each grows by half the gap, so they
    meet and never overlap (as many segments as events)."""
    col = {name: j for j, name in enumerate(pred.labels)}
    raw = []
    for e in pred.events:
        j = col[e["label"]]
        s, t = int(e["start_frame"]), int(e["frame"])
        score = float(pred.y[s:t, j].mean(dtype=np.float64)) if t > s else 0.0
        raw.append([s / pred.frame_rate, t / pred.frame_rate, e["label"], score])
    raw.sort(key=lambda r: (r[2], r[0]))
    out = []
    for i, (s, t, label, score) in enumerate(raw):
        if pad:
            prev = raw[i - 1] if i and raw[i - 1][2] == label else None
            nxt = raw[i + 1] if i + 1 < len(raw) and raw[i + 1][2] == label else None
            s = max(0.0, s - (pad if prev is None else min(pad, (s - prev[1]) / 2)))
            t = min(pred.duration, t + (pad if nxt is None else min(pad, (nxt[0] - t) / 2)))
        out.append({"start": round(s, 6), "end": round(t, 6), "label": label, "score": round(score, 6)})
    out.sort(key=lambda r: (r["start"], r["label"]))
    return out


def speech_seconds(segments) -> float:
    """Seconds covered by any segment (their union: overlapping labels count once)."""
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted((g["start"], g["end"]) for g in segments):
        if cur_e is None or s > cur_e:
            total += 0.0 if cur_e is None else cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return total + (0.0 if cur_e is None else cur_e - cur_s)


def speech_segments(audio, sample_rate: float | None = None, model="vad", threshold: float = EventParams.on_threshold,
                    min_speech: float = EventParams.min_on, min_silence: float = EventParams.min_off,
                    pad: float = 0.0, max_segment: float = EventParams.max_segment,
                    off_threshold: float | None = None) -> list[dict]:
    """Speech (or any label's) segments of a signal or an audio file, in seconds.

    ``audio``: a file path (any format soundfile reads; ``sample_rate`` not needed) or samples (n,)
    or (n, channels) (float in [-1, 1] or int16) at ``sample_rate`` Hz.  ``model``: a bundled name,
    a model file or a ``Model`` (sigmoid outputs, with an audio front end).  The signal runs through
    exactly what ``streamrnn stream`` runs (a bidirectional model: ``model.forward`` over the whole
    signal) and its start/end events become segments, with the ``[events]`` settings mapped:
    ``threshold`` = ``on_threshold``, ``off_threshold`` (default ``threshold - 0.15``),
    ``min_speech`` = ``min_on``, ``min_silence`` = ``min_off``, ``max_segment`` (seconds).  A segment
    starts at the first frame whose probability reached ``threshold`` and ends at the first frame of
    the dip below ``off_threshold`` that ended it (frame k is at k / frame_rate s, 10 ms for the
    bundled VAD); ``pad`` s are then added on both sides (see ``segments_of``).

    Returns ``[{"start": s, "end": s, "label": name, "score": mean probability}, ...]`` sorted by
    start.  Raises AudioError (a missing or broken file), ConfigError (bad settings, a model that
    cannot make segments), InputError (bad samples).

    >>> import streamrnn
    >>> from streamrnn.transport.sources import demo_path
    >>> segs = streamrnn.speech_segments(demo_path(), min_speech=0.3)
    >>> segs[0]["label"], 0 <= segs[0]["start"] < segs[0]["end"], len(segs) > 2
    ('speech', True, True)
    """
    params = segment_params(threshold, off_threshold, min_speech, min_silence, max_segment)
    pad = check_pad(pad)
    m = model if isinstance(model, Model) else load_model(model)
    runner = FileRunner(m, params)
    if not runner.segments_ok:
        raise ConfigError(f"model {m.name!r} has {m.activation} outputs: segments need sigmoid probabilities")
    if isinstance(audio, (str, os.PathLike)):
        pred = runner.run_file(audio)
    else:
        if sample_rate is None:
            raise ConfigError("sample_rate is needed with samples (it is read from the file for a path)")
        pred = runner.run_signal(audio, sample_rate)
    return segments_of(pred, pad)


# --- inputs -----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Item:
    """One audio file of the corpus: ``path`` (absolute) and ``rel`` (POSIX path relative to the
    input it was found under: the name its outputs mirror)."""

    path: str
    rel: str


def _is_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def _safe_rel(rel: str) -> str:
    """A relative POSIX path with no '..' or empty parts (outputs stay under OUT)."""
    parts = [p for p in Path(rel).as_posix().split("/") if p not in ("", ".", "..")]
    return "/".join(parts)


def _manifest_items(path: Path) -> list[Item]:
    """JSON lines ``{"audio": PATH, ...}``, paths relative to the manifest's folder (the trainer's rule)."""
    text = read_text_file(path, MAX_MANIFEST_BYTES, "manifest", ConfigError)
    base = path.parent.resolve()
    out = []
    for i, rec in json_lines(text, path):
        if not isinstance(rec, dict) or not isinstance(rec.get("audio"), str) or not rec["audio"]:
            raise ConfigError(f'{path}:{i}: expected an object with an "audio" path')
        p = (base / rec["audio"]).resolve()
        rel = os.path.relpath(p, base)
        out.append(Item(str(p), _safe_rel(rel if not rel.startswith("..") else str(p))))
    return out


def find_inputs(inputs) -> list[Item]:
    """Expand files, folders (recursively, by ``AUDIO_EXTENSIONS``), JSON-lines manifests (``.jsonl``)
    and glob patterns into ``Item``s, in the order given (each folder and glob sorted).  The same file
    reached twice is kept once.  ConfigError for an input that is none of them, or when two
    different files would write the same outputs (the same relative path under two inputs)."""
    items: list[Item] = []
    for inp in inputs:
        p = Path(inp)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in AUDIO_EXTENSIONS and q.is_file())
            items += [Item(str(q.resolve()), q.relative_to(p).as_posix()) for q in found]
        elif p.is_file() and p.suffix.lower() == ".jsonl":
            items += _manifest_items(p)
        elif p.is_file() or (p.exists() and not p.is_dir()):
            items.append(Item(str(p.resolve()), p.name))
        elif _is_glob(str(inp)):
            hits = sorted(h for h in glob.glob(str(inp), recursive=True) if Path(h).is_file())
            if not hits:
                raise ConfigError(f"input {inp!r}: the pattern matches no file")
            pre = _prefix_parts(str(inp))
            base = Path(*pre) if pre else Path(".")
            items += [Item(str(Path(h).resolve()), _safe_rel(os.path.relpath(h, base))) for h in hits]
        else:
            raise ConfigError(f"input {inp!r}: no such file, folder or matching glob pattern")
    seen: dict[str, Item] = {}
    by_rel: dict[str, Item] = {}
    out = []
    for it in items:
        if it.path in seen:
            continue
        other = by_rel.get(it.rel)
        if other is not None:
            raise ConfigError(f"{other.path} and {it.path} would both write the outputs of {it.rel!r}: "
                              "run them with separate --out folders, or give their common parent folder")
        seen[it.path] = by_rel[it.rel] = it
        out.append(it)
    return out


def _prefix_parts(pattern: str) -> list[str]:
    """The folders of a glob pattern before its first wildcard part."""
    parts = Path(pattern).parts
    keep = []
    for q in parts[:-1]:
        if _is_glob(q):
            break
        keep.append(q)
    return keep


# --- outputs ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def _replacing(path: Path):
    """Yields a temporary path beside ``path``; what was written there replaces ``path`` at the end
    (``os.replace``: readers see the old file or the new one, never a part), or is removed on error."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temps(stem: Path) -> int:
    """Remove the temporary files of a file's outputs left by a process that no longer runs (a
    worker killed mid-write); returns how many."""
    n = 0
    for tmp in stem.parent.glob(f".{glob.escape(stem.name)}.*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            n += 1
    return n


def _atomic_write(path: Path, write) -> None:
    """``write(f)`` (a binary file) into ``path`` atomically, synced to disk before it replaces it."""
    with _replacing(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _text(s: str):
    return lambda f: f.write(s.encode("utf-8"))


def _rttm_id(rel: str) -> str:
    return "".join("_" if c.isspace() else c for c in rel) or "_"


def format_outputs(rel: str, pred: Prediction, segments: list[dict], write) -> dict[str, object]:
    """{--write name: str text or ndarray} of one file (the exact fields are in docs/batch.md)."""
    out: dict[str, object] = {}
    for name in write:
        if name == "segments":
            out[name] = "".join(json.dumps({"file": rel, **g}) + "\n" for g in segments)
        elif name == "audacity":
            out[name] = [(g["start"], g["end"], g["label"]) for g in segments]
        elif name == "rttm":
            fid = _rttm_id(rel)
            out[name] = "".join(f"SPEAKER {fid} 1 {g['start']:.3f} {g['end'] - g['start']:.3f} <NA> <NA> "
                                f"{_rttm_id(g['label'])} <NA> <NA>\n" for g in segments)
        elif name == "csv":
            import csv
            import io

            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(["file", "start", "end", "label", "score"])
            w.writerows([rel, g["start"], g["end"], g["label"], g["score"]] for g in segments)
            out[name] = buf.getvalue()
        elif name == "npy":
            out[name] = np.ascontiguousarray(pred.y, dtype=np.float32)
    return out


def write_file_outputs(stem: Path, rel: str, pred: Prediction, segments: list[dict], write, record: dict) -> None:
    """Every requested output of one file, each atomically, then its record (last: it marks it done)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(stem)
    for name, content in format_outputs(rel, pred, segments, write).items():
        path = stem.with_name(stem.name + OUTPUT_SUFFIXES[name])
        if name == "npy":
            _atomic_write(path, lambda f, a=content: np.save(f, a, allow_pickle=False))
        elif name == "audacity":
            with _replacing(path) as tmp:
                write_labels(tmp, content)  # the format's one writer (audio/files.py)
        else:
            _atomic_write(path, _text(content))
    _atomic_write(stem.with_name(stem.name + RECORD_SUFFIX), _text(json.dumps(record, indent=1) + "\n"))


def _source_id(path: str) -> dict:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def read_record(stem: Path) -> dict | None:
    """The record of a finished file, or None (none, unreadable or not ours)."""
    try:
        rec = json.loads(stem.with_name(stem.name + RECORD_SUFFIX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("format") == RECORD_FORMAT else None


def is_done(stem: Path, item: Item, job: dict) -> dict | None:
    """The record when the file's outputs were made by the same model file, settings and source
    file, and every requested output exists; else None (the file is to be done)."""
    rec = read_record(stem)
    if rec is None:
        return None
    try:
        same = (rec.get("model_sha256") == job["model_sha256"] and rec.get("settings") == job["settings"]
                and rec.get("source") == _source_id(item.path) and set(job["write"]) <= set(rec.get("outputs", ()))
                and all(stem.with_name(stem.name + OUTPUT_SUFFIXES[n]).is_file() for n in job["write"]))
    except OSError:
        return None
    return rec if same else None


# --- the work of one file (in whichever process runs it) ---------------------------------------------
_WORKER: dict = {}  # per worker process: the FileRunner of (model path, sha256, settings)


def _runner(job: dict) -> FileRunner:
    key = (job["model_path"], job["model_sha256"], json.dumps(job["settings"], sort_keys=True))
    if _WORKER.get("key") != key:
        model = load_model(job["model_path"], max_bytes=job["max_model_bytes"])
        _WORKER.update(key=key, runner=FileRunner(model, EventParams(**job["settings"]["events"])))
    return _WORKER["runner"]


def process_file(job: dict, task: dict) -> dict:
    """Run one file and write its outputs; a result dict (``status`` "done" or "failed" with ``reason``).
    Never raises for a bad file: it is one failure of the run."""
    t0 = time.process_time()
    res = {"file": task["rel"], "path": task["path"], "status": "failed"}
    try:
        runner = _runner(job)
        pred = runner.run_file(task["path"])
        segs = segments_of(pred, job["settings"]["pad"]) if runner.segments_ok else []
        rec = {"format": RECORD_FORMAT, "file": task["rel"], "model_sha256": job["model_sha256"],
               "settings": job["settings"], "source": _source_id(task["path"]), "outputs": list(job["write"]),
               "audio_seconds": pred.duration, "speech_seconds": speech_seconds(segs), "segments": len(segs),
               "frames": int(pred.y.shape[0]), "rate": pred.rate, "channels": pred.channels,
               "warnings": pred.warnings, "cpu_seconds": 0.0}
        rec["cpu_seconds"] = round(time.process_time() - t0, 6)
        write_file_outputs(Path(task["stem"]), task["rel"], pred, segs, job["write"], rec)
    except (StreamRNNError, OSError, ValueError, RuntimeError, MemoryError) as e:
        reason = str(e) or type(e).__name__
        res["reason"] = reason.removeprefix(task["path"] + ": ")  # the line names the file once
    else:
        res.update(status="done", **{k: rec[k] for k in ("audio_seconds", "speech_seconds", "segments", "warnings")})
    res["cpu_seconds"] = time.process_time() - t0
    return res


def _init_pool_worker() -> None:
    # Ctrl-C on a terminal reaches the whole process group: the parent alone decides (it lets the
    # files in progress finish); SIGTERM still ends a worker, cleaning up its temporary files.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_signal)


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)  # unwinds: the temporary file of the output in progress is removed


# --- engines: in this process, local processes, Ray tasks ----------------------------------------------
def _record_result(task: dict, rec: dict, status: str) -> dict:
    """A file's result from its record (a file done before, or by a worker whose pool broke)."""
    return {"file": task["rel"], "path": task["path"], "status": status, "warnings": rec.get("warnings", []),
            "cpu_seconds": rec.get("cpu_seconds", 0.0) if status == "done" else 0.0,
            **{k: rec.get(k, 0.0) for k in ("audio_seconds", "speech_seconds", "segments")}}


def _run_inline(job, tasks, done, stop):
    for t in tasks:
        if stop.is_set():
            return
        done(process_file(job, t))


def _windowed(queue, stop, slots: int, submit, finished, done, cancel=None) -> None:
    """Run the tasks of ``queue`` (a deque) with at most ``slots`` in flight (``submit(task) -> handle``);
    ``finished(handles)`` waits a little and returns ``[(handle, get)]`` of those done.  Once ``stop``
    is set no task is submitted and ``cancel(handle)`` withdraws those not yet started (True when it
    did); the rest finish.  When ``submit`` raises, the task goes back to the queue and the tasks in
    flight are collected (as failures, if their workers are gone) before the error propagates."""
    running: dict = {}
    while True:
        while not stop.is_set() and len(running) < slots and queue:
            t = queue.popleft()
            try:
                running[submit(t)] = t
            except Exception:
                queue.appendleft(t)
                while running:
                    for h, get in finished(list(running)):
                        done(_result_of(get, running.pop(h)))
                raise
        if stop.is_set() and cancel is not None:
            for h in [h for h in running if cancel(h)]:
                running.pop(h)
        if not running:
            return
        for h, get in finished(list(running)):
            done(_result_of(get, running.pop(h)))


def _run_pool(job, tasks, done, stop, workers: int):
    import multiprocessing

    died = []  # results of files in flight when a worker died: judged once every worker has stopped
    retried: set = set()

    def collect(res):
        if res.get("worker_died"):
            died.append(res)
        else:
            done(res)

    def judge():
        # A dead worker breaks the pool: every file in flight fails, also those a surviving worker went on
        # to finish (their records say so: the executor's shutdown joined the workers) and those not yet
        # started.  The others run once more (as Ray retries a task once); a file in flight when workers
        # died twice is a failure (it may be what kills them).
        for res in died:
            task = by_rel[res["file"]]
            remove_stale_temps(Path(task["stem"]))  # a worker killed mid-write left its temporary file
            rec = is_done(Path(task["stem"]), Item(task["path"], task["rel"]), job)
            if rec is not None:
                done(_record_result(task, rec, "done"))
            elif task["rel"] in retried or stop.is_set():
                done(res)
            else:
                retried.add(task["rel"])
                queue.appendleft(task)
        died.clear()

    by_rel = {t["rel"]: t for t in tasks}
    queue = collections.deque(tasks)
    while True:
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_init_pool_worker) as ex:
                _windowed(queue, stop, workers * IN_FLIGHT_PER_WORKER, lambda t: ex.submit(process_file, job, t),
                          lambda hs: [(f, f.result) for f in wait(hs, timeout=0.2, return_when=FIRST_COMPLETED)[0]],
                          collect, cancel=lambda f: f.cancel())
        except BrokenProcessPool:
            pass  # submitting found the pool broken: judged below, then fresh workers go on
        if died:
            log.error("a worker process died: the %d file(s) it and the others had in flight run again on fresh "
                      "workers (once)", len(died))
        judge()
        if not queue or stop.is_set():
            return


def _result_of(get, task) -> dict:
    """A task's result; an error that escaped ``process_file`` (a crashed worker, a bug) is one failure."""
    try:
        return get()
    except Exception as e:  # noqa: BLE001 - any failure of one file must not stop the corpus
        died = isinstance(e, BrokenProcessPool)
        if not died:  # a bug: keep its traceback
            log.error("%s: %s", task["rel"], e, exc_info=True)
        why = ("its worker process died twice while it ran (killed, out of memory, or a crash while decoding)"
               if died else f"{type(e).__name__}: {e}")
        return {"file": task["rel"], "path": task["path"], "status": "failed", "reason": why, "cpu_seconds": 0.0,
                "worker_died": died}


def _run_ray(job, tasks, done, stop, address: str | None, workers: int | None):
    import ray  # the `ray` extra, imported only for --ray

    started = not ray.is_initialized()
    if started:
        if address in (None, "", "local"):
            # a private local cluster, reachable from this machine only ("local": never another user's
            # cluster that Ray would otherwise find on this machine)
            ray.init(address="local", num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1",
                     log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1, max_retries=1)(process_file)
        slots = max(1, int(ray.cluster_resources().get("CPU", 1))) * IN_FLIGHT_PER_WORKER
        job_ref = ray.put(job)
        _windowed(collections.deque(tasks), stop, slots, lambda t: remote.remote(job_ref, t),
                  lambda hs: [(r, lambda r=r: ray.get(r)) for r in ray.wait(hs, num_returns=1, timeout=0.2)[0]],
                  done)  # tasks already sent run to the end (each writes its outputs atomically)
    finally:
        if started:
            ray.shutdown()


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def run_batch(inputs, model, out, *, write=("segments",), events: EventParams | None = None, pad: float = 0.0,
              workers: int | None = None, ray: str | None = None, use_ray: bool = False, force: bool = False,
              max_model_bytes: int = MAX_MODEL_BYTES, stop: threading.Event | None = None, on_start=None,
              on_result=None) -> dict:
    """Run ``model`` over every file of ``inputs`` into ``out``: what ``streamrnn batch`` runs.

    ``inputs``: files, folders, ``.jsonl`` manifests, glob patterns (``find_inputs``).  ``write``:
    names of ``OUTPUT_SUFFIXES``.  ``events``/``pad``: the segments' settings (``EventParams``, s).
    ``workers``: local processes (default: every core; 1 runs in this process); ``use_ray``: Ray
    tasks instead, on the cluster at ``ray`` (None: a private local one on 127.0.0.1).  Files whose
    record matches are skipped unless ``force``.  ``stop`` (set by a signal handler): no new file
    starts, those in progress finish.  ``on_start(info)`` gets ``{"files", "todo", "skipped"}``;
    ``on_result(res)`` each file's result as it finishes.  Returns the summary, also written to
    ``out/summary.json``.  Raises ConfigError (bad inputs or settings, a model that cannot run on
    audio), ModelFileError (a bad model file) before any file runs; a bad audio file is a failure
    in the summary, never an exception.
    """
    t_wall = time.monotonic()
    write = parse_write(write)
    events = dataclasses.replace((events or EventParams()).validate(), enabled=True)
    pad = check_pad(pad)
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    stop = stop or threading.Event()
    model_path = resolve_model_path(model)
    m = load_model(model_path, max_bytes=max_model_bytes)  # checked here, once: a bad model is a usage error
    probe = FileRunner(m, events)
    seg_outputs = [n for n in write if n != "npy"]
    if seg_outputs and not probe.segments_ok:
        raise ConfigError(f"model {m.name!r} has {m.activation} outputs: --write {','.join(seg_outputs)} needs sigmoid "
                          "probabilities (write npy only)")
    items = find_inputs(inputs)
    if not items:
        raise ConfigError(f"no audio files in {', '.join(map(str, inputs))} (folders are searched for "
                          f"{', '.join(AUDIO_EXTENSIONS)})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    job = {"model_path": str(Path(model_path).resolve()), "model_sha256": file_sha256(model_path),
           "max_model_bytes": max_model_bytes, "write": list(write),
           "settings": {"events": {k: v for k, v in dataclasses.asdict(events).items() if k != "enabled"},
                        "pad": pad}}
    results: dict[str, dict] = {}
    tasks = []
    for it in items:
        stem = out / it.rel
        rec = None if force else is_done(stem, it, job)
        if rec is not None:
            results[it.rel] = _record_result({"rel": it.rel, "path": it.path}, rec, "skipped")
        else:
            tasks.append({"path": it.path, "rel": it.rel, "stem": str(stem)})
    if on_start is not None:
        on_start({"files": len(items), "todo": len(tasks), "skipped": len(items) - len(tasks)})

    def done(res):
        results[res["file"]] = res
        if on_result is not None:
            on_result(res)

    if use_ray:
        engine = "ray"
        _run_ray(job, tasks, done, stop, ray, workers)
    elif workers == 1 or len(tasks) <= 1:
        engine = "inline"
        _WORKER["runner"], _WORKER["key"] = probe, (job["model_path"], job["model_sha256"],
                                                    json.dumps(job["settings"], sort_keys=True))
        _run_inline(job, tasks, done, stop)
    else:
        engine = "processes"
        _run_pool(job, tasks, done, stop, min(workers, len(tasks)))
    summary = _summary(items, results, job, engine, workers, time.monotonic() - t_wall, stop.is_set())
    _atomic_write(out / SUMMARY_NAME, _text(json.dumps(summary, indent=1) + "\n"))
    if "segments" in write:
        _write_all_segments(out, items, results)
    return summary


def _summary(items, results, job, engine, workers, wall, interrupted) -> dict:
    res = [results.get(it.rel) for it in items]
    done = [r for r in res if r and r["status"] == "done"]
    ok = [r for r in res if r and r["status"] in ("done", "skipped")]
    failed = [r for r in res if r and r["status"] == "failed"]
    audio = sum(r["audio_seconds"] for r in ok)
    audio_run = sum(r["audio_seconds"] for r in done)
    cpu = sum(r.get("cpu_seconds", 0.0) for r in res if r and r["status"] != "skipped")
    return {
        "files": len(items), "done": len(done), "skipped": len(ok) - len(done), "failed": len(failed),
        "not_run": sum(r is None for r in res), "interrupted": bool(interrupted and any(r is None for r in res)),
        "audio_hours": audio / 3600, "speech_hours": sum(r["speech_seconds"] for r in ok) / 3600,
        "audio_hours_this_run": audio_run / 3600, "cpu_seconds": cpu, "wall_seconds": wall,
        "real_time_factor": cpu / audio_run if audio_run else None,
        "failures": [{"file": r["file"], "reason": r["reason"]} for r in failed],
        "model": {"path": job["model_path"], "sha256": job["model_sha256"]}, "settings": job["settings"],
        "write": job["write"], "engine": engine, "workers": workers,
    }


def _write_all_segments(out: Path, items, results) -> None:
    """OUT/segments.jsonl: the per-file segment files of every finished file, in input order."""
    parts = []
    for it in items:
        r = results.get(it.rel)
        if r and r["status"] in ("done", "skipped"):
            p = out / (it.rel + OUTPUT_SUFFIXES["segments"])
            try:
                parts.append(p.read_text(encoding="utf-8"))
            except OSError as e:
                log.warning("%s: left out of %s: %s", p, ALL_SEGMENTS_NAME, e)
    _atomic_write(out / ALL_SEGMENTS_NAME, _text("".join(parts)))

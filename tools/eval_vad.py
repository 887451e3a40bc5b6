#!/usr/bin/env python3
"""Compare voice-activity detectors on the same files and the same frames.

Detectors:

* **streamrnn** models (``--model``, repeatable: files or bundled names), run through the
  real-time path ``model.audio_stream(rate).push(samples)`` in 100 ms chunks;
* **Silero VAD** (``silero`` peer): the ``silero_vad.onnx`` file bundled in the
  ``silero-vad`` package, run with ``onnxruntime`` directly. The package's own loader
  imports torch, so it is not called: the tool feeds the ONNX model exactly as Silero's
  ``OnnxWrapper`` does (512-sample chunks at 16 kHz, each prefixed with the previous
  chunk's last 64 samples (zeros before the first), the (2, 1, 128) state carried; the
  last chunk zero-padded as ``OnnxWrapper.audio_forward`` pads). Install:
  ``pip install --no-deps silero-vad`` plus ``pip install onnxruntime``;
* **TEN VAD** (``ten`` peer, ``pip install ten-vad``; its library needs Debian's
  ``libc++1``): hop 160 samples (10 ms) of int16, its probability output (its first
  hop returns -1, "no output yet", counted as 0);
* **WebRTC VAD** (``webrtc`` peer, ``pip install webrtcvad-wheels``): modes ``--modes``
  (default all four), 10 ms frames of int16, binary decisions.

A peer that cannot be loaded is skipped with one line naming it and the install that
brings it; the rest still run.

Frames and alignment. Everything is scored on the model's front-end frames: frame k
covers samples [k*hop, k*hop+win) (16 kHz: hop 160 = 10 ms, win 400 = 25 ms), so a
file of N samples has 1 + (N-win)//hop frames; its time is its centre,
t_k = (k*hop + win/2) / rate. Its target is 1 when speech labels cover at least half
of its window (``streamrnn.audio.files.frame_targets``). A peer that consumes blocks of
B samples at 16 kHz (block j = samples [j*B, (j+1)*B)) and gives one output per block
is mapped by the time of the frame centre: frame k gets the output of the block that
holds t_k, j = floor(t_k * 16000 / B). So WebRTC (B = 160) and TEN (B = 160) frame k
gets block k+1, the 10 ms in the middle of the model's 25 ms window; Silero (B = 512)
frame k gets chunk floor((160k + 200) / 512), the 32 ms chunk around the frame's centre.
Each output is thus judged on the audio it has just consumed, like the model's frame,
which ends 12.5 ms after its centre; a peer sees at most one block past the centre
(WebRTC and TEN 7.5 ms, Silero up to 32 ms), never less than the audio it decides on.
Indexing by frame number instead (j = k) would judge WebRTC on audio 7.5 ms earlier than
the target, a systematic onset/offset bias against it. Peers run at 16 kHz: other rates
are resampled with soxr (HQ) first, outside the timing. No latency is compensated: the
causal peers answer late (on 12 files of the old make_vad_corpus test split, Silero's
frame ROC-AUC is 0.960 as mapped and 0.972 judged 60 ms later, TEN's 0.922 and 0.936),
which is what a live user gets; the onset/offset delays report it.

Metrics per detector (a frame is speech when p >= ``--threshold``, default 0.5):

* frame ROC-AUC pooled over files, precision, recall, F1, and the best F1 over all
  thresholds with that threshold (``streamrnn.train.metrics``). A binary detector's
  ROC-AUC is the area under a one-point curve, (TPR + TNR) / 2;
* false-alarm share per negative kind (``--neg``): the share of a kind's frames with
  p >= threshold, over every file of that kind in the negatives manifest; the kind of
  each file is the ``"kind"`` field of the ``NEG_meta.jsonl`` beside it (same line
  order);
* segments as ``streamrnn stream`` emits them: the pipeline's ``Hysteresis`` with the
  CLI's default event settings (``StreamConfig().event_params()``: on 0.5, off 0.35,
  min_on 0.1 s, min_off 0.2 s, max_segment 30 s), run over each file from a fresh state
  and flushed at its end, on every detector's frame scores. Labelled segments are the
  runs of target frames. Missed segments: labelled segments that share no frame with a
  detected segment. False starts: detected segments that share no frame with a
  labelled one, per hour of audio (all of it), on the speech set and on the negatives;
* responsiveness: for each labelled segment [s, e) (seconds, overlapping labels merged),
  onset delay = t_k - s for the first frame k with s <= t_k < e and p >= threshold;
  offset delay = t_k - e for the first frame with e <= t_k < s_next (the next
  segment's start, or the end of the file) and p < threshold. A boundary whose window
  holds no frame is not counted; one whose window holds frames but none that
  qualifies is a miss, counted separately. Median and 90th percentile (NumPy's linear
  interpolation) in ms. The resolution is one frame (10 ms), and coarser for peers
  with longer blocks (Silero 32 ms);
* CPU seconds per audio second: ``time.process_time`` around the detector's own calls
  (the model's ``push()`` including its resampler and front end; the peers' ``run`` /
  ``process`` / ``is_speech`` calls, not their int16 conversion), over the speech set
  and the negatives. Run as a script, the tool pins one thread (OMP, OpenBLAS, MKL and
  Numba thread counts 1, set before they load) and the ONNX Runtime session to 1
  intra-op and 1 inter-op thread. Models are warmed up on 0.5 s of silence first.

``--events`` adds a row per model whose frame scores are its start/end segments (1
inside a segment); ``--breakdown`` adds F1 / ROC-AUC per group of speech files (SNR band,
event kind, band-limited or wideband, speech source, language) from the generator's
``SPLIT_meta.jsonl`` beside the manifest. The JSON and the Markdown carry the command
line and library versions.

Manifests: JSONL, one ``{"audio": path, "labels": path}`` per line, paths relative to
the manifest's directory; labels are Audacity label files (``start<TAB>end<TAB>speech``).
The negatives manifest needs only ``audio``.

Example::

    python tools/eval_vad.py runs/vadc/test.jsonl --neg runs/vadneg/neg.jsonl --model vad \\
        --json vad.json --markdown vad.md
    python tools/eval_vad.py /tmp/vadc/test.jsonl --peers webrtc --modes 3 --breakdown
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # one thread for every detector; before NumPy, Numba or ONNX Runtime load
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import argparse
import importlib.util
import json
import logging
import math
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np

from streamrnn.audio import files as audio_files

log = logging.getLogger("eval_vad")

SR = 16000  # the peers run at 16 kHz


# ------------------------------------------------------------------ reading data


@dataclass
class Item:
    name: str
    samples: np.ndarray  # float32 (N,) at ``rate``
    rate: int
    labels: list  # [(start_s, end_s, label)]


@dataclass(frozen=True)
class Grid:
    """The frames everything is scored on: frame k = samples [k*hop, k*hop+win) at ``rate``."""

    rate: int = SR
    hop: int = 160  # 10 ms at 16 kHz
    win: int = 400  # 25 ms at 16 kHz

    def n_frames(self, n_samples: int) -> int:
        return 0 if n_samples < self.win else 1 + (n_samples - self.win) // self.hop

    def centres(self, n_frames: int) -> np.ndarray:
        """Frame centres in seconds, (n_frames,)."""
        return (np.arange(n_frames) * self.hop + self.win / 2) / self.rate

    def targets(self, item: Item, label: str) -> np.ndarray:
        """0/1 targets (n_frames,) int8: frame covered >= 50 % by labels named ``label``."""
        n_samples = int(round(len(item.samples) * self.rate / item.rate))
        chosen = [t for t in item.labels if t[2] == label]
        return audio_files.frame_targets(chosen, self.n_frames(n_samples), self.rate, self.hop,
                                         self.win).astype(np.int8)


def read_manifest(path: Path, limit: int | None = None, need_labels: bool = True) -> list[Item]:
    """Items of a JSONL manifest; paths are relative to the manifest's directory."""
    items = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                audio = row["audio"]
                labels = row["labels"] if need_labels else row.get("labels")
            except (ValueError, KeyError, TypeError) as e:
                want = "{'audio': ..., 'labels': ...}" if need_labels else "{'audio': ...}"
                raise ValueError(f"{path}:{i}: expected {want}: {e!r}") from None
            x, rate = audio_files.read_audio(path.parent / audio)
            lab = audio_files.read_labels(path.parent / labels) if labels else []
            items.append(Item(audio, x, int(rate), lab))
            if limit is not None and len(items) >= limit:
                break
    return items


def read_kinds(neg_manifest: Path, n: int) -> list[str]:
    """The ``kind`` of each negatives file, from NEG_meta.jsonl beside the manifest (same order)."""
    meta_path = neg_manifest.with_name(neg_manifest.stem + "_meta.jsonl")
    with open(meta_path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if len(rows) < n:
        raise ValueError(f"{meta_path} has {len(rows)} rows but {neg_manifest} lists {n} files")
    kinds = []
    for i, r in enumerate(rows[:n], start=1):
        if not isinstance(r, dict) or not isinstance(r.get("kind"), str):
            raise ValueError(f"{meta_path}:{i}: expected a 'kind' string, got {r!r}")
        kinds.append(r["kind"])
    return kinds


def to_16k(x: np.ndarray, rate: int) -> np.ndarray:
    if rate == SR:
        return np.ascontiguousarray(x, np.float32)
    import soxr

    return soxr.resample(x, rate, SR, quality="HQ").astype(np.float32)


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


# ------------------------------------------------------------------- detectors


def map_by_centre(outputs: np.ndarray, block: int, grid: Grid, n_frames: int) -> np.ndarray:
    """Scores (n_frames,) on ``grid``: frame k gets ``outputs[j]``, block j holding its centre.

    Block j covers samples [j*block, (j+1)*block) at 16 kHz; j = floor(t_k * 16000 / block),
    clipped to the last block (a frame can end after the last whole block).
    """
    j = np.floor(grid.centres(n_frames) * SR / block).astype(np.int64)
    return np.asarray(outputs, np.float64)[np.minimum(j, len(outputs) - 1)]


class Peer:
    """A detector on 16 kHz audio giving one output per block of ``block`` samples."""

    block: int
    name: str

    def outputs(self, x16: np.ndarray) -> tuple[np.ndarray, float]:
        """(one output per block, CPU seconds spent in the detector)."""
        raise NotImplementedError

    def scores(self, item: Item, grid: Grid, x16: np.ndarray) -> tuple[np.ndarray, float]:
        out, cpu = self.outputs(x16)
        n = grid.n_frames(int(round(len(item.samples) * grid.rate / item.rate)))
        if len(out) == 0:
            return np.zeros(n), cpu
        return map_by_centre(out, self.block, grid, n), cpu


class WebRTCPeer(Peer):
    block = 160  # 10 ms at 16 kHz

    def __init__(self, mode: int):
        import webrtcvad

        self.vad_cls = webrtcvad.Vad
        self.mode = mode
        self.name = f"webrtcvad mode {mode}"

    def outputs(self, x16):
        vad = self.vad_cls(self.mode)
        pcm = to_int16(x16).astype("<i2").tobytes()  # 2 bytes per sample
        n = len(x16) // self.block
        frames = [pcm[j * 2 * self.block:(j + 1) * 2 * self.block] for j in range(n)]
        t0 = time.process_time()
        dec = [vad.is_speech(f, SR) for f in frames]
        return np.asarray(dec, np.float64), time.process_time() - t0


class SileroPeer(Peer):
    block = 512  # 32 ms at 16 kHz: the only chunk size Silero VAD 5+ accepts at 16 kHz
    context = 64  # samples of the previous chunk prefixed to each one (OnnxWrapper)

    def __init__(self):
        spec = importlib.util.find_spec("silero_vad")  # found, not imported: its loader imports torch
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("No module named 'silero_vad'")
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / "silero_vad.onnx"
        if not path.is_file():
            raise ImportError(f"silero-vad has no {path}")
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.name = "silero-vad"

    def outputs(self, x16):
        n = -(-len(x16) // self.block)
        x = np.zeros(self.context + n * self.block, np.float32)  # zeros: first context, last chunk's pad
        x[self.context:self.context + len(x16)] = x16
        state = np.zeros((2, 1, 128), np.float32)
        sr = np.array(SR, np.int64)
        out = np.empty(n)
        t0 = time.process_time()
        for i in range(n):
            chunk = x[None, i * self.block:(i + 1) * self.block + self.context]  # (1, 64 + 512)
            p, state = self.session.run(None, {"input": chunk, "state": state, "sr": sr})
            out[i] = p[0, 0]
        return out, time.process_time() - t0


class TenPeer(Peer):
    block = 160  # 10 ms at 16 kHz (TEN VAD takes 160 or 256)

    def __init__(self):
        from ten_vad import TenVad  # OSError when its library cannot load libc++.so.1

        TenVad(self.block, 0.5)  # load the shared library now, so a missing libc++ shows here
        self.vad_cls = TenVad
        self.name = "ten-vad"

    def outputs(self, x16):
        vad = self.vad_cls(self.block, 0.5)
        pcm = to_int16(x16)
        n = len(pcm) // self.block
        blocks = [np.ascontiguousarray(pcm[j * self.block:(j + 1) * self.block]) for j in range(n)]
        out = np.empty(n)
        t0 = time.process_time()
        for j, b in enumerate(blocks):
            out[j] = vad.process(b)[0]
        cpu = time.process_time() - t0
        return np.clip(out, 0.0, 1.0), cpu  # -1: no output yet (first hop)


@dataclass(frozen=True)
class PeerSpec:
    """How to load a peer: ``module`` must be importable; ``make(modes)`` builds its detectors."""

    module: str
    install: str  # the command that brings it
    make: Callable[[tuple], list]
    packages: tuple = ()  # distributions whose versions are reported
    note: str = ""


PEERS_EXTRA = "bench"  # the extra of pyproject.toml that installs every peer

PEERS: dict[str, PeerSpec] = {
    "silero": PeerSpec("silero_vad", "pip install --no-deps silero-vad && pip install onnxruntime",
                       lambda modes: [SileroPeer()], ("silero-vad", "onnxruntime"),
                       "Silero VAD: the package's silero_vad.onnx run with onnxruntime directly (its loader "
                       "needs torch), 512-sample chunks with 64 samples of context and the state carried, "
                       "as its OnnxWrapper; 1 intra-op / 1 inter-op thread"),
    "ten": PeerSpec("ten_vad", "pip install ten-vad (and apt-get install libc++1)",
                    lambda modes: [TenPeer()], ("ten-vad",), "TEN VAD: hop 160, probability output"),
    "webrtc": PeerSpec("webrtcvad", "pip install webrtcvad-wheels",
                       lambda modes: [WebRTCPeer(m) for m in modes], ("webrtcvad-wheels",),
                       "WebRTC VAD: 10 ms frames, binary decisions"),
}


def load_peers(names: list[str], modes=(0, 1, 2, 3), warn=print) -> tuple[list[Peer], list[str]]:
    """Detectors of the named peers, and their notes; a peer that cannot load is skipped with one line."""
    peers, notes = [], []
    for name in names:
        spec = PEERS[name]
        try:
            if importlib.util.find_spec(spec.module) is None:
                raise ImportError(f"No module named {spec.module!r}")
            made = spec.make(tuple(modes))
        except (ImportError, OSError) as e:
            warn(f"eval_vad: peer {name!r} skipped ({e}); `{spec.install}` brings it, "
                 f"`pip install -e '.[{PEERS_EXTRA}]'` every peer")
            continue
        peers += made
        if made and spec.note:
            notes.append(spec.note)
    return peers, notes


class ModelDetector:
    """A streamrnn model through ``model.audio_stream(rate)``: the real-time path."""

    def __init__(self, model, label: str = "speech", chunk: int = 1600):
        """``model``: a path, a bundled name, or an already loaded Model."""
        if isinstance(model, (str, Path)):
            from streamrnn import load_model

            self.name = str(model)
            self.model = load_model(model)
        else:
            self.model = model
            self.name = getattr(model, "name", None) or "model"
        fe = dict(self.model.frontend or {})
        self.grid = Grid(int(fe.get("sample_rate", SR)), int(fe.get("hop_length", 160)),
                         int(fe.get("win_length", 400)))
        self.rate = self.grid.rate
        labels = list(getattr(self.model, "labels", None) or [])
        self.column = labels.index(label) if label in labels else 0
        self.chunk = chunk
        # Warm up (Numba kernels load from cache or compile on first use) so the timing measures steady state.
        self.model.audio_stream(self.rate).push(np.zeros(self.rate // 2, np.float32))

    def scores(self, x: np.ndarray, rate: int) -> tuple[np.ndarray, float]:
        """Frame probabilities (frames at the model's front-end rate) and the CPU seconds spent."""
        stream = self.model.audio_stream(rate)
        step = max(1, int(round(self.chunk * rate / SR)))
        outs = []
        t0 = time.process_time()
        for i in range(0, len(x), step):  # chunks like a live source would deliver them
            y = stream.push(x[i:i + step])
            if len(y):
                outs.append(np.asarray(y)[:, self.column])
        cpu = time.process_time() - t0
        probs = np.concatenate(outs) if outs else np.zeros(0)
        return probs.astype(np.float64), cpu


# ------------------------------------------------------------------- scoring


@dataclass
class Scored:
    """One detector's per-file scores and targets on the same frames."""

    detector: str
    scores: list  # [(n_frames_i,) float64]
    targets: list  # [(n_frames_i,) int8]
    seconds: float  # CPU seconds spent in the detector
    grid: Grid
    threshold: float = 0.5
    off_threshold: float | None = None
    neg_scores: list = field(default_factory=list)  # [(n_frames_i,)] on the negatives

    @property
    def frame_rate(self) -> float:
        return self.grid.rate / self.grid.hop


def _fit(p: np.ndarray, y: np.ndarray, name: str, detector: str) -> tuple[np.ndarray, np.ndarray]:
    if abs(len(p) - len(y)) > 2:
        log.warning("%s: %s gave %d frames, the labels give %d; scoring the first %d",
                    name, detector, len(p), len(y), min(len(p), len(y)))
    n = min(len(p), len(y))
    return p[:n], y[:n]


def score_all(items: list[Item], detectors: list, label: str = "speech", threshold: float = 0.5,
              off_threshold: float | None = None, events: bool = False, neg: list[Item] = ()) -> list[Scored]:
    """Run every detector (ModelDetector or Peer) over every file of ``items`` and ``neg``.

    Peers are scored on the first model's grid (the default 16 kHz / 160 / 400 without one);
    ``events``: also each model's start/end segments as 0/1 scores.
    """
    models = [d for d in detectors if isinstance(d, ModelDetector)]
    peer_grid = models[0].grid if models else Grid()
    x16 = {}

    def run(det, it: Item) -> tuple[np.ndarray, float]:
        if isinstance(det, ModelDetector):
            return det.scores(it.samples, it.rate)
        if id(it) not in x16:
            x16[id(it)] = to_16k(it.samples, it.rate)
        return det.scores(it, peer_grid, x16[id(it)])

    out = []
    for det in detectors:
        grid = det.grid if isinstance(det, ModelDetector) else peer_grid
        name = f"streamrnn {det.name}" if isinstance(det, ModelDetector) else det.name
        sc = Scored(name, [], [], 0.0, grid, threshold, off_threshold)
        for it in items:
            p, cpu = run(det, it)
            p, y = _fit(p, grid.targets(it, label), it.name, name)
            sc.scores.append(p)
            sc.targets.append(y)
            sc.seconds += cpu
        for it in neg:
            p, cpu = run(det, it)
            sc.neg_scores.append(p)
            sc.seconds += cpu
        out.append(sc)
        if events and isinstance(det, ModelDetector):
            out.append(Scored(f"{name} events", [event_decisions(p, sc.frame_rate) for p in sc.scores],
                              sc.targets, sc.seconds, grid, 0.5, None,
                              [event_decisions(p, sc.frame_rate) for p in sc.neg_scores]))
    return out


# ------------------------------------------------------------------- metrics


def event_segments(probs: np.ndarray, frame_rate: float) -> list[tuple[int, int]]:
    """[(start_frame, end_frame)) segments of ``streamrnn stream``'s event detector on one file.

    The pipeline's ``Hysteresis`` with the CLI's default settings (``StreamConfig()``: on 0.5,
    off 0.35, min_on 0.1 s, min_off 0.2 s, max_segment 30 s), from a fresh state, flushed at
    the end of the file.
    """
    from streamrnn.runtime.events import Hysteresis
    from streamrnn.config import StreamConfig

    h = Hysteresis(**StreamConfig().event_params().in_frames(frame_rate))
    evs = h.push(np.asarray(probs, np.float32)[:, None]) + h.flush()
    return [(e["start_frame"], e["frame"]) for e in evs if e["event"] == "end"]


def event_decisions(probs: np.ndarray, frame_rate: float) -> np.ndarray:
    """0/1 per frame: inside a start..end segment of ``event_segments``."""
    d = np.zeros(len(probs))
    for s, e in event_segments(probs, frame_rate):
        d[s:e] = 1.0
    return d


def segment_counts(probs: np.ndarray, targets: np.ndarray, frame_rate: float) -> dict:
    """Labelled segments (runs of target frames), how many no detected segment touches, and
    the detected segments that touch no labelled frame (false starts)."""
    from streamrnn.train.metrics import segments

    det = event_segments(probs, frame_rate)
    covered = np.zeros(len(targets) + 1, np.int64)  # frames inside a detected segment, cumulative
    hit = np.zeros(len(targets), bool)
    for s, e in det:
        hit[s:e] = True
    covered[1:] = np.cumsum(hit)
    starts, ends = segments(np.asarray(targets, bool))
    missed = int(np.count_nonzero(covered[ends] - covered[starts] == 0))
    speech = np.concatenate([[0], np.cumsum(np.asarray(targets, np.int64))])
    false_starts = sum(1 for s, e in det if speech[e] - speech[s] == 0)
    return {"segments": len(starts), "missed": missed, "detected": len(det), "false_starts": false_starts}


def merged_segments(labels: list, label: str = "speech") -> list[tuple[float, float]]:
    """Label intervals named ``label``, sorted, overlapping or touching ones merged."""
    out: list[list[float]] = []
    for s, e, _ in sorted(t for t in labels if t[2] == label):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def boundary_delays(probs: np.ndarray, centres: np.ndarray, segs: list[tuple[float, float]],
                    threshold: float = 0.5) -> tuple[list, list]:
    """Onset and offset delays (seconds; None = missed) of one file, see the module doc.

    ``probs`` (n,), ``centres`` (n,) frame centres in seconds, ``segs`` [(start, end)] sorted.
    A boundary whose window holds no frame is left out.

    >>> c = (np.arange(10) * 160 + 200) / 16000  # 10 ms frames, centres 12.5 ms, 22.5 ms, ...
    >>> on, off = boundary_delays(np.array([0, 0, 1, 1, 1, 0.4, 0, 0, 0, 0]), c, [(0.02, 0.05)])
    >>> [round(d, 4) for d in on + off]  # first p >= 0.5 at 32.5 ms, first p < 0.5 at 62.5 ms
    [0.0125, 0.0125]
    """
    p = np.asarray(probs, np.float64)
    n = len(p)
    onsets, offsets = [], []
    for i, (s, e) in enumerate(segs):
        nxt = segs[i + 1][0] if i + 1 < len(segs) else math.inf
        for t0, t1, hit, out in ((s, e, p >= threshold, onsets), (e, nxt, p < threshold, offsets)):
            a, b = np.searchsorted(centres, t0, "left"), np.searchsorted(centres, t1, "left")
            if a >= min(b, n):
                continue  # no frame in the window: not measurable
            k = np.flatnonzero(hit[a:b])
            out.append(float(centres[a + k[0]] - t0) if len(k) else None)
    return onsets, offsets


def delay_summary(delays: list) -> dict:
    """n (measurable boundaries), missed, and median / p90 in ms of the detected ones."""
    d = np.array([x for x in delays if x is not None], np.float64) * 1000.0
    return {"n": len(delays), "missed": len(delays) - len(d),
            "median_ms": float(np.median(d)) if len(d) else math.nan,
            "p90_ms": float(np.percentile(d, 90)) if len(d) else math.nan}


def false_alarm_shares(neg_scores: list, kinds: list[str], threshold: float = 0.5) -> dict:
    """Per kind: share of its frames with score >= threshold, over all its files (kinds sorted)."""
    out = {}
    for kind in sorted(set(kinds)):
        p = [np.asarray(s) for s, k in zip(neg_scores, kinds) if k == kind]
        n = sum(len(x) for x in p)
        out[kind] = float(sum(np.count_nonzero(x >= threshold) for x in p) / n) if n else math.nan
    return out


def detector_metrics(sc: Scored, items: list[Item], idx: list[int], label: str = "speech",
                     kinds: list[str] = (), neg_audio_s: float = 0.0) -> dict:
    """Every metric of one detector over the files ``idx`` (and all the negatives)."""
    from streamrnn.errors import InputError
    from streamrnn.train.metrics import best_f1, vad_metrics

    probs, targets = [sc.scores[i] for i in idx], [sc.targets[i] for i in idx]
    m = vad_metrics(probs, targets, frame_rate=sc.frame_rate, threshold=sc.threshold,
                    off_threshold=sc.off_threshold)
    try:
        m["best_f1"], m["best_threshold"] = best_f1(np.concatenate(targets), np.concatenate(probs))
    except (InputError, ValueError):
        m["best_f1"] = m["best_threshold"] = math.nan
    speech_s = sum(len(items[i].samples) / items[i].rate for i in idx)
    segs = [segment_counts(p, t, sc.frame_rate) for p, t in zip(probs, targets)]
    m["speech_segments"] = sum(s["segments"] for s in segs)
    m["missed_segments"] = sum(s["missed"] for s in segs)
    m["false_starts_per_hour"] = sum(s["false_starts"] for s in segs) / (speech_s / 3600) if speech_s else math.nan
    onsets, offsets = [], []
    for i, p in zip(idx, probs):
        on, off = boundary_delays(p, sc.grid.centres(len(p)), merged_segments(items[i].labels, label),
                                  sc.threshold)
        onsets += on
        offsets += off
    m["onset_delay"], m["offset_delay"] = delay_summary(onsets), delay_summary(offsets)
    if kinds:
        m["neg_false_alarm_share"] = false_alarm_shares(sc.neg_scores, list(kinds), sc.threshold)
        n_fs = sum(len(event_segments(p, sc.frame_rate)) for p in sc.neg_scores)
        m["neg_false_starts_per_hour"] = n_fs / (neg_audio_s / 3600) if neg_audio_s else math.nan
    total_s = sum(len(it.samples) / it.rate for it in items) + neg_audio_s  # the detector ran on all of it
    m["cpu_per_audio_s"] = sc.seconds / total_s if total_s else math.nan
    return {"detector": sc.detector, **m}


def evaluate(items: list[Item], modes=(0, 1, 2, 3), model: ModelDetector | None = None, label: str = "speech",
             threshold: float = 0.5, off_threshold: float | None = None, peers=()) -> list[dict]:
    """One result dict per detector (``detector_metrics``): ``model``, WebRTC ``modes``, then ``peers``."""
    detectors = ([model] if model is not None else []) + [WebRTCPeer(m) for m in modes] + list(peers)
    scored = score_all(items, detectors, label, threshold, off_threshold)
    return [detector_metrics(sc, items, list(range(len(items))), label) for sc in scored]


def file_groups(meta: list[dict]) -> dict[str, list[int]]:
    """Groups of the files with speech from a generator's SPLIT_meta.jsonl rows: SNR bands, event kinds,
    telephone path or wideband, speech source (``with asterisk speech``: real recorded voices; festival,
    espeak) and language (``language fr``). Groups overlap (a file with two sources is in both);
    speech-free files (``"kind"`` other than ``"speech"``) are in none: they have no F1."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(meta):
        if r.get("kind", "speech") != "speech":
            continue
        snr = r.get("snr_db")
        if snr is not None:
            band = "SNR < 5 dB" if snr < 5 else ("SNR 5-15 dB" if snr < 15 else "SNR >= 15 dB")
            groups.setdefault(band, []).append(i)
        for kind in sorted(set(r.get("events", []))):
            groups.setdefault(f"with {kind} events", []).append(i)
        if not r.get("events"):
            groups.setdefault("no events", []).append(i)
        if r.get("bandlimited"):
            groups.setdefault("band-limited", []).append(i)
        elif "bandlimited" in r:
            groups.setdefault("wideband", []).append(i)
        for src in sorted(set(r.get("sources", []))):
            groups.setdefault(f"with {src} speech", []).append(i)
        for lang in r.get("langs", []):
            groups.setdefault(f"language {lang}", []).append(i)
    order = ["SNR < 5 dB", "SNR 5-15 dB", "SNR >= 15 dB", "no events", "wideband", "band-limited"]
    return {k: groups[k] for k in order + sorted(set(groups) - set(order)) if k in groups}


def breakdown(items: list[Item], scored: list[Scored], meta: list[dict]) -> list[dict]:
    """Per group of files: F1 and ROC-AUC of every detector."""
    from streamrnn.train.metrics import vad_metrics

    if len(meta) != len(items):
        raise ValueError(f"meta has {len(meta)} rows but the manifest {len(items)} files")
    rows = []
    for name, idx in file_groups(meta).items():
        row = {"group": name, "n_files": len(idx), "detectors": {}}
        for sc in scored:
            m = vad_metrics([sc.scores[i] for i in idx], [sc.targets[i] for i in idx], frame_rate=sc.frame_rate,
                            threshold=sc.threshold, off_threshold=sc.off_threshold)
            row["detectors"][sc.detector] = {k: m[k] for k in ("roc_auc", "f1", "false_alarms_per_hour")}
        rows.append(row)
    return rows


# ------------------------------------------------------------------- reporting


def _fmt(v, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def breakdown_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    dets = list(rows[0]["detectors"])
    lines = ["| files | n | " + " | ".join(f"{d} F1 / AUC" for d in dets) + " |",
             "|---|---|" + "---|" * len(dets)]
    for r in rows:
        cells = [f"{_fmt(r['detectors'][d]['f1'])} / {_fmt(r['detectors'][d]['roc_auc'])}" for d in dets]
        lines.append(f"| {r['group']} | {r['n_files']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _delay(d: dict) -> str:
    return f"{_fmt(d['median_ms'], 0)} / {_fmt(d['p90_ms'], 0)} ({d['missed']}/{d['n']})"


def markdown_table(results: list[dict]) -> str:
    kinds = sorted({k for r in results for k in r.get("neg_false_alarm_share", {})})
    neg = "neg_false_alarm_share" in (results[0] if results else {})
    head = ["detector", "ROC-AUC", "F1", "precision", "recall", "best F1 (threshold)",
            "missed segments", "false starts / h"]
    if neg:
        head += ["false starts / h (neg)"] + [f"{k} time called speech" for k in kinds]
    head += ["onset ms median / p90 (missed/n)", "offset ms median / p90 (missed/n)", "CPU s per audio s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r["detector"], _fmt(r["roc_auc"]), _fmt(r["f1"]), _fmt(r["precision"]), _fmt(r["recall"]),
                 f"{_fmt(r['best_f1'])} ({_fmt(r['best_threshold'], 2)})",
                 f"{r['missed_segments']}/{r['speech_segments']}", _fmt(r["false_starts_per_hour"], 1)]
        if neg:
            cells += [_fmt(r["neg_false_starts_per_hour"], 1)]
            cells += [_fmt(r["neg_false_alarm_share"].get(k), 2) for k in kinds]
        cells += [_delay(r["onset_delay"]), _delay(r["offset_delay"]), f"{r['cpu_per_audio_s']:.5f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def versions(packages) -> dict:
    """Installed versions of the distributions named (None when missing), Python and the platform."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("streamrnn", "numpy", "numba", *packages):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Detectors, alignment and metric definitions: see the module docstring.")
    p.add_argument("manifest", type=Path, help="JSONL manifest with audio and labels paths")
    p.add_argument("--neg", type=Path, help="negatives-only JSONL manifest; NEG_meta.jsonl beside it gives each "
                                            "file's 'kind'")
    p.add_argument("--model", action="append", default=[],
                   help="a streamrnn model (path or bundled name); repeat for several")
    p.add_argument("--peers", default="silero,ten,webrtc",
                   help=f"comma-separated peers out of {','.join(PEERS)} (default all; '' for none)")
    p.add_argument("--modes", type=int, nargs="*", default=[0, 1, 2, 3], choices=[0, 1, 2, 3],
                   help="WebRTC VAD modes to run (default all four; none with an empty list)")
    p.add_argument("--label", default="speech", help="label name that marks speech (default 'speech')")
    p.add_argument("--threshold", type=float, default=0.5, help="decision threshold (default 0.5)")
    p.add_argument("--off-threshold", type=float, default=None,
                   help="hysteresis off threshold for precision/recall/F1 (default: none, a plain threshold)")
    p.add_argument("--chunk", type=int, default=1600, help="samples per model push at 16 kHz (default 1600)")
    p.add_argument("--events", action="store_true",
                   help="also score each model's start/end segments as `streamrnn stream` emits them")
    p.add_argument("--limit", type=int, default=None, help="only the first N files of each manifest")
    p.add_argument("--json", type=Path, help="write the results as JSON here")
    p.add_argument("--markdown", type=Path, help="write the Markdown report here")
    p.add_argument("--breakdown", action="store_true",
                   help="also report F1 / ROC-AUC per SNR band, event kind, telephone path or wideband, speech "
                        "source and language, from SPLIT_meta.jsonl "
                        "beside the manifest (written by make_vad_corpus.py)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    peer_names = [s.strip() for s in args.peers.split(",") if s.strip()]
    unknown = [s for s in peer_names if s not in PEERS]
    if unknown:
        p.error(f"--peers: unknown {', '.join(unknown)}; expected a comma-separated list out of {', '.join(PEERS)}")

    from streamrnn.errors import StreamRNNError

    def warn(msg: str) -> None:
        print(msg, file=sys.stderr)

    try:
        items = read_manifest(args.manifest, args.limit)
        if not items:
            print(f"eval_vad: error: {args.manifest} lists no files", file=sys.stderr)
            return 2
        neg = read_manifest(args.neg, args.limit, need_labels=False) if args.neg else []
        kinds = read_kinds(args.neg, len(neg)) if args.neg else []
        detectors = [ModelDetector(m, args.label, args.chunk) for m in args.model]
        peers, notes = load_peers(peer_names, args.modes, warn)
        detectors += peers
        if not detectors:
            print(f"eval_vad: error: no detector to run (no --model and no peer loaded): give --model vad, or "
                  f"install the peers with `pip install -e '.[{PEERS_EXTRA}]'`", file=sys.stderr)
            return 2
        scored = score_all(items, detectors, args.label, args.threshold, args.off_threshold, args.events, neg)
        neg_s = sum(len(it.samples) / it.rate for it in neg)
        idx = list(range(len(items)))
        results = [detector_metrics(sc, items, idx, args.label, kinds, neg_s) for sc in scored]
        groups = []
        if args.breakdown:
            meta_path = args.manifest.with_name(args.manifest.stem + "_meta.jsonl")
            with open(meta_path, encoding="utf-8") as f:
                meta = [json.loads(line) for line in f if line.strip()][: len(items)]
            groups = breakdown(items, scored, meta)
    except (StreamRNNError, OSError, ValueError) as e:
        print(f"eval_vad: error: {e}", file=sys.stderr)
        return 2
    command = shlex.join(["python", "tools/eval_vad.py", *argv])
    vers = versions(sorted({pkg for n in peer_names for pkg in PEERS[n].packages}))
    speech_min = sum(len(it.samples) / it.rate for it in items) / 60
    header = (f"Command: `{command}`\n\n"
              f"Speech set: {args.manifest}, {len(items)} files, {speech_min:.1f} min"
              + (f"; negatives: {args.neg}, {len(neg)} files, {neg_s / 60:.1f} min, kinds "
                 f"{', '.join(sorted(set(kinds)))}" if args.neg else "") + "\n\n"
              + "Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()) + "\n\n"
              + "".join(f"- {n}\n" for n in notes) + "- one thread per detector; threshold "
              f"{args.threshold}; segments with the `streamrnn stream` event defaults\n\n")
    table = markdown_table(results)
    if groups:
        table += "\n" + breakdown_table(groups)
    print(header + table, end="")
    if args.json:
        doc = {"command": command, "argv": argv, "versions": vers, "notes": notes, "manifest": str(args.manifest),
               "n_files": len(items), "neg_manifest": str(args.neg) if args.neg else None, "n_neg_files": len(neg),
               "results": results}
        if groups:
            doc["breakdown"] = groups
        args.json.write_text(json.dumps(doc, indent=1, allow_nan=True) + "\n", encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(header + table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

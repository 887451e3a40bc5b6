#!/usr/bin/env python3
"""Evaluate voice-activity detectors on a labelled manifest, frame by frame.

Detectors: WebRTC VAD (the ``webrtcvad`` module of the ``webrtcvad-wheels`` package,
modes 0-3, 10 ms frames of 16 kHz int16) and, with ``--model``, a streamrnn model run
through its real-time path ``model.audio_stream(rate).push(samples)``.

Manifest: JSONL, one ``{"audio": path, "labels": path}`` per line, paths relative to the
manifest's directory; labels are Audacity label files (``start<TAB>end<TAB>speech``).

Frames and alignment. Everything is scored on the model's front-end frames: frame k
covers samples [k*160, k*160+400) at 16 kHz (25 ms window, 10 ms hop), so a file of N
samples has 1 + (N-400)//160 frames. Its target is 1 when speech labels cover at least
half of that window (``streamrnn.audio.files.frame_targets``). WebRTC VAD frame j covers
samples [j*160, j*160+160). The model frame k is given the decision of WebRTC frame
k+1, the one that holds the model frame's centre (sample k*160+200): that 10 ms lies
wholly inside the model's window, right in its middle, which is where the target is
decided. Aligning by index instead (j = k) would judge WebRTC on audio 7.5 ms earlier
than the target, a systematic onset/offset bias against it; centre alignment is the
fairer choice.

Metrics (``streamrnn.train.metrics.vad_metrics``): frame ROC-AUC pooled over all files,
precision/recall/F1 at ``--threshold`` (hysteresis with ``--off-threshold``), false
alarms per hour of labelled non-speech. WebRTC VAD only gives 0/1 decisions; its
ROC-AUC is computed the same way from those scores, which is the area under a one-point
ROC curve, (TPR + TNR) / 2. Real-time factor (RTF) = processing time / audio duration
(lower is better; 0.001 means 1000x faster than real time), timing only the detector
calls (int16 conversion and framing of WebRTC's input excluded, and the model's push()
calls including its resampler and front end).

``--events`` adds a row for the model's start/end segments as ``streamrnn stream`` emits them
(the pipeline's ``Hysteresis`` with its default settings: on 0.5, off 0.35, min_on 0.1 s,
min_off 0.2 s): frames inside a segment are speech. Its ROC-AUC is a balanced accuracy.

``--breakdown`` adds F1 / ROC-AUC per group of files (SNR band, event kind, band-limited),
read from the generator's ``SPLIT_meta.jsonl`` beside the manifest. Before timing, the
model is warmed up on 0.5 s of silence (Numba kernels load or compile on first use).

Example::

    python tools/eval_vad.py /tmp/vadc/test.jsonl --json wv.json --markdown wv.md --breakdown
    python tools/eval_vad.py /tmp/vadc/test.jsonl --model vad --modes 3
    python tools/eval_vad.py runs/vad-corpus/test.jsonl --model vad --events --breakdown
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("eval_vad")

SR = 16000  # WebRTC VAD and the default front end run at 16 kHz
HOP = 160  # 10 ms at 16 kHz
WIN = 400  # 25 ms at 16 kHz


# ------------------------------------------------------------------ reading data


@dataclass
class Item:
    name: str
    samples: np.ndarray  # float32 (N,) at ``rate``
    rate: int
    labels: list  # [(start_s, end_s, label)]


def _files_api():
    """streamrnn.audio.files if present (read_audio, read_labels, frame_targets), else None."""
    try:
        from streamrnn.audio import files
    except ImportError:
        return None
    return files if all(hasattr(files, f) for f in ("read_audio", "read_labels", "frame_targets")) else None


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    api = _files_api()
    if api is not None:
        return api.read_audio(path)
    import soundfile as sf

    x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return np.ascontiguousarray(x.mean(axis=1, dtype=np.float32)), int(rate)


def read_labels(path: Path) -> list:
    api = _files_api()
    if api is not None:
        return api.read_labels(path)
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and not line.startswith("\\"):
            out.append((float(parts[0]), float(parts[1]), parts[2].strip()))
    return out


def frame_targets(labels: list, n_frames: int, rate: int, hop: int, win: int, label: str) -> np.ndarray:
    """0/1 targets (n_frames,): frame covered >= 50 % by labels named ``label``."""
    chosen = [t for t in labels if t[2] == label]
    api = _files_api()
    if api is not None:
        return api.frame_targets(chosen, n_frames, rate, hop, win).astype(np.int8)
    f0 = np.arange(n_frames) * hop / rate
    covered = np.zeros(n_frames)
    for s, e, _ in sorted(chosen):  # the generator never writes overlapping labels
        covered += np.clip(np.minimum(f0 + win / rate, e) - np.maximum(f0, s), 0, None)
    return (covered * rate / win >= 0.5 - 1e-9).astype(np.int8)


def read_manifest(path: Path, limit: int | None = None) -> list[Item]:
    """Items of a JSONL manifest; paths are relative to the manifest's directory."""
    base = path.parent
    items = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                audio, labels = row["audio"], row["labels"]
            except (ValueError, KeyError, TypeError) as e:
                raise SystemExit(f"eval_vad: error: {path}:{i}: expected {{'audio': ..., 'labels': ...}}: {e}")
            x, rate = read_audio(base / audio)
            items.append(Item(audio, x, rate, read_labels(base / labels)))
            if limit is not None and len(items) >= limit:
                break
    return items


def n_frames_for(n_samples: int, hop: int = HOP, win: int = WIN) -> int:
    return 0 if n_samples < win else 1 + (n_samples - win) // hop


# ------------------------------------------------------------------- detectors


def to_16k(x: np.ndarray, rate: int) -> np.ndarray:
    if rate == SR:
        return x
    import soxr

    return soxr.resample(x, rate, SR, quality="HQ").astype(np.float32)


def webrtc_scores(x16: np.ndarray, mode: int) -> tuple[np.ndarray, float]:
    """WebRTC decisions on the model's frames (centre alignment) -> (scores (n_frames,), seconds)."""
    import webrtcvad

    vad = webrtcvad.Vad(mode)
    pcm = (np.clip(np.round(x16 * 32768.0), -32768, 32767).astype("<i2")).tobytes()  # 2 bytes/sample
    n_web = len(x16) // HOP
    frames = [pcm[j * 2 * HOP:(j + 1) * 2 * HOP] for j in range(n_web)]
    t0 = time.perf_counter()
    dec = np.fromiter((vad.is_speech(f, SR) for f in frames), dtype=np.float64, count=n_web)
    seconds = time.perf_counter() - t0
    n = n_frames_for(len(x16))
    # Model frame k <- WebRTC frame k+1 (holds sample k*160+200, the window's centre).
    return dec[1:n + 1], seconds


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
        self.rate = int(fe.get("sample_rate", SR))
        self.hop = int(fe.get("hop_length", HOP))
        self.win = int(fe.get("win_length", WIN))
        labels = list(getattr(self.model, "labels", None) or [])
        self.column = labels.index(label) if label in labels else 0
        self.chunk = chunk
        # Warm up (Numba kernels load from cache or compile on first use) so RTF measures steady state.
        self.model.audio_stream(self.rate).push(np.zeros(self.rate // 2, np.float32))

    def scores(self, x: np.ndarray, rate: int) -> tuple[np.ndarray, float]:
        """Frame probabilities (frames at the model's front-end rate) and the seconds spent."""
        stream = self.model.audio_stream(rate)
        step = max(1, int(round(self.chunk * rate / SR)))
        outs = []
        t0 = time.perf_counter()
        for i in range(0, len(x), step):  # chunks like a live source would deliver them
            y = stream.push(x[i:i + step])
            if len(y):
                outs.append(np.asarray(y)[:, self.column])
        seconds = time.perf_counter() - t0
        probs = np.concatenate(outs) if outs else np.zeros(0)
        return probs.astype(np.float64), seconds


# ------------------------------------------------------------------- evaluation


@dataclass
class Scored:
    """One detector's per-file scores and targets on the same frames."""

    detector: str
    scores: list  # [(n_frames_i,) float64]
    targets: list  # [(n_frames_i,) int8]
    seconds: float  # time spent in the detector
    frame_rate: float
    threshold: float
    off_threshold: float | None


def score_all(items: list[Item], modes=(0, 1, 2, 3), model: ModelDetector | None = None, label: str = "speech",
              threshold: float = 0.5, off_threshold: float | None = None, events: bool = False) -> list[Scored]:
    """Run every detector over every file (``events``: also the model's start/end segments)."""
    out = []
    if modes:
        targets, x16s = [], []
        for it in items:
            x16 = to_16k(it.samples, it.rate)
            x16s.append(x16)
            targets.append(frame_targets(it.labels, n_frames_for(len(x16)), SR, HOP, WIN, label))
        for mode in modes:
            scores, spent = [], 0.0
            for x16 in x16s:
                s, t = webrtc_scores(x16, mode)
                scores.append(s)
                spent += t
            out.append(Scored(f"webrtcvad mode {mode}", scores, targets, spent, SR / HOP, 0.5, None))
    if model is not None:
        probs, targets, spent = [], [], 0.0
        for it in items:
            p, t = model.scores(it.samples, it.rate)
            n_model = n_frames_for(int(round(len(it.samples) * model.rate / it.rate)), model.hop, model.win)
            y = frame_targets(it.labels, n_model, model.rate, model.hop, model.win, label)
            if abs(len(p) - len(y)) > 2:
                log.warning("%s: model gave %d frames, the labels give %d; scoring the first %d",
                            it.name, len(p), len(y), min(len(p), len(y)))
            n = min(len(p), len(y))
            probs.append(p[:n])
            targets.append(y[:n])
            spent += t
        out.append(Scored(f"streamrnn {model.name}", probs, targets, spent, model.rate / model.hop, threshold,
                          off_threshold))
        if events:
            segs = [event_decisions(p, model.rate / model.hop) for p in probs]
            out.append(Scored(f"streamrnn {model.name} events", segs, targets, spent, model.rate / model.hop, 0.5,
                              None))
    return out


def event_decisions(probs: np.ndarray, frame_rate: float) -> np.ndarray:
    """0/1 per frame: inside a start..end segment of the pipeline's event detector (default settings).

    The same ``Hysteresis`` as ``streamrnn stream`` (on 0.5, off 0.35, min_on 0.1 s, min_off 0.2 s,
    max_segment 30 s), run over one file from a fresh state and flushed at its end.
    """
    from streamrnn.runtime.events import EventParams, Hysteresis

    h = Hysteresis(**EventParams().in_frames(frame_rate))
    d = np.zeros(len(probs))
    for e in h.push(np.asarray(probs, np.float32)[:, None]) + h.flush():
        if e["event"] == "end":
            d[e["start_frame"]:e["frame"]] = 1.0  # segment [start_frame, frame)
    return d


def _metrics(sc: Scored, idx: list[int], audio_s: float) -> dict:
    from streamrnn.train.metrics import vad_metrics

    m = vad_metrics([sc.scores[i] for i in idx], [sc.targets[i] for i in idx], frame_rate=sc.frame_rate,
                    threshold=sc.threshold, off_threshold=sc.off_threshold)
    return {"detector": sc.detector, "rtf": sc.seconds / audio_s if audio_s > 0 else math.nan, **m}


def evaluate(items: list[Item], modes=(0, 1, 2, 3), model: ModelDetector | None = None, label: str = "speech",
             threshold: float = 0.5, off_threshold: float | None = None) -> list[dict]:
    """One result dict per detector: the vad_metrics keys plus detector, rtf, audio_hours."""
    audio_s = sum(len(it.samples) / it.rate for it in items)
    results = [_metrics(sc, list(range(len(items))), audio_s)
               for sc in score_all(items, modes, model, label, threshold, off_threshold)]
    for r in results:
        r["audio_hours"] = audio_s / 3600.0
    return results


def file_groups(meta: list[dict]) -> dict[str, list[int]]:
    """Groups of file indices from a generator's SPLIT_meta.jsonl rows: SNR bands and event kinds."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(meta):
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
    order = ["SNR < 5 dB", "SNR 5-15 dB", "SNR >= 15 dB", "no events"]
    return {k: groups[k] for k in order + sorted(set(groups) - set(order)) if k in groups}


def breakdown(items: list[Item], scored: list[Scored], meta: list[dict]) -> list[dict]:
    """Per group of files: F1 and ROC-AUC of every detector."""
    if len(meta) != len(items):
        raise ValueError(f"meta has {len(meta)} rows but the manifest {len(items)} files")
    rows = []
    for name, idx in file_groups(meta).items():
        audio_s = sum(len(items[i].samples) / items[i].rate for i in idx)
        row = {"group": name, "n_files": len(idx), "detectors": {}}
        for sc in scored:
            m = _metrics(sc, idx, audio_s)
            row["detectors"][sc.detector] = {k: m[k] for k in ("roc_auc", "f1", "false_alarms_per_hour")}
        rows.append(row)
    return rows


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


def _fmt(v: float, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def markdown_table(results: list[dict]) -> str:
    lines = [
        "| detector | ROC-AUC | F1 | precision | recall | false alarms / h | RTF |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['detector']} | {_fmt(r['roc_auc'])} | {_fmt(r['f1'])} | {_fmt(r['precision'])} | "
                     f"{_fmt(r['recall'])} | {_fmt(r['false_alarms_per_hour'], 1)} | {r['rtf']:.2e} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Alignment and metric definitions: see the module docstring.")
    p.add_argument("manifest", type=Path, help="JSONL manifest with audio and labels paths")
    p.add_argument("--modes", type=int, nargs="*", default=[0, 1, 2, 3], choices=[0, 1, 2, 3],
                   help="WebRTC VAD modes to run (default all four; none with an empty list)")
    p.add_argument("--model", help="also evaluate this streamrnn model (path or bundled name)")
    p.add_argument("--label", default="speech", help="label name that marks speech (default 'speech')")
    p.add_argument("--threshold", type=float, default=0.5, help="model decision threshold (default 0.5)")
    p.add_argument("--off-threshold", type=float, default=None, help="model hysteresis off threshold")
    p.add_argument("--chunk", type=int, default=1600, help="samples per push at 16 kHz (default 1600 = 100 ms)")
    p.add_argument("--events", action="store_true",
                   help="also score the model's start/end segments as `streamrnn stream` emits them "
                        "(hysteresis 0.5/0.35, min_on 0.1 s, min_off 0.2 s)")
    p.add_argument("--limit", type=int, default=None, help="only the first N files")
    p.add_argument("--json", type=Path, help="write the results as JSON here")
    p.add_argument("--markdown", type=Path, help="write the Markdown table here")
    p.add_argument("--breakdown", action="store_true",
                   help="also report F1 / ROC-AUC per SNR band and event kind, from SPLIT_meta.jsonl "
                        "beside the manifest (written by make_vad_corpus.py)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        from streamrnn.errors import StreamRNNError
    except ImportError:  # pragma: no cover - the tool lives in the repository
        StreamRNNError = RuntimeError  # noqa: N806
    try:
        items = read_manifest(args.manifest, args.limit)
        if not items:
            print(f"eval_vad: error: {args.manifest} lists no files", file=sys.stderr)
            return 2
        model = ModelDetector(args.model, args.label, args.chunk) if args.model else None
        scored = score_all(items, args.modes, model, args.label, args.threshold, args.off_threshold, args.events)
        audio_s = sum(len(it.samples) / it.rate for it in items)
        results = [_metrics(sc, list(range(len(items))), audio_s) for sc in scored]
        for r in results:
            r["audio_hours"] = audio_s / 3600.0
        groups = []
        if args.breakdown:
            meta_path = args.manifest.with_name(args.manifest.stem + "_meta.jsonl")
            with open(meta_path, encoding="utf-8") as f:
                meta = [json.loads(line) for line in f if line.strip()][: len(items)]
            groups = breakdown(items, scored, meta)
    except (StreamRNNError, OSError, ValueError) as e:
        print(f"eval_vad: error: {e}", file=sys.stderr)
        return 2
    table = markdown_table(results)
    if groups:
        table += "\n" + breakdown_table(groups)
    hours = results[0]["audio_hours"] if results else 0.0
    print(f"{len(items)} files, {hours * 60:.1f} min of audio, manifest {args.manifest}\n")
    print(table, end="")
    if args.json:
        doc = {"manifest": str(args.manifest), "n_files": len(items), "results": results}
        if groups:
            doc["breakdown"] = groups
        args.json.write_text(json.dumps(doc, indent=1, allow_nan=True) + "\n", encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

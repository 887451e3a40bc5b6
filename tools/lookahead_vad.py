#!/usr/bin/env python3
"""What look-ahead buys a voice-activity detector: held-out ROC-AUC and F1 for delay D = 0, 5, 10, 20
frames and a bidirectional model, all trained with the same settings (docs/training.md, "Look-ahead").

    python tools/make_vad_corpus.py --out runs/lookahead-corpus --n-train 200 --n-test 40 --seconds 10 \\
        --seed 3 --jobs 1
    python tools/lookahead_vad.py --corpus runs/lookahead-corpus --out runs/lookahead \\
        --set model.hidden_size=32 --set train.epochs=8

Trains ``configs/vad.toml`` (with ``--set`` overrides, the same for every run) on CORPUS/train.jsonl,
evaluates each exported model on CORPUS/test.jsonl (``streamrnn.train.trainer.evaluate``: a delayed
model's row t is scored against the label of frame t - D) and prints one Markdown table
(``--json`` also writes the numbers).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", required=True, help="folder with train.jsonl and test.jsonl")
    ap.add_argument("--out", required=True, help="folder for the runs")
    ap.add_argument("--delays", default="0,5,10,20", help="look-ahead frames, comma separated ('' for none)")
    ap.add_argument("--no-bidirectional", action="store_true")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", dest="json_path", default=None)
    args = ap.parse_args()

    from streamrnn.config import TrainConfig, load_config
    from streamrnn.train.data import load_dataset
    from streamrnn.train.trainer import evaluate, train_from_config

    corpus, out = Path(args.corpus).resolve(), Path(args.out).resolve()
    cache = out / "feature-cache"  # shared: the features are computed once for all runs
    base = [f"data.train={corpus / 'train.jsonl'}", f"data.cache_dir={cache}", *args.overrides]
    runs = [(f"delay {d}", [f"model.delay={d}"]) for d in (int(v) for v in args.delays.split(",") if v)]
    if not args.no_bidirectional:
        runs.append(("bidirectional", ["model.bidirectional=true"]))
    rows, test = [], None
    for name, extra in runs:
        cfg = load_config(TrainConfig, ROOT / "configs" / "vad.toml", base + extra, env={})
        t0 = time.perf_counter()
        res = train_from_config(cfg, base_dir=ROOT / "configs", out_dir=out / name.replace(" ", ""), name="vad")
        seconds = time.perf_counter() - t0
        if test is None:
            test = load_dataset(corpus / "test.jsonl", frontend=res.model.frontend, cache_dir=cache,
                                classes=res.model.labels)
        r = evaluate(res.model, test)
        rows.append({"model": name, "delay": res.model.delay, "auc": r["auc"], "f1": r["f1"],
                     "accuracy": r["accuracy"], "frames": r["frames"], "updates": res.steps,
                     "epochs": len(res.history), "best_epoch": res.history[-1]["best_epoch"],
                     "train_seconds": round(seconds, 1)})
        print(json.dumps(rows[-1]), flush=True)
    print("\n| model | look-ahead | test ROC-AUC | test F1 (p >= 0.5) | updates | train s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        la = "whole file" if r["model"] == "bidirectional" else f"{r['delay']} frames ({r['delay'] * 10} ms)"
        print(f"| {r['model']} | {la} | {r['auc']:.4f} | {r['f1']:.4f} | {r['updates']} | {r['train_seconds']} |")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"overrides": base, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

"""Training speed: streamrnn's Numba TBPTT against PyTorch on the same model, data and chunking.

GRU, 2 layers, hidden 64 and 128, input 40, 32 lanes, k1 = k2 = 100, Adam
(lr 1e-3), global-norm clipping 1.0, BCE on logits, same initial weights, same
lane plan (sequences of 400 frames, so resets fall on chunk starts and PyTorch
can zero the state there), same number of threads.  Prints seconds per epoch
of training (the fastest of the timed epochs, after one warm-up epoch that also
compiles: the minimum is the estimate least disturbed by other processes on a
shared machine; the median is printed too), the ratio, and both final
validation losses.  ``--rounds`` alternates whole runs of the two to spread any
background load over both.

    python tools/bench_train.py [--epochs 3] [--threads 1] [--hidden 64 128] [--rounds 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up epoch)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hidden", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--sequences", type=int, default=128, help="training sequences of 400 frames")
    ap.add_argument("--rounds", type=int, default=1, help="alternating runs of both (min over all)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np

    from streamrnn.config import TrainConfig, load_config
    from streamrnn.train.data import Sequence
    from streamrnn.train.trainer import Trainer

    try:
        import torch
    except ImportError:
        torch = None

    T_SEQ, I = 400, 40

    def dataset(n, seed):
        rng = np.random.default_rng(seed)
        out = []
        for i in range(n):
            x = rng.standard_normal((T_SEQ, I)).astype(np.float32)
            y = np.zeros((T_SEQ, 1), np.float32)
            y[3:, 0] = (x[:-3, 0] + 0.5 * x[2:-1, 1]) > 0  # needs 3 frames of memory
            out.append(Sequence(x, y, np.ones(T_SEQ, np.float32), f"b{i}"))
        return out

    train, valid = dataset(args.sequences, 0), dataset(32, 1)
    rows = []
    for H in args.hidden:
        cfg = load_config(TrainConfig, overrides=[
            "model.cell=gru", f"model.hidden_size={H}", "model.num_layers=2", "model.norm=false",
            "model.init=pytorch", "model.gru_update_bias=0", "data.task=frame", "data.loss=bce",
            "tbptt.k1=100", "tbptt.k2=100", "tbptt.lanes=32", "optim.name=adam", "optim.lr=0.001", "optim.clip=norm", "optim.clip_norm=1.0",
            f"train.epochs={args.epochs + 1}", "train.patience=0", "train.seed=0"], env={})
        ours_t, torch_t = [], []
        for _ in range(args.rounds):
            tr = Trainer(cfg, train, valid)
            res = tr.fit()
            ours_t += [r["seconds"] for r in res.history[1:]]  # training only, like PyTorch's timing
            if torch is not None:
                torch.set_num_threads(args.threads)
                tt, t_loss = torch_run(torch, np, tr, cfg, train, valid, args.epochs + 1)
                torch_t += tt
        ours = float(np.min(ours_t))
        row = {"hidden": H, "streamrnn_s_per_epoch": round(ours, 4),
               "streamrnn_s_per_epoch_median": round(float(np.median(ours_t)), 4),
               "streamrnn_valid_loss": res.history[-1]["valid_loss"],
               "updates_per_epoch": res.steps // (args.epochs + 1)}
        if torch is not None:
            t_s = float(np.min(torch_t))
            row.update(torch_s_per_epoch=round(t_s, 4), torch_s_per_epoch_median=round(float(np.median(torch_t)), 4),
                       torch_valid_loss=t_loss, speed_ratio_torch_over_streamrnn=round(t_s / ours, 3),
                       valid_loss_rel_diff=abs(row["streamrnn_valid_loss"] - t_loss) / t_loss)
        rows.append(row)
        if not args.json:
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  flush=True)
    if args.json:
        print(json.dumps({"threads": args.threads, "torch": None if torch is None else torch.__version__,
                          "rows": rows}))


def torch_run(torch, np, tr, cfg, train, valid, epochs):
    """The same model, initial weights, lane plans, chunks, loss, clipping and optimiser in PyTorch."""
    from streamrnn.nn.cells import init_tensors
    from streamrnn.train.lanes import make_plan, prepare, deal

    H, L = cfg.model.hidden_size, cfg.model.num_layers
    rng = np.random.default_rng(cfg.train.seed)
    tensors = init_tensors(tr.arch, rng, "pytorch")  # identical to the Trainer's initial weights
    gru = torch.nn.GRU(tr.arch.input_size, H, L)
    head = torch.nn.Linear(H, 1)
    with torch.no_grad():
        for name, p in list(gru.named_parameters()):
            p.copy_(torch.from_numpy(tensors[f"rnn.{name}"].astype(np.float32)))
        head.weight.copy_(torch.from_numpy(tensors["head.weight"].astype(np.float32)))
        head.bias.copy_(torch.from_numpy(tensors["head.bias"].astype(np.float32)))
    params = list(gru.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2), eps=cfg.optim.eps)
    B, k1 = cfg.tbptt.lanes, cfg.tbptt.k1
    prep = prepare(train, task="frame", loss="bce", n_outputs=1)
    times = []
    for _ in range(epochs):
        plan = make_plan(prep, B, k1, 0.0, rng)  # the trainer's RNG stream: same shuffles
        t0 = time.perf_counter()
        h = torch.zeros(L, B, H)
        for a, b in plan.bounds:
            reset = torch.from_numpy(plan.R[a].astype(bool))
            assert not plan.R[a + 1:b].any(), "resets must fall on chunk starts"
            h = h.detach()
            h[:, reset] = 0.0
            x = torch.from_numpy(plan.X[a:b])
            y = torch.from_numpy(plan.Y[a:b])
            m = torch.from_numpy(plan.M[a:b])
            out, h = gru(x, h)
            z = head(out)
            lf = torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none").sum(-1)
            loss = (lf * m).sum() / m.sum()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_norm)
            opt.step()
        times.append(time.perf_counter() - t0)
    vp = prepare(valid, task="frame", loss="bce", n_outputs=1)
    X, Y, M, R, _ = deal(vp, list(range(len(vp))), min(B, len(vp)), np.float32)
    with torch.no_grad():
        out, _ = gru(torch.from_numpy(X))
        z = head(out)
        lf = torch.nn.functional.binary_cross_entropy_with_logits(z, torch.from_numpy(Y), reduction="none").sum(-1)
        mm = torch.from_numpy(M)
        vloss = float((lf * mm).sum() / mm.sum())
    return times[1:], vloss


if __name__ == "__main__":
    sys.exit(main())

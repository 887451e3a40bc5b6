"""Stateful lanes and truncated BPTT(k1, k2).

Lanes
-----
B lanes each stream whole sequences back to back.  At the start of an epoch
the sequences are shuffled (``rng.permutation``) and dealt greedily, each to
the lane with the fewest frames so far, so lanes end at about the same time.
A lane's hidden state is carried from chunk to chunk (cut from the gradient
at the window start) and zeroed at every sequence boundary by a per-lane
reset flag ``R[t, b] = 1``; the tail after a lane's last sequence is padding
with mask 0.

TBPTT(k1, k2)
-------------
Every k1 frames (one *chunk*), the loss of those k1 new frames is
backpropagated through the last k2 >= k1 frames::

    frames  ... | c-2 | c-1 |  c  |                 chunk c = the k1 newest frames
                      <------ k2 ------>            backward window (k2 = 2 k1 here)
                      ^ h_start (state at the window start, treated as a constant)

What is and is not recomputed: the forward runs exactly once per frame (only
the k1 new frames, from the carried state); the window buffer keeps, for its
last k2 frames, the normalised inputs, the saved activations and the reset
flags, plus the state at the window start, so the backward over k2 frames
needs no forward recomputation.  The activations of the k2 - k1 older frames
were computed with the parameters of the updates that saw them first (the
usual "stale activations" of online TBPTT); with k2 = k1 there is no such
overlap and each update is the exact gradient of its chunk.  The backward
itself is recomputed over the whole window every update (k2 frames of
backward per k1 frames of data).  With the parameters held fixed the sum of
the chunk gradients equals full BPTT as soon as k2 covers whole lanes (tested).

Optional jitter draws each chunk's length uniformly from
[ceil(k1 (1 - jitter)), k1] (``rng.integers``), so updates do not always fall
on the same frames.

Whole sequences (bidirectional models)
--------------------------------------
A bidirectional model is trained on whole sequences, never chunks (its reverse
direction needs each sequence's end): ``make_sequence_plan`` shuffles the
sequences and groups them B at a time, each group padded to its longest
sequence (``lens`` per lane, mask 0 in the padding); one update per group
(``streamrnn.train.bidir.SequenceRunner``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streamrnn.errors import ShapeError, TrainingError
from streamrnn.nn.cells import SAVE_WIDTH, Architecture, PackedLayout
from streamrnn.train.bptt import BPTT
from streamrnn.train.losses import HEAD_ACTIVATION, loss_and_dlogits


@dataclass
class Prepared:
    """One sequence ready for lanes: x (T, I), target (T, Ot), mask (T,) float64 weights."""

    x: np.ndarray
    target: np.ndarray
    mask: np.ndarray
    name: str


def target_width(loss: str, task: str, n_outputs: int) -> int:
    """Columns of the packed target array: 1 (a class index) for ce, else the output width."""
    return 1 if loss == "ce" else n_outputs


def prepare(seqs, *, task: str, loss: str, n_outputs: int, mean=None, std=None, delay: int = 0) -> list[Prepared]:
    """Turn ``data.Sequence`` objects into targets and masks for the task.

    ``delay`` D (frame task only): bounded look-ahead.  The target of frame t - D
    becomes the target at frame t, so the model answers for a frame after seeing
    the D frames that follow it; frames t < D have no target (mask 0) and the last
    D frames' own targets are never asked for.

    frame       y per frame: ce (T,) class indices (or (T, C) one-hot -> argmax), bce/mse (T, O)
                ((T,) integer labels become (T, 1) 0/1 targets for bce)
    sequence    the loss only on the last frame whose mask > 0, its target from that frame
    next_frame  target[t] = normalised x[t + 1] ((x - mean) / std, as the model sees it);
                the last frame (and any frame whose successor is masked) is not in the loss
    """
    out = []
    for s in seqs:
        x = np.asarray(s.x, np.float64)
        T = x.shape[0]
        mask = np.asarray(s.mask, np.float64).reshape(T).copy()
        if task == "next_frame":
            xn = x if mean is None else (x - mean) / std
            tg = np.zeros((T, x.shape[1]))
            tg[:-1] = xn[1:]
            mask[:-1] *= (mask[1:] > 0)
            mask[-1] = 0.0
        else:
            if s.y is None:
                raise TrainingError(f"{s.name}: task {task!r} needs targets y, the sequence has none")
            y = np.asarray(s.y)
            if y.shape[0] != T:
                raise ShapeError(f"{s.name}: y has {y.shape[0]} frames, x has {T}")
            if loss == "ce":
                if y.ndim == 2:
                    y = y.argmax(axis=1)
                if y.min() < 0 or y.max() >= n_outputs:
                    raise TrainingError(f"{s.name}: class index out of range [0, {n_outputs}): "
                                        f"min {y.min()}, max {y.max()}")
                tg = y.astype(np.float64).reshape(T, 1)
            else:
                tg = y.astype(np.float64).reshape(T, -1)
                if tg.shape[1] != n_outputs:
                    raise ShapeError(f"{s.name}: y has {tg.shape[1]} columns, the model has {n_outputs} outputs")
            if task == "sequence":
                valid = np.flatnonzero(mask > 0)
                w = mask[valid[-1]] if valid.size else 0.0
                mask = np.zeros(T)
                if valid.size:
                    mask[valid[-1]] = w  # many-to-one: only the last valid frame counts
            if delay:  # output at frame t answers for frame t - D: targets and weights move D frames later
                D = min(delay, T)
                tg = np.concatenate([np.zeros((D, tg.shape[1])), tg[:T - D]])
                mask = np.concatenate([np.zeros(D), mask[:T - D]])
        out.append(Prepared(x, tg, mask, s.name))
    return out


def norm_stats(seqs, floor: float = 1e-5):
    """Per-feature mean and std (float64) over every frame of ``seqs``; std < floor -> 1."""
    n = 0
    s1 = None
    for s in seqs:
        x = np.asarray(s.x, np.float64)
        s1 = x.sum(axis=0) if s1 is None else s1 + x.sum(axis=0)
        n += x.shape[0]
    mean = s1 / n
    s2 = sum(((np.asarray(s.x, np.float64) - mean) ** 2).sum(axis=0) for s in seqs)
    std = np.sqrt(s2 / n)
    std[std < floor] = 1.0  # constant feature: leave its scale alone
    return mean, std


def model_input(arch: Architecture, theta, X) -> np.ndarray:
    """The frames the forward kernel sees: X itself, or for a token model (``arch.vocab_size``)
    the embedding rows of the token ids in X[..., 0] (..., 1) -> (..., I), in theta's dtype."""
    if arch.vocab_size is None:
        return X
    ids = np.asarray(X)[..., 0].astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= arch.vocab_size):
        raise TrainingError(f"token id out of range [0, {arch.vocab_size}): min {ids.min()}, max {ids.max()}")
    return PackedLayout(arch).embed(np.asarray(theta), ids)


@dataclass
class Plan:
    """One epoch of lanes: X (T, B, I), Y (T, B, Ot), M (T, B), R (T, B) uint8, chunk bounds."""

    X: np.ndarray
    Y: np.ndarray
    M: np.ndarray
    R: np.ndarray
    bounds: list  # [(t0, t1), ...]
    order: list  # sequence indices in the order dealt

    def chunk(self, ci: int) -> tuple:
        """The arguments of ``TBPTTRunner.step`` for chunk ``ci``: X, Y, M, R over its frames."""
        t0, t1 = self.bounds[ci]
        return self.X[t0:t1], self.Y[t0:t1], self.M[t0:t1], self.R[t0:t1]


def deal(prepared: list[Prepared], order, lanes: int, dtype=np.float32):
    """Pack sequences into ``lanes`` back-to-back streams (greedy: shortest lane first)."""
    I = prepared[0].x.shape[1]
    Ot = prepared[0].target.shape[1]
    fill = [0] * lanes
    place = []
    for i in order:
        b = int(np.argmin(fill))  # ties -> lowest lane index: deterministic
        place.append((i, b, fill[b]))
        fill[b] += prepared[i].x.shape[0]
    T = max(fill) if fill else 0
    X = np.zeros((T, lanes, I), dtype)
    Y = np.zeros((T, lanes, Ot), dtype)
    M = np.zeros((T, lanes), dtype)
    R = np.zeros((T, lanes), np.uint8)
    for i, b, t0 in place:
        p = prepared[i]
        n = p.x.shape[0]
        X[t0:t0 + n, b] = p.x
        Y[t0:t0 + n, b] = p.target
        M[t0:t0 + n, b] = p.mask
        R[t0, b] = 1  # new sequence: zero the lane's state
    for b in range(lanes):
        if fill[b] < T:
            R[fill[b], b] = 1  # padding starts from zero state too (its mask is 0)
    return X, Y, M, R, place


def make_plan(prepared, lanes: int, k1: int, jitter: float, rng: np.random.Generator, dtype=np.float32,
              shuffle: bool = True) -> Plan:
    """Shuffle, deal into lanes and cut into chunks; consumes rng in a fixed order."""
    order = rng.permutation(len(prepared)).tolist() if shuffle else list(range(len(prepared)))
    X, Y, M, R, _ = deal(prepared, order, lanes, dtype)
    T = X.shape[0]
    bounds = []
    t = 0
    lo = max(1, math.ceil(k1 * (1.0 - jitter)))
    while t < T:
        n = int(rng.integers(lo, k1 + 1)) if jitter > 0 else k1
        bounds.append((t, min(t + n, T)))
        t += n
    return Plan(X, Y, M, R, bounds, order)


def pad_sequences(prepared: list[Prepared], idx, lanes: int, dtype=np.float32):
    """Sequences ``idx`` (at most ``lanes``) side by side from frame 0, padded to the longest:
    X (T, B, I), Y (T, B, Ot), M (T, B) (0 in the padding), lens (B,) int64."""
    I, Ot = prepared[0].x.shape[1], prepared[0].target.shape[1]
    lens = np.zeros(lanes, np.int64)
    for b, i in enumerate(idx):
        lens[b] = prepared[i].x.shape[0]
    T = int(lens.max()) if len(idx) else 0
    X = np.zeros((T, lanes, I), dtype)
    Y = np.zeros((T, lanes, Ot), dtype)
    M = np.zeros((T, lanes), dtype)
    for b, i in enumerate(idx):
        p, n = prepared[i], lens[b]
        X[:n, b], Y[:n, b], M[:n, b] = p.x, p.target, p.mask
    return X, Y, M, lens


@dataclass
class SequencePlan:
    """One epoch of whole-sequence updates: ``bounds`` has one entry per group of up to B sequences."""

    groups: list  # [[sequence index, ...], ...]
    order: list
    prepared: list
    lanes: int
    dtype: object

    @property
    def bounds(self):
        return self.groups

    def chunk(self, ci: int) -> tuple:
        """The arguments of ``SequenceRunner.step`` for group ``ci``: X, Y, M, lens."""
        return pad_sequences(self.prepared, self.groups[ci], self.lanes, self.dtype)


def make_sequence_plan(prepared, lanes: int, rng: np.random.Generator, dtype=np.float32) -> SequencePlan:
    """Shuffle and group whole sequences ``lanes`` at a time (bidirectional training); consumes rng once."""
    order = rng.permutation(len(prepared)).tolist()
    groups = [order[i:i + lanes] for i in range(0, len(order), lanes)]
    return SequencePlan(groups, order, prepared, lanes, dtype)


def training_bytes(arch: Architecture, lanes: int, k1: int, k2: int, n_frames: int, n_targets: int,
                   dtype=np.float32) -> int:
    """Estimated peak bytes of a training run's arrays (not the data already loaded), from sizes alone.

    Counts: the parameters ten times (theta, best, last good, gradient, two optimiser moments,
    the exported and the working model, scratch); the runner's window (saved activations
    (L, k2, B, W), inputs, outputs, states); the backward pass's per-step buffers (up to
    2 k2 steps); the epoch plan (frames x (inputs + targets + mask)).  A bidirectional model
    trains on whole sequences: pass the longest as ``k1`` and ``k2``; its activations and
    backward buffers count once per direction.

    >>> from streamrnn.nn.cells import Architecture
    >>> a = Architecture("gru", 40, 64, 1, 1, "sigmoid")
    >>> training_bytes(a, 32, 100, 100, 100_000, 1) < 64 * 2**20
    True
    >>> b = Architecture("gru", 40, 64, 1, 1, "sigmoid", bidirectional=True)
    >>> training_bytes(b, 32, 100, 100, 100_000, 1) > training_bytes(a, 32, 100, 100, 100_000, 1)
    True
    """
    d = np.dtype(dtype).itemsize
    L, H, I, O = arch.num_layers, arch.hidden_size, arch.input_size, arch.out_size
    B, GH, D = lanes, arch.gates * arch.hidden_size, arch.directions
    n_params = PackedLayout(arch).size
    window = D * L * k2 * B * SAVE_WIDTH[arch.cell] * H + k2 * B * (I + O + 1) + k1 * B * O + 8 * D * L * B * H
    backward = D * 2 * k2 * B * (5 * H + 2 * GH + max(I, D * H)) + GH * H
    plan = (n_frames + lanes * k1) * (I + n_targets + 1)
    return d * (10 * n_params + window + backward + plan)


def available_memory() -> int:
    """Bytes this process may still allocate: the smaller of MemAvailable (/proc/meminfo, else the
    physical memory) and the address-space limit (RLIMIT_AS) when one is set."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        import os

        avail = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            avail = min(avail, soft)
    except (ImportError, ValueError, OSError):
        pass
    return int(avail)


def check_training_memory(arch: Architecture, lanes: int, k1: int, k2: int, n_frames: int, n_targets: int,
                          dtype=np.float32, max_memory: int = 0) -> int:
    """The estimate of ``training_bytes``, or TrainingError when it exceeds ``max_memory`` bytes
    (0: what the machine has available now), with the estimate, the limit and the sizes."""
    need = training_bytes(arch, lanes, k1, k2, n_frames, n_targets, dtype)
    limit = int(max_memory) if max_memory else available_memory()
    if need > limit:
        src = "train.max_memory (--max-memory)" if max_memory else "the memory available on this machine"
        raise TrainingError(f"this training run needs about {_size(need)} (hidden_size {arch.hidden_size}, "
                            f"{arch.num_layers} layer(s), lanes {lanes}, k1 {k1}, k2 {k2}, {n_frames} frames), "
                            f"more than {src}: {_size(limit)}")
    return need


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.3g} EiB"  # pragma: no cover


class TBPTTRunner:
    """Forward the k1 new frames, backward through the last k2 (see module doc).

    Carries the lane state ``h``, ``c`` (L, B, H) and the window buffer
    between calls; ``clear()`` empties both (epoch start).
    """

    def __init__(self, arch: Architecture, lanes: int, k1: int, k2: int, loss: str, dtype=np.float32):
        self.arch, self.B, self.k1, self.k2, self.loss = arch, lanes, k1, k2, loss
        self.dtype = np.dtype(dtype)
        self.eng = BPTT(arch, lanes, dtype)
        L, H, I, O = arch.num_layers, arch.hidden_size, arch.input_size, arch.out_size
        W = SAVE_WIDTH[arch.cell] * H
        self.h = np.zeros((L, lanes, H), dtype)
        self.c = np.zeros((L, lanes, H), dtype)
        self.win_h = np.zeros((L, lanes, H), dtype)  # state at the window start
        self.win_c = np.zeros((L, lanes, H), dtype)
        self.xn = np.zeros((k2, lanes, I), dtype)
        self.save = np.zeros((L, k2, lanes, W), dtype)
        self.reset = np.zeros((k2, lanes), np.uint8)
        self.y = np.zeros((k1, lanes, O), dtype)
        self.dy = np.zeros((k2, lanes, O), dtype)
        self.n = 0  # frames in the window buffer
        self.grad = None
        self.dh0 = np.zeros((L, lanes, H), dtype)
        self.dc0 = np.zeros((L, lanes, H), dtype)
        # token models: the ids of the window's frames, to scatter dL/d(embedding row) back to them
        self.ids = np.zeros((k2, lanes), np.int64) if arch.vocab_size is not None else None
        self.layout = PackedLayout(arch)

    def clear(self):
        self.h[...] = 0
        self.c[...] = 0
        self.n = 0

    def step(self, theta, X, Y, M, R):
        """One update's worth: X (n, B, I) new frames (n <= k1) -> (loss, weight, grad (P,)).

        ``grad`` is the gradient of the mean loss over the new frames (weight =
        their total mask); the returned array is reused by the next call.
        """
        n = X.shape[0]
        assert 0 < n <= self.k1
        if self.grad is None or self.grad.shape != theta.shape:
            self.grad = np.zeros_like(theta)
        H = self.arch.hidden_size
        hoff = self.save.shape[3] - H
        drop = max(0, self.n + n - self.k2)
        if drop:
            # the new window starts after frame drop-1 of the buffer: its state is saved there
            self.win_h[...] = self.save[:, drop - 1, :, hoff:]
            if self.arch.cell == "lstm":
                self.win_c[...] = self.save[:, drop - 1, :, 4 * H:5 * H]
            keep = self.n - drop
            self.xn[:keep] = self.xn[drop:self.n]
            self.save[:, :keep] = self.save[:, drop:self.n]
            self.reset[:keep] = self.reset[drop:self.n]
            if self.ids is not None:
                self.ids[:keep] = self.ids[drop:self.n]
            self.n = keep
        if self.n == 0:
            self.win_h[...] = self.h
            self.win_c[...] = self.c
        a, b = self.n, self.n + n
        self.reset[a:b] = R
        y = self.y[:n]
        if self.ids is not None:
            self.ids[a:b] = np.asarray(X)[..., 0]
        self.eng.forward(theta, np.ascontiguousarray(model_input(self.arch, theta, X), self.dtype), self.h, self.c,
                         self.reset[a:b], y, self.save[:, a:b], self.xn[a:b])
        self.n = b
        loss, dy_new, w = loss_and_dlogits(self.loss, y, Y, M)
        dy = self.dy[:b]
        dy[:a] = 0.0  # older frames: their loss was counted by earlier updates
        dy[a:b] = dy_new
        self.eng.backward(theta, self.xn[:b], self.win_h, self.win_c, self.reset[:b], self.save[:, :b], dy,
                          self.grad, self.dh0, self.dc0)
        if self.ids is not None:  # xn = embedding[ids]: each row's gradient goes back to its token
            dx = self.eng.input_grad(theta, b)  # (b, B, I)
            ge = self.layout.view(self.grad, "embedding.weight")
            np.add.at(ge, self.ids[:b].ravel(), dx.reshape(-1, dx.shape[2]))
        return loss, w, self.grad

    def drop_bad_state(self):
        """After a non-finite step: zero lanes whose state is not finite and empty the window."""
        bad = ~(np.isfinite(self.h).all(axis=(0, 2)) & np.isfinite(self.c).all(axis=(0, 2)))
        self.h[:, bad] = 0
        self.c[:, bad] = 0
        self.n = 0
        return int(bad.sum())

    # --- checkpoint support --------------------------------------------------------------
    def state_arrays(self) -> dict:
        return {"lanes.h": self.h, "lanes.c": self.c, "lanes.win_h": self.win_h, "lanes.win_c": self.win_c,
                "lanes.xn": self.xn[:self.n], "lanes.save": np.ascontiguousarray(self.save[:, :self.n]),
                "lanes.reset": self.reset[:self.n],
                **({"lanes.ids": self.ids[:self.n]} if self.ids is not None else {})}

    def load_state(self, arrays: dict):
        for k in ("h", "c", "win_h", "win_c"):
            getattr(self, k)[...] = arrays[f"lanes.{k}"]
        n = arrays["lanes.xn"].shape[0]
        if n > self.k2:
            raise TrainingError(f"checkpoint window holds {n} frames, more than tbptt.k2 = {self.k2}")
        self.xn[:n] = arrays["lanes.xn"]
        self.save[:, :n] = arrays["lanes.save"]
        self.reset[:n] = arrays["lanes.reset"]
        if self.ids is not None:
            self.ids[:n] = arrays["lanes.ids"]
        self.n = n


def run_lanes(arch: Architecture, theta, prepared: list[Prepared], lanes: int, dtype=np.float32,
              block: int = 512):
    """Forward every sequence (no gradient) in lanes; returns [(logits (T, O), target, mask)] per sequence."""
    if not prepared:
        return []
    B = max(1, min(lanes, len(prepared)))
    if arch.bidirectional:  # whole sequences, B at a time
        from streamrnn.nn.bidir import BidirForward

        fwd = BidirForward(arch, B, dtype, fast=np.dtype(dtype) == np.float32)
        out = []
        for g in range(0, len(prepared), B):
            idx = list(range(g, min(g + B, len(prepared))))
            X, _, _, lens = pad_sequences(prepared, idx, B, dtype)
            Yhat = np.zeros((X.shape[0], B, arch.out_size), dtype)
            fwd.forward(np.asarray(theta, dtype), X, lens, Yhat, apply_act=False)
            for b, i in enumerate(idx):
                p = prepared[i]
                out.append((Yhat[:lens[b], b].astype(np.float64), p.target, p.mask))
        return out
    X, Y, M, R, place = deal(prepared, list(range(len(prepared))), B, dtype)
    eng = BPTT(arch, B, dtype)
    L, H = arch.num_layers, arch.hidden_size
    h = np.zeros((L, B, H), dtype)
    c = np.zeros((L, B, H), dtype)
    T = X.shape[0]
    Yhat = np.zeros((T, B, arch.out_size), dtype)
    xn = np.zeros((min(block, T), B, arch.input_size), dtype)
    for t0 in range(0, T, block):
        t1 = min(t0 + block, T)
        eng.forward(theta, np.ascontiguousarray(model_input(arch, theta, X[t0:t1]), dtype), h, c, R[t0:t1],
                    Yhat[t0:t1], None, xn[:t1 - t0])
    out = [None] * len(prepared)
    for i, b, t0 in place:
        p = prepared[i]
        n = p.x.shape[0]
        out[i] = (Yhat[t0:t0 + n, b].astype(np.float64), p.target, p.mask)
    return out


def prepare_for_model(model: Model, seqs, *, loss: str | None = None, task: str | None = None):
    """(prepared sequences, loss, task) for running ``model`` on ``seqs`` as it was trained.

    ``loss``/``task`` default to what the model was trained with (file metadata)
    or to the loss matching the head activation.
    """
    meta = model.extra_meta.get("training", {})
    act_loss = {v: k for k, v in HEAD_ACTIVATION.items()}
    loss = loss or meta.get("loss") or act_loss.get(model.activation or "identity", "mse")
    task = task or meta.get("task") or "frame"
    mean, std = _norm_of(model) if task == "next_frame" else (None, None)
    # a look-ahead model's output at frame t is scored against the label of frame t - delay
    delay = model.delay if task == "frame" else 0
    return (prepare(seqs, task=task, loss=loss, n_outputs=model.output_size, mean=mean, std=std, delay=delay),
            loss, task)


def _norm_of(model: Model):
    if not model.arch.has_norm:
        return None, None
    t = model.tensors()
    return t["norm.mean"].astype(np.float64), t["norm.std"].astype(np.float64)

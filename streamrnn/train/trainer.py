"""The training loop: lanes, TBPTT, optimiser, guard, validation, checkpoints, export.

>>> import numpy as np, tempfile
>>> from streamrnn.config import load_config, TrainConfig
>>> from streamrnn.train.data import Sequence
>>> rng = np.random.default_rng(0)
>>> seqs = [Sequence(rng.standard_normal((30, 2)).astype(np.float32), None, np.ones(30, np.float32), f"s{i}")
...         for i in range(4)]
>>> cfg = load_config(TrainConfig, overrides=["data.task=next_frame", "data.loss=mse", "model.hidden_size=8",
...                   "tbptt.k1=10", "tbptt.k2=10", "tbptt.lanes=2", "train.epochs=2"], env={})
>>> result = Trainer(cfg, seqs, seqs[:1], out_dir=tempfile.mkdtemp()).fit()
>>> len(result.history), result.model.arch.has_norm
(2, True)

Checkpoints (``<out>/checkpoint.safetensors``) hold every array (parameters,
best parameters, optimiser moments, lane states and the TBPTT window) as
safetensors tensors and everything else (config, epoch, position inside the
epoch, RNG state at the epoch start, schedule and guard state, history) as
JSON in the file's metadata.  They are written to a temporary file, flushed,
fsync'ed and renamed over the old one (``os.replace``), so a crash at any
moment leaves the previous checkpoint intact.  ``fit(resume=True)`` rebuilds
the epoch's lane plan from the stored RNG state and continues from the
stored chunk; the final weights equal those of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamrnn.config import TrainConfig, to_dict
from streamrnn.errors import ConfigError, TrainingError
from streamrnn.nn.cells import Architecture, PackedLayout, init_tensors
from streamrnn.nn.model import Model, aligned_copy
from streamrnn.nn.modelfile import chmod_like_new_file
from streamrnn.train import metrics as M
from streamrnn.train.lanes import (
    TBPTTRunner,
    check_training_memory,
    make_plan,
    make_sequence_plan,
    norm_stats,
    prepare,
    prepare_for_model,
    run_lanes,
)
from streamrnn.train.losses import HEAD_ACTIVATION, frame_losses
from streamrnn.train.optim import Optimizer, clip_gradients, scheduled_lr

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.safetensors"
MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"
_CKPT_KEY = "streamrnn_checkpoint"
CKPT_VERSION = 2  # 2: the SHA-256 checksum (metadata "sha256") over the metadata JSON and every tensor
_CKPT_SUM = "sha256"


@dataclass
class TrainResult:
    model: Model  # the best model (by train.monitor), as exported
    history: list = field(default_factory=list)  # one dict per epoch
    steps: int = 0
    bad_steps: int = 0
    stopped_early: bool = False
    theta: np.ndarray | None = None  # final (last) parameters


# ------------------------------------------------------------------------------------------------
# data


def infer_outputs(cfg: TrainConfig, seqs, labels=None) -> tuple[int, list[str] | None]:
    """Head width and labels from the config (or ``labels``) and the training targets."""
    d = cfg.data
    labels = list(labels or d.classes) or None
    if d.task == "next_frame":
        return seqs[0].x.shape[1], None
    ys = [np.asarray(s.y) for s in seqs if s.y is not None]
    if not ys:
        raise TrainingError(f"task {d.task!r} with loss {d.loss!r} needs targets, but no training sequence has y")
    if d.loss == "ce":
        n = max(int(y.max()) + 1 if y.ndim == 1 else y.shape[1] for y in ys)
        if labels is not None:
            if len(labels) < n:
                raise ConfigError(f"data.classes names {len(labels)} classes but the targets use {n}")
            n = len(labels)
        return n, labels
    widths = {1 if y.ndim == 1 else y.shape[1] for y in ys}
    if len(widths) != 1:
        raise TrainingError(f"training targets have different widths {sorted(widths)}")
    n = widths.pop()
    if labels is not None and len(labels) != n:
        raise ConfigError(f"data.classes names {len(labels)} labels but the targets have {n} columns")
    return n, labels


def load_data(cfg: TrainConfig, base_dir=".", out_dir=None):
    """(train, valid, frontend dict | None, classes | None) for the config; paths relative to ``base_dir``.

    For a manifest with ``ce`` and no ``data.classes``, the classes are the
    manifest's sorted class names.
    """
    from streamrnn.train.data import load_dataset

    d = cfg.data
    if not d.train:
        raise ConfigError("data.train is empty: give a folder of .npz files or a JSONL manifest")
    base = Path(base_dir)

    def path(p):
        q = Path(p)
        return q if q.is_absolute() else base / q

    frontend = None
    train_path = path(d.train)
    classes = list(d.classes) or None
    cache = d.cache_dir and path(d.cache_dir)
    if not train_path.is_dir():
        from streamrnn.audio.frontend import as_frontend

        frontend = as_frontend({"type": d.frontend}).to_dict()
        if cache == "" and out_dir is not None:
            cache = Path(out_dir) / "cache"
        if classes is None and d.loss == "ce":
            from streamrnn.train.data import manifest_classes

            classes = manifest_classes(train_path)
    kw = dict(frontend=frontend, cache_dir=cache or None, classes=classes, nonfinite=d.nonfinite)
    train = load_dataset(train_path, **kw)
    valid = load_dataset(path(d.valid), **kw) if d.valid else None
    train, valid = _hold_out(cfg, train, valid)
    if d.offset_frames and d.offset_weight != 1.0:
        from streamrnn.train.data import emphasise_offsets

        train = emphasise_offsets(train, d.offset_frames, d.offset_weight)  # validation stays unweighted
    return train, valid, frontend, classes


def _hold_out(cfg: TrainConfig, train, valid):
    """Without a validation set, hold out ``data.valid_fraction`` of the training sequences."""
    d = cfg.data
    if valid is None and d.valid_fraction > 0 and len(train) > 1:
        # a separate generator: the held-out split never disturbs the training RNG stream
        perm = np.random.default_rng([cfg.train.seed, 1]).permutation(len(train))
        n_val = max(1, int(round(len(train) * d.valid_fraction)))
        valid = [train[i] for i in sorted(perm[:n_val])]
        train = [train[i] for i in sorted(perm[n_val:])]
    return train, valid


def load_text_data(cfg: TrainConfig, base_dir="."):
    """(train, valid, vocab) for ``data.kind = "text"``: the vocabulary comes from the training files."""
    from streamrnn.train.text import build_vocab, read_texts, text_sequences

    d = cfg.data
    if not d.train:
        raise ConfigError("data.train is empty: give a UTF-8 .txt file or a folder of them")
    base = Path(base_dir)
    texts = read_texts(base / d.train)
    vocab = build_vocab(texts, d.tokens, d.max_vocab)
    train = text_sequences(texts, vocab, d.seq_len)
    valid = text_sequences(read_texts(base / d.valid), vocab, d.seq_len) if d.valid else None
    train, valid = _hold_out(cfg, train, valid)
    return train, valid, vocab


def sequences_for_model(model: Model, data) -> list:
    """The sequences of ``data`` as ``model`` reads them: text files through a token model's
    vocabulary, else an .npz folder or an audio manifest through its front end (as ``eval``)."""
    if model.arch.vocab_size is not None:
        from streamrnn.nn.text import model_vocab
        from streamrnn.train.text import read_texts, text_sequences

        seq_len = int(model.extra_meta.get("training", {}).get("seq_len", 256))
        return text_sequences(read_texts(data), model_vocab(model), seq_len)
    from streamrnn.train.data import load_dataset

    return load_dataset(data, frontend=model.frontend, classes=model.labels)


# ------------------------------------------------------------------------------------------------
# metrics


def evaluate_outputs(outs, loss: str, task: str) -> dict:
    """Loss and task metrics from ``run_lanes`` outputs [(logits (T, O), target, mask)]."""
    tot, wsum = 0.0, 0.0
    logits, targets = [], []
    for z, tg, m in outs:
        l, _ = frame_losses(loss, z[:, None, :], tg[:, None, 0] if loss == "ce" else tg[:, None, :])
        sel = m > 0
        tot += float((l[:, 0] * m)[sel].sum())
        wsum += float(m[sel].sum())
        logits.append(z[sel])
        targets.append(tg[sel])
    res = {"loss": tot / wsum if wsum > 0 else float("nan"), "frames": int(sum(len(z) for z in logits))}
    if loss == "mse" or not logits:
        return res
    z = np.concatenate(logits)
    tg = np.concatenate(targets)
    if loss == "bce":
        p = 0.5 * (1.0 + np.tanh(0.5 * z))  # the sigmoid without exp overflow (no RuntimeWarning for |z| > 88)
        t = (tg > 0.5).astype(np.int64).ravel()
        pr = p.ravel()
        res["accuracy"] = M.accuracy(t, (pr >= 0.5).astype(np.int64))
        res["precision"], res["recall"], res["f1"] = M.precision_recall_f1(t, pr)
        res["auc"] = M.roc_auc(t, pr) if 0 < t.sum() < len(t) else None
    else:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        t = tg[:, 0].astype(np.int64)
        pred = p.argmax(axis=1)
        res["accuracy"] = M.accuracy(t, pred)
        res["precision"], res["recall"], res["f1"] = M.macro_precision_recall_f1(t, pred,
                                                                                labels=list(range(z.shape[1])))
        aucs = [M.roc_auc(t == k, p[:, k]) for k in range(z.shape[1]) if 0 < (t == k).sum() < len(t)]
        res["auc"] = float(np.mean(aucs)) if aucs else None  # one-vs-rest, macro average
    return res


def evaluate(model: Model, seqs, *, loss: str | None = None, task: str | None = None, lanes: int = 16) -> dict:
    """Run ``model`` over sequences (each from zero state) and return loss and metrics.

    ``loss``/``task`` default to what the model was trained with (file metadata)
    or to the loss matching the head activation.
    """
    prep, loss, task = prepare_for_model(model, seqs, loss=loss, task=task)
    outs = run_lanes(model.arch, np.asarray(model.theta), prep, lanes, model.dtype)
    res = evaluate_outputs(outs, loss, task)
    if loss == "bce" and task == "frame" and model.output_size == 1 and model.frontend:
        res.update(_vad_extras(model, outs))
    res.update(task=task, loss_name=loss, sequences=len(seqs))
    return res


def _vad_extras(model: Model, outs) -> dict:
    """False alarms of a one-output sigmoid detector on frame labels (``metrics.vad_metrics``).

    A false alarm is a run of frames with p >= 0.5 inside one sequence that touches no
    labelled frame; the rate is per hour of labelled non-speech, at the front end's frame
    rate (frames per second = sample_rate / hop_length).
    """
    fe = model.frontend
    frame_rate = float(fe.get("sample_rate", 16000)) / float(fe.get("hop_length", 160))
    probs, labels = [], []
    for z, tg, m in outs:
        if tg is None:
            return {}
        sel = m > 0
        probs.append(0.5 * (1.0 + np.tanh(0.5 * z[sel, 0])))  # sigmoid without exp overflow, (T,)
        labels.append(tg[sel, 0] > 0.5)
    v = M.vad_metrics(probs, labels, frame_rate=frame_rate)
    return {k: v[k] for k in ("false_alarms", "nonspeech_hours", "false_alarms_per_hour")}


# ------------------------------------------------------------------------------------------------
# checkpoints


def write_checkpoint(path, arrays: dict, meta: dict) -> None:
    """Atomically write a checkpoint: temp file, flush + fsync, ``os.replace``."""
    from safetensors.numpy import save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    meta_json = json.dumps(meta)
    save_file(arrays, str(tmp), metadata={_CKPT_KEY: meta_json, _CKPT_SUM: checkpoint_checksum(arrays, meta_json)})
    chmod_like_new_file(tmp)  # 0644 under umask 022, as the model file (safetensors writes 0600)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def checkpoint_checksum(arrays: dict, meta_json: str) -> str:
    """Hex SHA-256 over the metadata JSON and every tensor (sorted by name: name, dtype, shape, bytes).

    >>> import numpy as np
    >>> len(checkpoint_checksum({"theta": np.zeros(3, np.float32)}, "{}"))
    64
    """
    h = hashlib.sha256(meta_json.encode("utf-8"))
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"\0{name}\0{a.dtype.str}\0{a.shape}\0".encode("utf-8"))
        h.update(a.reshape(-1).view(np.uint8).data)
    return h.hexdigest()


def read_checkpoint(path) -> tuple[dict, dict]:
    """(arrays, meta) of a checkpoint; TrainingError for a missing, truncated, damaged (checksum,
    metadata, NaN/Inf parameters) or foreign file, in one line naming the file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path}: no checkpoint to resume from")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta_all = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise TrainingError(f"{path}: unreadable checkpoint (truncated or not safetensors): {e}") from None
    if _CKPT_KEY not in meta_all:
        raise TrainingError(f"{path}: not a streamrnn checkpoint (no {_CKPT_KEY!r} metadata)")
    if _CKPT_SUM not in meta_all:
        raise TrainingError(f"{path}: checkpoint has no checksum (written by streamrnn before checkpoint "
                            f"version {CKPT_VERSION}?); start afresh without --resume")
    if checkpoint_checksum(arrays, meta_all[_CKPT_KEY]) != meta_all[_CKPT_SUM]:
        raise TrainingError(f"{path}: checkpoint is damaged: its SHA-256 checksum does not match its content; "
                            f"start afresh without --resume")
    try:
        meta = json.loads(meta_all[_CKPT_KEY])
    except (json.JSONDecodeError, RecursionError) as e:
        raise TrainingError(f"{path}: checkpoint metadata is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("version") != CKPT_VERSION:
        v = meta.get("version") if isinstance(meta, dict) else None
        raise TrainingError(f"{path}: checkpoint version {v!r}, this streamrnn reads {CKPT_VERSION}")
    missing = [k for k in ("config", "fingerprint", "optim", "state") if k not in meta]
    if missing or "theta" not in arrays or "best_theta" not in arrays:
        raise TrainingError(f"{path}: checkpoint lacks {', '.join(missing) or 'theta/best_theta'}")
    for k in ("theta", "best_theta"):
        if not np.isfinite(arrays[k]).all():
            raise TrainingError(f"{path}: checkpoint parameters {k!r} hold NaN/Inf; start afresh without --resume")
    return arrays, meta


def divergence_advice(cfg: TrainConfig) -> str:
    """What to change after the NaN guard gave up, given what ``cfg`` already does: clipping by
    norm is suggested only to a config without it (else a lower ``optim.clip_norm``).

    >>> from streamrnn.config import load_config, TrainConfig
    >>> divergence_advice(load_config(TrainConfig, overrides=["optim.clip=none"], env={}))
    "lower optim.lr (now 0.001), check the data for NaN/Inf, or use optim.clip = 'norm'"
    >>> divergence_advice(load_config(TrainConfig, overrides=["optim.lr=0.01"], env={}))
    'lower optim.lr (now 0.01), check the data for NaN/Inf, or lower optim.clip_norm (now 1)'
    """
    o = cfg.optim
    clip = f"lower optim.clip_norm (now {o.clip_norm:g})" if o.clip == "norm" else "use optim.clip = 'norm'"
    return f"lower optim.lr (now {o.lr:g}), check the data for NaN/Inf, or {clip}"


# ------------------------------------------------------------------------------------------------
# trainer


class Trainer:
    """Train a model on in-memory sequences (``data.Sequence``) according to a TrainConfig.

    ``on_step(info)`` is called after every update with loss, grad_norm (before
    clipping), lr, epoch, step and progress; ``on_epoch(record)`` after every
    validation.  ``out_dir`` receives the checkpoint, the best model, the
    metrics log and (with matplotlib) the curves.  ``frontend`` (dict) and
    ``labels`` go into the exported model's metadata.
    """

    def __init__(self, cfg: TrainConfig, train, valid=None, *, out_dir=None, frontend: dict | None = None,
                 name: str | None = None, labels=None, on_step=None, on_epoch=None, gradflow_lags: int = 0,
                 vocab=None, on_start=None):
        if not train:
            raise TrainingError("no training sequences")
        self.cfg = cfg
        self.train_seqs, self.valid_seqs = list(train), list(valid or [])
        self.out = Path(out_dir) if out_dir is not None else None
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
        self.frontend = frontend
        self.name = cfg.model.name or name or "model"
        self.on_step, self.on_epoch, self.on_start = on_step, on_epoch, on_start
        self.gradflow_lags = int(gradflow_lags)  # > 0: measure the gradient-flow horizon after every epoch
        if self.gradflow_lags and cfg.model.bidirectional:
            log.warning("gradient flow not measured: it needs a unidirectional model (model.bidirectional is set)")
            self.gradflow_lags = 0
        self.grad_hook = None  # tests: fn(step, grad) may poison a gradient
        d, mc = cfg.data, cfg.model
        I = self.train_seqs[0].x.shape[1]
        for s in self.train_seqs + self.valid_seqs:
            if s.x.ndim != 2 or s.x.shape[1] != I:
                raise TrainingError(f"{s.name}: x has shape {s.x.shape}, expected (T, {I}) like the first sequence")
        if mc.delay and d.task != "frame":
            raise ConfigError(f"model.delay = {mc.delay} needs data.task = 'frame' (a per-frame target to delay), "
                              f"got {d.task!r}")
        self.vocab = vocab  # token model: x holds token ids, the model embeds them (train/text.py)
        if vocab is not None:
            if mc.bidirectional or mc.delay:
                raise ConfigError("a text (next-token) model predicts from the past only: model.bidirectional "
                                  "and model.delay must stay off with data.kind = 'text'")
            n_out, self.labels = len(vocab), None
            self.arch = Architecture(mc.cell, mc.embedding_size, mc.hidden_size, mc.num_layers, n_out,
                                     HEAD_ACTIVATION[d.loss], vocab_size=len(vocab))
        else:
            n_out, self.labels = infer_outputs(cfg, self.train_seqs, labels)
            self.arch = Architecture(mc.cell, I, mc.hidden_size, mc.num_layers, n_out, HEAD_ACTIVATION[d.loss],
                                     has_norm=mc.norm, bidirectional=mc.bidirectional)
        self.layout = PackedLayout(self.arch)
        self.dtype = np.dtype(cfg.train.dtype)
        # the estimate, before any size-dependent allocation (TrainingError if too much); a bidirectional
        # model runs whole sequences (padded to the longest) instead of TBPTT windows
        t = cfg.tbptt
        lengths = [s.x.shape[0] for s in self.train_seqs]
        k1, k2 = (max(lengths),) * 2 if mc.bidirectional else (t.k1, t.k2)
        check_training_memory(self.arch, t.lanes, k1, k2, sum(lengths), n_out, self.dtype, cfg.train.max_memory)
        self.mean, self.std = norm_stats(self.train_seqs) if self.arch.has_norm else (None, None)
        self.unigram_ppl = None
        if vocab is not None and self.valid_seqs:
            from streamrnn.train.text import unigram_perplexity

            self.unigram_ppl = unigram_perplexity(self.train_seqs, self.valid_seqs, len(vocab))
        kw = dict(task=d.task, loss=d.loss, n_outputs=n_out, mean=self.mean, std=self.std, delay=mc.delay)
        self.train_p = prepare(self.train_seqs, **kw)
        self.valid_p = prepare(self.valid_seqs, **kw)
        t = cfg.tbptt
        if mc.bidirectional:  # whole sequences: a TBPTT chunk would cut the reverse direction's future short
            from streamrnn.train.bidir import SequenceRunner

            self.runner = SequenceRunner(self.arch, t.lanes, d.loss, self.dtype)
        else:
            self.runner = TBPTTRunner(self.arch, t.lanes, t.k1, t.k2, d.loss, self.dtype)
        trainable = np.ones(self.layout.size, bool)
        decay = np.zeros(self.layout.size, bool)
        for nm, (off, shape, _) in self.layout.entries.items():
            n = int(np.prod(shape))
            if nm.startswith("norm."):
                trainable[off:off + n] = False  # statistics of the training set, frozen
            if "weight" in nm:
                decay[off:off + n] = True
        self.trainable = trainable
        o = cfg.optim
        self.opt = Optimizer(o.name, self.layout.size, beta1=o.beta1, beta2=o.beta2, eps=o.eps,
                             momentum=o.momentum, weight_decay=o.weight_decay, trainable=trainable, decay=decay,
                             dtype=self.dtype)
        frames = sum(p.x.shape[0] for p in self.train_p)
        k_mean = t.k1 * (1.0 - t.jitter / 2.0)
        per_epoch = (math.ceil(len(self.train_p) / t.lanes) if mc.bidirectional
                     else math.ceil(frames / t.lanes / k_mean))
        self.per_epoch = max(1, per_epoch)
        self.total_steps = cfg.train.epochs * self.per_epoch
        self.fingerprint = {"n_train": len(self.train_p), "train_frames": int(frames),
                            "n_valid": len(self.valid_p), "n_params": self.layout.size}
        sc = cfg.schedule
        if sc.warmup_steps > self.total_steps:
            log.warning("schedule.warmup_steps = %d exceeds the %d updates of this run (%d epoch(s) of about %d): "
                        "the learning rate peaks at %.3g, never reaching optim.lr = %g; lower "
                        "schedule.warmup_steps or train longer", sc.warmup_steps, self.total_steps,
                        cfg.train.epochs, self.per_epoch, o.lr * self.total_steps / sc.warmup_steps, o.lr)

    def describe(self) -> dict:
        """The run's size: ``n_train``/``n_valid`` sequences, ``train_frames``/``valid_frames``,
        ``updates_per_epoch`` (about: TBPTT windows are jittered) and ``total_updates``."""
        return {"n_train": len(self.train_p), "n_valid": len(self.valid_p),
                "train_frames": self.fingerprint["train_frames"],
                "valid_frames": int(sum(p.x.shape[0] for p in self.valid_p)),
                "updates_per_epoch": self.per_epoch, "total_updates": self.total_steps}

    # --- state ----------------------------------------------------------------------------------
    def _fresh(self):
        rng = np.random.default_rng(self.cfg.train.seed)
        tensors = init_tensors(self.arch, rng, self.cfg.model.init)
        if self.arch.cell == "gru" and self.cfg.model.gru_update_bias:
            H = self.arch.hidden_size
            for k in range(self.arch.num_layers):
                for sfx in self.arch.suffixes():
                    tensors[f"rnn.bias_ih_l{k}{sfx}"][H:2 * H] += self.cfg.model.gru_update_bias  # gate z
        if self.arch.has_norm:
            tensors["norm.mean"], tensors["norm.std"] = self.mean, self.std
        self.theta = aligned_copy(self.layout.pack(tensors, self.dtype))  # weight rows on cache lines, as Model's
        self.rng = rng
        self.best_theta = self.theta.copy()
        self.good_theta = self.theta.copy()
        self.opt.m[...] = 0
        self.opt.v[...] = 0
        self.opt.t = 0
        self.runner.clear()
        self.s = {"epoch": 0, "chunk": 0, "step": 0, "lr_scale": 1.0, "bad_run": 0, "bad_total": 0,
                  "best": None, "best_epoch": -1, "since_best": 0, "history": [], "stopped_early": False,
                  "epoch_rng_state": rng.bit_generator.state, "epoch_loss": 0.0, "epoch_weight": 0.0,
                  "grad_norm_sum": 0.0, "n_updates_epoch": 0, "grad_norm_max": 0.0, "n_clipped": 0}

    def _checkpoint(self):
        if self.out is None:
            return
        arrays = {"theta": self.theta, "best_theta": self.best_theta, **self.opt.state_arrays(),
                  **self.runner.state_arrays()}
        meta = {"version": CKPT_VERSION, "config": to_dict(self.cfg), "fingerprint": self.fingerprint,
                "optim": self.opt.state_meta(), "state": self.s}
        write_checkpoint(self.out / CHECKPOINT, arrays, meta)

    def _resume(self):
        arrays, meta = read_checkpoint(self.out / CHECKPOINT)
        if meta["fingerprint"] != self.fingerprint:
            raise TrainingError(f"checkpoint was made with different data or model: {meta['fingerprint']} "
                                f"vs now {self.fingerprint}")
        if meta["config"] != to_dict(self.cfg):
            diff = [f"{s}.{k}" for s, sec in to_dict(self.cfg).items() for k in sec
                    if meta["config"].get(s, {}).get(k) != sec[k]]
            if any(not k.startswith("train.epochs") for k in diff):
                raise TrainingError(f"checkpoint config differs in {', '.join(diff)}; resume with the same config")
        self._fresh()
        self.theta[...] = arrays["theta"]
        self.best_theta[...] = arrays["best_theta"]
        self.good_theta[...] = self.theta
        self.opt.load_state(arrays, meta["optim"])
        self.runner.load_state(arrays)
        self.s = {**self.s, **meta["state"]}  # keys added since the checkpoint was written keep their start values
        log.info("resumed at epoch %d, chunk %d, step %d", self.s["epoch"], self.s["chunk"], self.s["step"])

    # --- loop -----------------------------------------------------------------------------------
    def fit(self, resume: bool = False, max_steps: int | None = None) -> TrainResult:
        """Train to the end (or early stop); returns the best model.

        ``resume``: continue from ``<out>/checkpoint.safetensors``.  ``max_steps``
        stops after that many updates *without* saving anything more, like a
        kill (for tests of resume).
        """
        if resume:
            if self.out is None:
                raise ConfigError("resume needs an output folder with a checkpoint")
            self._resume()
        else:
            self._fresh()
        info = self.describe()
        log.info("data: %(n_train)d training sequences (%(train_frames)d frames), %(n_valid)d validation; "
                 "about %(updates_per_epoch)d updates per epoch, %(total_updates)d in all", info)
        if self.on_start is not None:
            self.on_start(info)
        cfg, s = self.cfg, self.s
        steps_this_run = 0
        while s["epoch"] < cfg.train.epochs and not s["stopped_early"]:
            # the lane plan of an epoch is a function of the RNG state at its start only
            self.rng.bit_generator.state = s["epoch_rng_state"]
            if self.arch.bidirectional:
                plan = make_sequence_plan(self.train_p, cfg.tbptt.lanes, self.rng, self.dtype)
            else:
                plan = make_plan(self.train_p, cfg.tbptt.lanes, cfg.tbptt.k1, cfg.tbptt.jitter, self.rng, self.dtype)
            if s["chunk"] == 0:
                self.runner.clear()
            t_epoch = time.perf_counter()
            for ci in range(s["chunk"], len(plan.bounds)):
                if max_steps is not None and steps_this_run >= max_steps:
                    return self._result()
                self._update(plan, len(plan.bounds), ci)
                steps_this_run += 1
                s["chunk"] = ci + 1
                if cfg.train.checkpoint_every and s["step"] % cfg.train.checkpoint_every == 0:
                    self._checkpoint()
            self._end_epoch(time.perf_counter() - t_epoch)
        return self._result()

    def _update(self, plan, n_chunks, ci):
        cfg, s = self.cfg, self.s
        loss, w, grad = self.runner.step(self.theta, *plan.chunk(ci))
        if w == 0:
            return  # padding only: nothing to learn from these frames
        grad[~self.trainable] = 0.0
        if self.grad_hook is not None:
            self.grad_hook(s["step"], grad)
        o = cfg.optim
        # clipped: the norm above clip_norm ("norm"), or any element beyond clip_value ("value")
        clipped = (o.clip == "value" and float(np.abs(grad).max()) > o.clip_value)
        gnorm = clip_gradients(grad, o.clip, o.clip_norm, o.clip_value)
        clipped = clipped or (o.clip == "norm" and gnorm > o.clip_norm)
        sc = cfg.schedule
        lr = s["lr_scale"] * scheduled_lr(o.lr, s["step"], s["epoch"], self.total_steps, name=sc.name,
                                          warmup_steps=sc.warmup_steps, min_lr=sc.min_lr,
                                          step_epochs=sc.step_epochs, gamma=sc.gamma)
        ok = math.isfinite(loss) and math.isfinite(gnorm)
        if ok:
            m, v, t = self.opt.m.copy(), self.opt.v.copy(), self.opt.t
            self.opt.step(self.theta, grad, lr)
            if not np.isfinite(self.theta).all():
                self.opt.m[...], self.opt.v[...], self.opt.t = m, v, t
                ok = False
        if ok:
            self.good_theta[...] = self.theta
            s["bad_run"] = 0
            s["epoch_loss"] += loss * w
            s["epoch_weight"] += w
            s["grad_norm_sum"] += gnorm
            s["grad_norm_max"] = max(s["grad_norm_max"], gnorm)
            s["n_clipped"] += int(clipped)
            s["n_updates_epoch"] += 1
        else:
            # NaN/Inf guard: skip, restore the last good parameters, halve the learning rate
            self.theta[...] = self.good_theta
            s["bad_run"] += 1
            s["bad_total"] += 1
            s["lr_scale"] *= 0.5
            lanes = self.runner.drop_bad_state()
            log.warning("non-finite step %d (loss %s, grad norm %s): update skipped, parameters restored, "
                        "lr scale now %g, %d lane state(s) zeroed", s["step"], loss, gnorm, s["lr_scale"], lanes)
            if s["bad_run"] >= cfg.train.max_bad_steps:
                raise TrainingError(f"training diverged: {s['bad_run']} consecutive updates with NaN/Inf loss or "
                                    f"gradient (last at epoch {s['epoch']}, step {s['step']}); "
                                    f"{divergence_advice(cfg)}")
        s["step"] += 1
        if self.on_step is not None:
            self.on_step({"epoch": s["epoch"], "step": s["step"], "chunk": ci + 1, "n_chunks": n_chunks,
                          "loss": loss, "grad_norm": gnorm, "lr": lr, "ok": ok})

    def _end_epoch(self, seconds):
        cfg, s = self.cfg, self.s
        rec = {"epoch": s["epoch"] + 1, "step": s["step"], "seconds": round(seconds, 3),
               "train_loss": s["epoch_loss"] / s["epoch_weight"] if s["epoch_weight"] else None,
               "grad_norm_mean": s["grad_norm_sum"] / s["n_updates_epoch"] if s["n_updates_epoch"] else None,
               "grad_norm_max": s["grad_norm_max"] if s["n_updates_epoch"] else None,  # before clipping
               "clipped_fraction": s["n_clipped"] / s["n_updates_epoch"] if s["n_updates_epoch"] else None,
               "lr_scale": s["lr_scale"], "bad_steps": s["bad_total"]}
        if self.valid_p:
            outs = run_lanes(self.arch, self.theta, self.valid_p, cfg.tbptt.lanes, self.dtype)
            res = evaluate_outputs(outs, cfg.data.loss, cfg.data.task)
            for k in ("loss", "accuracy", "f1", "auc", "precision", "recall"):
                if k in res:
                    rec[f"valid_{k}"] = res[k]
            if self.vocab is not None:  # next-token model: perplexity beside the unigram baseline
                rec["valid_perplexity"] = math.exp(res["loss"]) if math.isfinite(res["loss"]) else None
                rec["unigram_perplexity"] = self.unigram_ppl
        if self.gradflow_lags:
            rec.update(self._gradflow())
        key = cfg.train.monitor if self.valid_p else "train_loss"
        if key not in rec:
            raise ConfigError(f"train.monitor = {key!r} is not computed for loss {cfg.data.loss!r}; use valid_loss")
        value = rec[key]  # None (e.g. AUC of a one-class validation set) counts as no improvement
        lower = key.endswith("loss")
        improved = value is not None and math.isfinite(value) and (
            s["best"] is None or (value < s["best"] if lower else value > s["best"]))
        if improved:
            s["best"], s["best_epoch"], s["since_best"] = value, s["epoch"] + 1, 0
            self.best_theta[...] = self.theta
        else:
            s["since_best"] += 1
        rec["best_epoch"] = s["best_epoch"]
        s["history"].append(rec)
        log.info("epoch %d: %s", s["epoch"] + 1, rec)
        s["epoch"] += 1
        s["chunk"] = 0
        s["epoch_rng_state"] = self.rng.bit_generator.state
        s["epoch_loss"] = s["epoch_weight"] = s["grad_norm_sum"] = s["grad_norm_max"] = 0.0
        s["n_updates_epoch"] = s["n_clipped"] = 0
        if cfg.train.patience and s["since_best"] >= cfg.train.patience:
            s["stopped_early"] = True
            log.info("early stop: %s did not improve for %d epochs", key, cfg.train.patience)
        if self.out is not None:
            self._export(self.best_theta)
            self._write_metrics()
            self._checkpoint()
        if self.on_epoch is not None:
            self.on_epoch(rec)

    def _gradflow(self) -> dict:
        """Gradient-flow horizon of the current weights on the validation (else training) sequences."""
        from streamrnn.errors import InputError
        from streamrnn.train.gradflow import fit_decay, lag_norms

        seqs = self.valid_seqs or self.train_seqs
        K = min(self.gradflow_lags, max(len(q.x) for q in seqs) - 1)
        if K < 2:
            return {"horizon_frames": None, "gradflow_rate": None}
        try:
            norms, _ = lag_norms(self.model_for(self.theta), seqs, max_lag=K, n_anchors=8,
                                 seed=self.cfg.train.seed)
            slope, horizon, _ = fit_decay(norms)
        except InputError as e:
            log.warning("gradient flow not measured: %s", e)
            return {"horizon_frames": None, "gradflow_rate": None}
        return {"horizon_frames": horizon, "gradflow_rate": math.exp(slope), "gradflow_max_lag": K}

    def model_for(self, theta) -> Model:
        """A runtime model (float32, as exported) from packed parameters."""
        d = self.cfg.data
        meta = {"training": {"task": d.task, "loss": d.loss, "epochs": self.s["epoch"],
                             "best_epoch": self.s["best_epoch"], "k1": self.cfg.tbptt.k1, "k2": self.cfg.tbptt.k2}}
        if self.vocab is not None:
            meta["vocab"] = self.vocab.to_meta()
            meta["training"]["seq_len"] = d.seq_len
        if self.arch.bidirectional:
            meta["training"]["windows"] = "sequence"  # whole sequences, not TBPTT chunks
        return Model(self.arch, self.layout.unpack(np.asarray(theta, np.float64)), labels=self.labels,
                     frontend=self.frontend, name=self.name, extra_meta=meta, delay=self.cfg.model.delay)

    def _export(self, theta):
        from streamrnn.nn.modelfile import save_model

        save_model(self.model_for(theta), self.out / MODEL_FILE)

    def _write_metrics(self):
        tmp = self.out / (METRICS_FILE + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in self.s["history"]))
        os.replace(tmp, self.out / METRICS_FILE)  # rewritten whole: a resumed run never duplicates lines

    def _result(self) -> TrainResult:
        s = self.s
        return TrainResult(self.model_for(self.best_theta), list(s["history"]), s["step"], s["bad_total"],
                           s["stopped_early"], self.theta.copy())


def plot_curves(history: list, path) -> bool:
    """PNG of train/valid loss per epoch; False (nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ep = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("train_loss", "valid_loss"):
        vals = [r.get(key) for r in history]
        if any(v is not None for v in vals):
            ax.plot(ep, [np.nan if v is None else v for v in vals], marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def check_out_dir(out, *, resume: bool = False, force: bool = False) -> None:
    """ConfigError when ``out`` already holds a model or checkpoint and neither ``resume`` (continue
    it) nor ``force`` (start afresh, overwriting) is given: a second run never silently replaces
    the first one's results."""
    out = Path(out)
    found = [n for n in (MODEL_FILE, CHECKPOINT) if (out / n).exists()]
    if found and not resume and not force:
        raise ConfigError(f"{out} already holds {' and '.join(found)}: --resume continues that run, --force "
                          f"starts afresh and overwrites it, or choose another --out")


def train_from_config(cfg: TrainConfig, *, base_dir=".", out_dir="runs/train", resume=False, on_step=None,
                      on_epoch=None, name=None, gradflow_lags: int = 0, on_start=None) -> TrainResult:
    """Load the data named in ``cfg`` and train; the CLI's entry point."""
    vocab = None
    if cfg.data.kind == "text":
        (train, valid, vocab), frontend, classes = load_text_data(cfg, base_dir), None, None
    else:
        train, valid, frontend, classes = load_data(cfg, base_dir, out_dir)
    tr = Trainer(cfg, train, valid, out_dir=out_dir, frontend=frontend, name=name, labels=classes,
                 on_step=on_step, on_epoch=on_epoch, gradflow_lags=gradflow_lags, vocab=vocab, on_start=on_start)
    res = tr.fit(resume=resume)
    plot_curves(res.history, Path(out_dir) / "curves.png")
    return res

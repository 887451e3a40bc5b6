"""Configuration: frozen dataclasses with commented defaults, TOML files and overrides.

Layers, later ones win::

    dataclass defaults  <  TOML file  <  environment (STREAMRNN_<SECTION>__<KEY>)  <  --set key=value

The loader is generic: any frozen dataclass whose fields are scalars, lists,
``X | None`` or nested frozen dataclasses (TOML tables) works.  Unknown keys
anywhere are a ``ConfigError`` naming the key and the known ones; values are
converted and checked against the field's type.

Environment overrides: for a config with prefix ``STREAMRNN_TRAIN``, the
variable ``STREAMRNN_TRAIN__OPTIM__LR=0.01`` sets ``optim.lr`` (``__``
separates levels; names are case-insensitive).  Values are parsed like
``--set`` values.

``--set`` values are TOML literals when they parse as one (``3``, ``1e-3``,
``true``, ``["a", "b"]``, ``"text"``), else plain strings (``gru``);
``none``/``null`` sets an optional field to None.

>>> cfg = load_config(TrainConfig, overrides=["optim.lr=0.01", "model.cell=lstm"], env={})
>>> cfg.optim.lr, cfg.model.cell
(0.01, 'lstm')
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from streamrnn.errors import ConfigError

# ------------------------------------------------------------------------------------------------
# generic loader


def _hints(cls) -> dict:
    """Field name -> type of a dataclass (class variables excluded)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _is_section(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def convert(value, tp, key: str):
    """Check/convert one value against a field type; raise ConfigError naming ``key``.

    The one conversion of every config value (training and streaming): TOML values, environment
    strings and command-line values alike.  Numbers must be finite.
    """
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return convert(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin in (list, tuple):
        (item,) = typing.get_args(tp)[:1] or (str,)
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(convert(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        v = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            v = float(value)
        elif isinstance(value, str):
            try:
                v = float(value)
            except ValueError:
                pass
        if v is None:
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(v):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return v
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if _is_section(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table of settings, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    return value


def from_dict(cls, d: dict, prefix: str = ""):
    """Build a dataclass from a (nested) dict; unknown keys are errors that name the key."""
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in d if k not in names]
    if unknown:
        raise ConfigError(f"unknown config key {prefix + unknown[0]!r}; known keys in "
                          f"{prefix.rstrip('.') or 'the top level'}: {', '.join(names)}")
    kw = {k: convert(v, hints[k], f"{prefix}{k}") for k, v in d.items()}
    try:
        return cls(**kw)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {e}") from None


def to_dict(cfg) -> dict:
    """The config as plain nested dicts (lists for tuples): JSON- and TOML-able."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            v = to_dict(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out


def _parse_literal(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _set_path(d: dict, cls, path: list[str], value, full: str):
    """Put ``value`` at ``path`` inside nested dict ``d``, checking the keys against ``cls``."""
    hints = _hints(cls)
    key = path[0]
    if key not in hints:
        raise ConfigError(f"unknown config key {full!r}: {key!r} is not one of {', '.join(hints)}")
    tp = hints[key]
    if len(path) == 1:
        if _is_section(tp):
            raise ConfigError(f"{full!r} is a section; set one of its keys, e.g. {full}.{next(iter(_hints(tp)))}")
        d[key] = value
        return
    if not _is_section(tp):
        raise ConfigError(f"unknown config key {full!r}: {key!r} is not a section")
    sub = d.setdefault(key, {})
    if not isinstance(sub, dict):
        raise ConfigError(f"{key}: expected a table of settings")
    _set_path(sub, tp, path[1:], value, full)


def apply_overrides(cls, d: dict, overrides) -> dict:
    """Apply ``key=value`` strings (dotted keys) to the nested dict ``d`` (in place)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr=0.001)")
        k, v = item.split("=", 1)
        k = k.strip()
        _set_path(d, cls, k.split("."), _parse_literal(v.strip()), k)
    return d


def env_overrides(prefix: str, env=None) -> list[str]:
    """``PREFIX__A__B=value`` environment variables as ``a.b=value`` overrides (sorted)."""
    env = os.environ if env is None else env
    head = prefix.upper() + "__"
    out = []
    for name in sorted(env):
        if name.upper().startswith(head):
            key = name[len(head):].lower().replace("__", ".")
            out.append(f"{key}={env[name]}")
    return out


MAX_CONFIG_BYTES = 2**20  # a TOML config larger than 1 MiB is refused


def read_text_file(path, max_bytes: int, what: str, error=ConfigError) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes``; ``error`` naming the file otherwise.

    Endless or special files (``/dev/zero``, FIFOs) are refused before reading, and at most
    ``max_bytes + 1`` bytes are ever read.  Messages never quote the file's content.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except OSError as e:
        raise error(f"{path}: cannot read {what}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path}: {what} is not a regular file")
    if st.st_size > max_bytes:
        raise error(f"{path}: {what} is {st.st_size} bytes, above the limit of {max_bytes} bytes")
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as e:
        raise error(f"{path}: cannot read {what}: {e.strerror}") from None
    if len(raw) > max_bytes:  # grew while we looked
        raise error(f"{path}: {what} is above the limit of {max_bytes} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (invalid byte at offset {e.start}); a {what} must be UTF-8") from None


def read_toml(path) -> dict:
    """A TOML file as a dict; ConfigError (naming the file) if unreadable or invalid."""
    p = Path(path)
    text = read_text_file(p, MAX_CONFIG_BYTES, "config")
    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as e:
        # ValueError: an integer of more than 4300 digits; RecursionError: absurd nesting
        raise ConfigError(f"{p}: invalid TOML: {e}") from None


def load_config(cls, path=None, overrides=(), env=None):
    """Defaults < TOML ``path`` < environment (``cls.ENV_PREFIX``) < ``overrides``.

    Raises ConfigError for unreadable files, TOML syntax errors, unknown keys
    and badly typed values (each naming the key).
    """
    d: dict = read_toml(path) if path is not None else {}
    prefix = getattr(cls, "ENV_PREFIX", None)
    if prefix:
        apply_overrides(cls, d, env_overrides(prefix, env))
    apply_overrides(cls, d, overrides)
    return from_dict(cls, d)


def _choice(value, allowed, key):
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def _positive(value, key, allow_zero=False):
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


# ------------------------------------------------------------------------------------------------
# training


@dataclass(frozen=True)
class ModelSection:
    cell: str = "gru"  # rnn_tanh, rnn_relu, gru or lstm
    hidden_size: int = 64  # H
    num_layers: int = 1  # L
    init: str = "glorot"  # glorot (Glorot-uniform W_ih, orthogonal W_hh, LSTM forget bias 1) or pytorch
    gru_update_bias: float = 1.0  # added to the initial GRU update-gate bias b_iz: > 0 keeps the state longer
    #                               at the start (z = sigmoid(1) = 0.73 for 1.0), the GRU analogue of LSTM's forget bias 1
    norm: bool = True  # input normalisation with mean/std of the training set (frozen, exported)
    embedding_size: int = 32  # data.kind = "text": width of the token embedding (embedding.weight (V, E))
    name: str = ""  # model name written to the file (default: the config file's stem)

    def __post_init__(self):
        from streamrnn.nn.cells import CELL_CODES

        _choice(self.cell, tuple(CELL_CODES), "model.cell")
        _choice(self.init, ("glorot", "pytorch"), "model.init")
        _positive(self.hidden_size, "model.hidden_size")
        _positive(self.embedding_size, "model.embedding_size")
        if not 1 <= self.num_layers <= 64:
            raise ConfigError(f"model.num_layers must be in [1, 64], got {self.num_layers}")


@dataclass(frozen=True)
class DataSection:
    train: str = ""  # folder of .npz files or a JSONL manifest (relative to the config file)
    valid: str = ""  # the same for validation; empty: hold out valid_fraction of train
    valid_fraction: float = 0.1  # share of training sequences held out when valid is empty
    task: str = "frame"  # frame (many-to-many), sequence (many-to-one, last valid frame), next_frame
    loss: str = "bce"  # bce (sigmoid head), ce (softmax head) or mse (identity head)
    classes: tuple[str, ...] = ()  # class names (ce) or label names (bce); empty: from the data
    frontend: str = "logmel"  # manifests only: front-end type (logmel or mfcc) with its defaults
    cache_dir: str = ""  # manifests only: feature cache folder (empty: <out>/cache)
    nonfinite: str = "error"  # manifests only: NaN/Inf audio samples are an error, or "zero": replaced by 0
    kind: str = "features"  # features (.npz folder or audio manifest) or text (UTF-8 .txt file or folder)
    tokens: str = "char"  # text: char (every character) or word (whitespace-separated words)
    max_vocab: int = 256  # text: most frequent training tokens kept, <unk> included; the rest read as <unk>
    seq_len: int = 256  # text: tokens per training sequence (the lanes reset the state between sequences)

    def __post_init__(self):
        _choice(self.task, ("frame", "sequence", "next_frame"), "data.task")
        _choice(self.loss, ("bce", "ce", "mse"), "data.loss")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ConfigError(f"data.valid_fraction must be in [0, 1), got {self.valid_fraction}")
        _choice(self.kind, ("features", "text"), "data.kind")
        _choice(self.nonfinite, ("error", "zero"), "data.nonfinite")
        _choice(self.tokens, ("char", "word"), "data.tokens")
        if not 2 <= self.max_vocab <= 1 << 20:
            raise ConfigError(f"data.max_vocab must be in [2, {1 << 20}], got {self.max_vocab}")
        if not 2 <= self.seq_len <= 1 << 20:
            raise ConfigError(f"data.seq_len must be in [2, {1 << 20}], got {self.seq_len}")
        if self.kind == "text" and (self.task, self.loss) != ("frame", "ce"):
            raise ConfigError(f"data.kind 'text' trains next-token prediction: it needs data.task = 'frame' and "
                              f"data.loss = 'ce', got {self.task!r} and {self.loss!r}")
        if self.task == "next_frame" and self.loss != "mse":
            raise ConfigError(f"data.task 'next_frame' predicts features and needs data.loss = 'mse', got {self.loss!r}")


@dataclass(frozen=True)
class TBPTTSection:
    k1: int = 100  # frames per update (forward step between two optimiser steps)
    k2: int = 100  # frames backpropagated through per update (k2 >= k1; k2 > k1 overlaps windows)
    lanes: int = 32  # B: sequences streamed side by side, each carrying its hidden state
    jitter: float = 0.0  # chunk length drawn uniformly in [k1 * (1 - jitter), k1] each update

    def __post_init__(self):
        _positive(self.k1, "tbptt.k1")
        _positive(self.lanes, "tbptt.lanes")
        if self.k2 < self.k1:
            raise ConfigError(f"tbptt.k2 must be >= tbptt.k1 ({self.k1}), got {self.k2}")
        if not 0.0 <= self.jitter < 1.0:
            raise ConfigError(f"tbptt.jitter must be in [0, 1), got {self.jitter}")


@dataclass(frozen=True)
class OptimSection:
    name: str = "adam"  # adam, adamw or sgd (with momentum)
    lr: float = 1e-3  # peak learning rate
    beta1: float = 0.9  # Adam first-moment decay
    beta2: float = 0.999  # Adam second-moment decay
    eps: float = 1e-8  # Adam denominator floor
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 0.0  # on weight matrices only: L2 in the gradient (adam, sgd), decoupled (adamw)
    clip: str = "norm"  # norm (global L2 norm), value (per element) or none
    clip_norm: float = 1.0  # max global gradient norm (clip = "norm")
    clip_value: float = 1.0  # max |gradient element| (clip = "value")

    def __post_init__(self):
        _choice(self.name, ("adam", "adamw", "sgd"), "optim.name")
        _choice(self.clip, ("norm", "value", "none"), "optim.clip")
        _positive(self.lr, "optim.lr")
        _positive(self.weight_decay, "optim.weight_decay", allow_zero=True)
        _positive(self.clip_norm, "optim.clip_norm")
        _positive(self.clip_value, "optim.clip_value")


@dataclass(frozen=True)
class ScheduleSection:
    name: str = "constant"  # constant, cosine (to min_lr at the last step) or step (x gamma every step_epochs)
    warmup_steps: int = 0  # linear warm-up from 0 over this many updates
    min_lr: float = 0.0  # cosine floor
    step_epochs: int = 10  # step schedule period in epochs
    gamma: float = 0.5  # step schedule factor

    def __post_init__(self):
        _choice(self.name, ("constant", "cosine", "step"), "schedule.name")
        _positive(self.warmup_steps, "schedule.warmup_steps", allow_zero=True)
        _positive(self.step_epochs, "schedule.step_epochs")


@dataclass(frozen=True)
class LoopSection:
    epochs: int = 20  # passes over the training set
    seed: int = 0  # one seed for init, shuffling and jitter: same seed + data -> same weights
    patience: int = 5  # early stopping: epochs without improvement of `monitor` (0: never stop early)
    monitor: str = "valid_loss"  # valid_loss, valid_accuracy, valid_f1 or valid_auc (higher is better except loss)
    checkpoint_every: int = 0  # also checkpoint every N updates inside an epoch (0: at epoch ends only)
    max_bad_steps: int = 5  # consecutive NaN/Inf updates before TrainingError
    dtype: str = "float32"  # compute precision: float32 (as the runtime) or float64
    max_memory: int = 0  # bytes the run may use (estimated before it starts); 0: what the machine has available

    def __post_init__(self):
        _positive(self.epochs, "train.epochs")
        _positive(self.max_memory, "train.max_memory", allow_zero=True)
        _positive(self.patience, "train.patience", allow_zero=True)
        _choice(self.monitor, ("valid_loss", "valid_accuracy", "valid_f1", "valid_auc"), "train.monitor")
        _choice(self.dtype, ("float32", "float64"), "train.dtype")
        _positive(self.max_bad_steps, "train.max_bad_steps")


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``streamrnn train`` needs; sections are TOML tables."""

    ENV_PREFIX: typing.ClassVar[str] = "STREAMRNN_TRAIN"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    tbptt: TBPTTSection = field(default_factory=TBPTTSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    train: LoopSection = field(default_factory=LoopSection)

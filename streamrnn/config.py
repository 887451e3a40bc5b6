"""Configuration: every frozen config dataclass (streaming, events, training) and the one loader.

Layers, later ones win::

    dataclass defaults  <  TOML file  <  environment  <  command line (options, --set key=value)

The loader is generic: any frozen dataclass whose fields are scalars, lists,
``X | None`` or nested frozen dataclasses (TOML tables) works.  Unknown keys
anywhere are a ``ConfigError`` naming the key and the known ones; values are
converted and checked against the field's type (``convert``), then by the
dataclass itself.

Environment names, one scheme for every config: the class's ``ENV_PREFIX``
followed by the dotted key with ``__`` for each dot, upper case.
``StreamConfig`` (prefix ``STREAMRNN_``): ``STREAMRNN_RATE=8000``,
``STREAMRNN_EVENTS__MIN_ON=0.2``; ``TrainConfig`` (prefix ``STREAMRNN_TRAIN__``):
``STREAMRNN_TRAIN__OPTIM__LR=0.01``.  Values are parsed like ``--set`` values.
A ``STREAMRNN_*`` variable that no config knows is logged as a warning (with
the closest known name), never silently ignored.

``--set`` values are TOML literals when they parse as one (``3``, ``1e-3``,
``true``, ``["a", "b"]``, ``"text"``), else plain strings (``gru``);
``none``/``null`` sets an optional field to None.

>>> cfg = load_config(TrainConfig, overrides=["optim.lr=0.01", "model.cell=lstm"], env={})
>>> cfg.optim.lr, cfg.model.cell
(0.01, 'lstm')
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import logging
import math
import os
import stat
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from streamrnn.errors import ConfigError

log = logging.getLogger(__name__)

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
        moved = [k for k in leaf_keys(cls) if k.rsplit(".", 1)[-1] == unknown[0]]
        hint = f" (did you mean {prefix + moved[0]!r}, in its [{moved[0].rsplit('.', 1)[0]}] table?)" if moved else ""
        raise ConfigError(f"unknown key {prefix + unknown[0]!r} in config{hint}; known keys in "
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


def _type_at(cls, path: list[str]):
    tp = _hints(cls)[path[0]]
    return tp if len(path) == 1 else _type_at(tp, path[1:])


def _set_value(d: dict, cls, key: str, value, origin: str) -> None:
    """Check ``key`` against ``cls``, convert ``value`` to its field's type (a ConfigError names
    ``origin``: the variable or option it came from) and put it into the nested dict ``d``."""
    path = key.split(".")
    _set_path(d, cls, path, value, key)  # checks the key
    try:
        value = convert(value, _type_at(cls, path), key)
    except ConfigError as e:
        raise ConfigError(f"{origin}: {e}" if origin else str(e)) from None
    _set_path(d, cls, path, value, key)


def apply_overrides(cls, d: dict, overrides) -> dict:
    """Apply overrides to the nested dict ``d`` (in place): ``key=value`` strings (dotted keys,
    ``--set``) or a mapping of dotted key -> value (command-line options; None and () mean unset)."""
    if isinstance(overrides, dict):
        for k, v in overrides.items():
            if v is None or (isinstance(v, tuple) and not v):
                continue
            _set_value(d, cls, k, v, f"option --{k.rsplit('.', 1)[-1].replace('_', '-')}")
        return d
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr=0.001)")
        k, v = item.split("=", 1)
        k = k.strip()
        _set_path(d, cls, k.split("."), _parse_literal(v.strip()), k)
    return d


ENV_ROOT = "STREAMRNN_"  # every setting's environment name starts so
# switches of the test suite and CI (.ci/run, tests/), not settings: never warned about
HARNESS_ENV = frozenset({"STREAMRNN_REQUIRE_AUDIO", "STREAMRNN_SOAK_SECONDS"})


def leaf_keys(cls, prefix: str = "") -> list[str]:
    """Every dotted key of a config class (sections expanded)."""
    out = []
    for k, tp in _hints(cls).items():
        out += leaf_keys(tp, f"{prefix}{k}.") if _is_section(tp) else [prefix + k]
    return out


def env_name(cls, key: str) -> str:
    """The environment variable of dotted ``key`` of ``cls``: ``STREAMRNN_EVENTS__MIN_ON``."""
    return cls.ENV_PREFIX + key.upper().replace(".", "__")


def env_overrides(cls, env=None) -> list[tuple[str, str, str]]:
    """The environment's settings of ``cls`` as (key, value, variable), sorted by variable.

    Variables under ``cls.ENV_PREFIX`` that name no key of ``cls`` are errors when the prefix is the
    class's own (``STREAMRNN_TRAIN__``); any other ``STREAMRNN_*`` variable that no config class
    knows is logged as a warning naming the closest known variable (a typo must not go unnoticed).
    """
    env = os.environ if env is None else env
    mine = {env_name(cls, k): k for k in leaf_keys(cls)}
    known = set(HARNESS_ENV).union(*({env_name(c, k) for k in leaf_keys(c)} for c in CONFIG_CLASSES))
    out = []
    for name in sorted(env):
        up = name.upper()
        if not up.startswith(ENV_ROOT):
            continue
        if up in mine:
            out.append((mine[up], env[name], name))
        elif cls.ENV_PREFIX != ENV_ROOT and up.startswith(cls.ENV_PREFIX):
            key = up[len(cls.ENV_PREFIX):].lower().replace("__", ".")
            out.append((key, env[name], name))  # an unknown key: the loader's ConfigError names it
        elif up not in known:
            # match by the whole name and by the last key alone (STREAMRNN_MINON ~ ..._EVENTS__MIN_ON)
            alias = {n: n for n in known - HARNESS_ENV}
            alias.update({ENV_ROOT + n.rsplit("__", 1)[-1]: n for n in known - HARNESS_ENV if "__" in n})
            close = difflib.get_close_matches(up, sorted(alias), n=1, cutoff=0.75)
            log.warning("environment variable %s is not a streamrnn setting and is ignored%s", name,
                        f" (did you mean {alias[close[0]]}?)" if close else "")
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



def json_lines(text: str, path):
    r"""``(line number, value)`` of each non-blank line of JSON-lines ``text`` (read from ``path``,
    named in errors), in order, numbered from 1; ConfigError ``"<path>:<line>: not JSON: ..."`` at
    the first line that is not JSON.  The manifests' and the training history's one reader.

    >>> list(json_lines('{"audio": "a.wav"}\n\n[1, 2]\n', "m.jsonl"))
    [(1, {'audio': 'a.wav'}), (3, [1, 2])]
    >>> list(json_lines("{}\nnot json\n", "m.jsonl"))
    Traceback (most recent call last):
    ...
    streamrnn.errors.ConfigError: m.jsonl:2: not JSON: Expecting value: line 1 column 1 (char 0)
    """
    import json

    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield i, json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{i}: not JSON: {e}") from None

def read_toml(path) -> dict:
    """A TOML file as a dict; ConfigError (naming the file) if unreadable or invalid."""
    p = Path(path)
    text = read_text_file(p, MAX_CONFIG_BYTES, "config")
    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as e:
        # ValueError: an integer of more than 4300 digits; RecursionError: absurd nesting
        raise ConfigError(f"{p}: invalid TOML: {e}") from None


def load_config(cls, path=None, overrides=(), env=None, options: dict | None = None):
    """Defaults < TOML ``path`` < environment (``env_name``) < ``overrides`` (``--set`` strings)
    < ``options`` (command-line options: dotted key -> value, None = not given).

    Raises ConfigError for unreadable files, TOML syntax errors, unknown keys
    and badly typed values (each naming the key and where the value came from).
    """
    d: dict = read_toml(path) if path is not None else {}
    from_file = copy.deepcopy(d)
    for key, value, name in env_overrides(cls, env):
        try:
            tp = _type_at(cls, key.split("."))
        except (KeyError, TypeError):
            tp = None  # an unknown key: _set_value's check names it
        # text fields take the text as it is (a stream id "007" stays "007"); others parse like --set
        texty = tp is str or (typing.get_origin(tp) in (typing.Union, types.UnionType)
                              and str in typing.get_args(tp))
        _set_value(d, cls, key, value if texty else _parse_literal(value), f"environment {name}")
    apply_overrides(cls, d, overrides)
    apply_overrides(cls, d, options or {})
    try:
        return from_dict(cls, d)
    except ConfigError as e:
        if path is not None and _same_error(cls, from_file, e):
            raise ConfigError(f"config {str(path)!r}: {e}") from None  # the file's own error: name it
        raise


def _same_error(cls, d: dict, e: ConfigError) -> bool:
    """Whether ``d`` alone fails with the error ``e`` (then the TOML file is where it comes from; a
    file that later layers make valid, e.g. k1 > k2 fixed by --set, is no error)."""
    try:
        from_dict(cls, d)
    except ConfigError as fe:
        return str(fe) == str(e)
    return False


def _choice(value, allowed, key):
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def _positive(value, key, allow_zero=False):
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


# ------------------------------------------------------------------------------------------------
# streaming: `streamrnn stream` / `features`, `streamrnn.run_stream`

DEFAULT_MAX_MESSAGE_BYTES = 4 << 20     # 4 MiB: ~60 s of 16 kHz float32 mono in one message

DEFAULT_TICK_MS = 10.0  # ms between reads of a ZeroMQ source (docs/operations.md, "The read tick")
MAX_TICK_MS = 1000.0    # ms: a longer tick would put its whole length into every prediction's latency

LIMITS = {                              # upper bounds of StreamConfig values (docs/operations.md)
    "max_streams": 4096,                # streams: each holds a model state and a resampler
    "max_message_bytes": 256 * 2**20,   # bytes: libzmq's MAXMSGSIZE is twice this
    "max_model_bytes": 4 * 2**30,       # bytes
    "queue_seconds": 60.0,              # s of microphone audio held in memory
    "hwm_seconds": 60.0,                # s of messages queued per ZeroMQ socket
    "channels": 64,
    "rate": 1_000_000,                  # Hz
}


@dataclass(frozen=True)
class EventParams:
    """The ``[events]`` section: hysteresis on sigmoid outputs, durations in seconds.

    The one place the event defaults live (command line, stream.toml, ``EventDetector``).

    >>> EventParams(min_on=0.05).in_frames(100.0)
    {'on': 0.5, 'off': 0.35, 'min_on': 5, 'min_off': 20, 'max_len': 3000}
    """

    on_threshold: float = 0.5    # probability that starts a segment
    off_threshold: float = 0.35  # probability below which a segment may end (<= on_threshold)
    min_on: float = 0.1          # s: shortest segment reported
    min_off: float = 0.2         # s: shortest gap; shorter dips are bridged
    max_segment: float = 30.0    # s: longer segments are cut (a new one may follow)
    enabled: bool = True         # events for sigmoid outputs at all (--events/--no-events)

    def __post_init__(self):
        self.validate()

    def validate(self) -> "EventParams":
        if not 0.0 <= self.off_threshold <= self.on_threshold <= 1.0:
            raise ConfigError(f"need 0 <= off_threshold ({self.off_threshold}) <= on_threshold "
                              f"({self.on_threshold}) <= 1")
        for k in ("min_on", "min_off", "max_segment"):
            if not getattr(self, k) >= 0:
                raise ConfigError(f"{k} must be >= 0 seconds, got {getattr(self, k)}")
        if self.max_segment < self.min_on:
            raise ConfigError(f"max_segment ({self.max_segment} s) must be >= min_on ({self.min_on} s)")
        return self

    def in_frames(self, frame_rate: float) -> dict:
        """Durations rounded to whole frames (min_on >= 1, max_len >= min_on)."""
        min_on = max(1, round(self.min_on * frame_rate))
        return dict(on=self.on_threshold, off=self.off_threshold, min_on=min_on,
                    min_off=max(1, round(self.min_off * frame_rate)),
                    max_len=max(min_on, round(self.max_segment * frame_rate)))


@dataclass(frozen=True)
class StreamConfig:
    """Everything ``streamrnn stream`` / ``features`` and ``streamrnn.run_stream`` need.

    Precedence: command line > ``STREAMRNN_*`` environment > TOML (``configs/stream.toml``) > these
    defaults.  Checked on construction (ConfigError naming the key, the value and the limit).

    >>> cfg = StreamConfig(model="vad", source="demo", sink=("null",), events=EventParams(min_on=0.2))
    >>> cfg.events.min_on, cfg.rate
    (0.2, 16000)
    >>> load_stream_config(env={"STREAMRNN_EVENTS__MIN_ON": "0.3"}).events.min_on
    0.3
    """

    ENV_PREFIX: typing.ClassVar[str] = "STREAMRNN_"
    model: str | None = None            # model file or bundled name
    source: str = "mic"                 # source URI (see transport.sources)
    sink: tuple[str, ...] = ("stdout",)  # sink URIs (see transport.sinks)
    stream_id: str | None = None        # id of a single-stream source (default mic0, file0, stdin0, demo0)
    duration: float = 0.0               # s of wall-clock time to run; 0 = until the source ends or a signal
    rate: int = 16000                   # Hz: stdin sample rate; microphone rate
    format: str = "s16le"               # stdin sample format: s16le | f32le
    channels: int = 1                   # stdin / microphone channels
    block_ms: float = 20.0              # ms of audio per block read from mic, file, stdin
    tick_ms: float | None = None        # ms: a multi-stream source is read at most once per tick, everything
    #                                     queued at once (one wake-up, one bank call for many messages); None:
    #                                     DEFAULT_TICK_MS for ZeroMQ sources, 0 (every block at once) for others
    realtime: bool | None = None        # pace file sources like a live microphone; None: the demo yes, files no
    json: bool = False                  # JSON lines on stdout even on a terminal
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES  # bytes: larger messages are refused
    max_streams: int = 64               # concurrent streams of a ZeroMQ source
    idle_timeout: float = 0.0           # s without data after which a stream is closed; 0 = never
    threads: int = 1                    # Numba threads sharing the bank's model step (1: single-threaded)
    queue_seconds: float = 2.0          # s of audio the microphone queue holds before dropping the oldest
    hwm_seconds: float = 2.0            # s of messages each ZeroMQ socket queues
    stats_interval: float = 1.0         # s between stats messages (kind 7)
    desc_interval: float = 1.0          # s between repeated descriptors (and heartbeats)
    max_model_bytes: int = 256 * 2**20  # bytes: larger model files are refused before reading
    curve_secret_key: str | None = None  # CurveZMQ key pair (.key_secret): binding sockets encrypt
    curve_server_key: str | None = None  # server's public key (.key): connecting sockets encrypt
    curve_allow: str | None = None      # directory of client public keys (*.key) a binding socket accepts
    curve_allow_insecure_key: bool = False  # accept a secret key file its group or others may access (refused
    #                                         by default, as ssh refuses such a private key)
    events: EventParams = field(default_factory=EventParams)  # [events]: hysteresis on sigmoid outputs

    def __post_init__(self):
        self.validate()

    def validate(self) -> "StreamConfig":
        if self.duration < 0:
            raise ConfigError(f"duration must be >= 0 s, got {self.duration}")
        if self.format not in ("s16le", "f32le"):
            raise ConfigError(f"format {self.format!r} is not s16le or f32le")
        for k, lo in (("rate", 1), ("channels", 1), ("max_streams", 1), ("max_message_bytes", 128),
                      ("max_model_bytes", 8), ("threads", 1)):
            if getattr(self, k) < lo:
                raise ConfigError(f"{k} must be >= {lo}, got {getattr(self, k)}")
        for k, hi in LIMITS.items():  # hard caps: each bounds memory a config typo could exhaust
            if getattr(self, k) > hi:
                raise ConfigError(f"{k} = {getattr(self, k)} is above the limit of {hi}")
        if self.idle_timeout < 0:
            raise ConfigError(f"idle_timeout must be >= 0 s (0 = never), got {self.idle_timeout}")
        if self.tick_ms is not None and not 0 <= self.tick_ms <= MAX_TICK_MS:
            raise ConfigError(f"tick_ms must be between 0 and {MAX_TICK_MS:g} ms (0 = read each message "
                              f"as it arrives), got {self.tick_ms}")
        for k in ("block_ms", "queue_seconds", "hwm_seconds", "stats_interval", "desc_interval"):
            if not getattr(self, k) > 0:
                raise ConfigError(f"{k} must be > 0, got {getattr(self, k)}")
        if not self.sink:
            raise ConfigError("at least one sink is needed")
        if not isinstance(self.events, EventParams):
            raise ConfigError(f"events must be an EventParams ([events] table), got {self.events!r}")
        return self

    def event_params(self) -> EventParams:
        """The ``[events]`` section, checked (``self.events``; the name code before it used)."""
        return self.events.validate()


def load_stream_config(path=None, env=None, overrides=(), options: dict | None = None) -> StreamConfig:
    """``load_config(StreamConfig, ...)``: defaults < TOML ``path`` < ``STREAMRNN_*`` environment <
    ``--set`` strings < command-line ``options`` (dotted key -> value; None = not given)."""
    if isinstance(overrides, dict):  # a mapping is command-line options
        overrides, options = (), {**overrides, **(options or {})}
    return load_config(StreamConfig, path, overrides, env, options)


# ------------------------------------------------------------------------------------------------
# training


CELLS = ("rnn_tanh", "rnn_relu", "gru", "lstm")  # the keys of nn.cells.CELL_CODES (config sits below nn)


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
    bidirectional: bool = False  # a reverse direction per layer (PyTorch's bidirectional=True): offline only,
    #                              trained on whole sequences (tbptt.k1/k2 unused), no stream()
    delay: int = 0  # D, frames of look-ahead: the output at frame t is trained for frame t - D (frame task);
    #                 stored in the model file; live outputs come D frames late, reported for their own frame

    def __post_init__(self):
        _choice(self.cell, CELLS, "model.cell")
        _choice(self.init, ("glorot", "pytorch"), "model.init")
        _positive(self.hidden_size, "model.hidden_size")
        _positive(self.embedding_size, "model.embedding_size")
        if not 1 <= self.num_layers <= 64:
            raise ConfigError(f"model.num_layers must be in [1, 64], got {self.num_layers}")
        if not 0 <= self.delay <= 1 << 16:
            raise ConfigError(f"model.delay must be in [0, 65536] frames, got {self.delay}")
        if self.bidirectional and self.delay:
            raise ConfigError(f"model.delay ({self.delay}) is look-ahead for a unidirectional model; a "
                              f"bidirectional model already sees the whole sequence: set one of them")


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
    # frame targets: the first offset_frames non-target frames after each end of a target run weigh
    # offset_weight in the training loss (1 elsewhere; validation unweighted): an early end-of-speech
    offset_frames: int = 0
    offset_weight: float = 1.0

    def __post_init__(self):
        _choice(self.task, ("frame", "sequence", "next_frame"), "data.task")
        if not 0 <= self.offset_frames <= 1 << 16:
            raise ConfigError(f"data.offset_frames must be in [0, 65536] frames, got {self.offset_frames}")
        if not 0.0 <= self.offset_weight <= 1000.0:  # also rejects NaN
            raise ConfigError(f"data.offset_weight must be in [0, 1000], got {self.offset_weight}")
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

    ENV_PREFIX: typing.ClassVar[str] = "STREAMRNN_TRAIN__"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    tbptt: TBPTTSection = field(default_factory=TBPTTSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    train: LoopSection = field(default_factory=LoopSection)

    def __post_init__(self):
        # across sections: a token model (data.kind = "text") predicts the next token from the tokens so far
        m = self.model
        if self.data.kind == "text" and (m.bidirectional or m.delay):
            raise ConfigError(f"data.kind 'text' trains a next-token model, which reads the tokens so far only: "
                              f"it cannot be bidirectional or have a delay (got model.bidirectional = "
                              f"{str(m.bidirectional).lower()}, model.delay = {m.delay})")


CONFIG_CLASSES = (StreamConfig, TrainConfig)  # every config with environment names (for the typo warning)


# serving: `streamrnn serve` (the StreamConfig of every worker, plus these)
MAX_WORKERS = 1024  # workers of one service (each is a process or a Ray actor)


@dataclass(frozen=True)
class ServeConfig:
    """What ``streamrnn serve`` adds to ``StreamConfig`` (docs/operations.md, "Running on many cores").

    >>> ServeConfig(workers=2).snapshot_interval
    2.0
    >>> ServeConfig(workers=0)
    Traceback (most recent call last):
    ...
    streamrnn.errors.ConfigError: workers must be in 1..1024, got 0
    """

    workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # worker processes / actors
    snapshot_interval: float = 2.0      # s between snapshots of each worker's streams
    state_dir: str | None = None        # directory of the local workers' snapshots (default: private, temporary)
    metrics: str | None = None          # HOST:PORT of the Prometheus endpoint (None: none)
    ray: str | None = None              # None: local processes; "auto"/"": a Ray cluster (ray.init address)
    ready_timeout: float = 120.0        # s a worker may take to start (model load, kernel cache)
    drain_timeout: float = 30.0         # s the workers get to drain after SIGTERM before they are killed

    def __post_init__(self):
        if isinstance(self.workers, bool) or not 1 <= int(self.workers) <= MAX_WORKERS:
            raise ConfigError(f"workers must be in 1..{MAX_WORKERS}, got {self.workers}")
        for k in ("snapshot_interval", "ready_timeout", "drain_timeout"):
            if not getattr(self, k) > 0:
                raise ConfigError(f"{k} must be > 0 s, got {getattr(self, k)}")
        if self.metrics is not None:
            host, colon, port = self.metrics.rpartition(":")
            if not colon or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise ConfigError(f"metrics {self.metrics!r}: expected HOST:PORT (e.g. 127.0.0.1:9100)")

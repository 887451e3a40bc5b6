"""The main job as a function: ``run_stream(config)`` is exactly what ``streamrnn stream`` runs.

``run_stream`` and ``run_features`` build the source, the sinks and the pipeline from a
``StreamConfig`` and run until the source ends, ``config.duration`` passes or ``stop`` is set;
they install no signal handlers and print nothing (the CLI does both).  They are what every
entry point calls: the CLI, ``streamrnn serve``'s workers, an embedding application.

>>> import tempfile, os, json, streamrnn
>>> out = os.path.join(tempfile.mkdtemp(), "vad.jsonl")
>>> cfg = streamrnn.StreamConfig(model="vad", source="demo", sink=(f"jsonl:{out}",), realtime=False)
>>> stats = streamrnn.run_stream(cfg)
>>> recs = [json.loads(line) for line in open(out)]
>>> sorted({r["type"] for r in recs})
['desc', 'eos', 'event', 'pred']
>>> stats.get("frames_out") == sum(r["type"] == "pred" for r in recs)  # one JSON line per frame
True
"""

from __future__ import annotations

import threading

from streamrnn.config import StreamConfig
from streamrnn.errors import ConfigError
from streamrnn.nn.model import load_model
from streamrnn.runtime.pipeline import FeatureProcessor, ModelProcessor, Pipeline
from streamrnn.runtime.textstream import TextRun
from streamrnn.stats import Stats
from streamrnn.transport.endpoints import CurveConfig
from streamrnn.transport.sinks import open_sink
from streamrnn.transport.sources import FileSource, MicSource, StdinSource, open_source

# sources that carry audio and nothing else (a ZeroMQ source may carry audio or feature frames,
# declared per stream by its descriptor, so only its streams can be checked, when they arrive)
AUDIO_ONLY_SOURCES = (FileSource, MicSource, StdinSource)


def stream_model(config: StreamConfig):
    """The model ``run_stream`` runs: ``config.model`` loaded (ConfigError if none is set)."""
    if not config.model:
        raise ConfigError("a model is needed: StreamConfig(model=...) (--model, `model` in the config "
                          "or STREAMRNN_MODEL)")
    return load_model(config.model, max_bytes=config.max_model_bytes)


def curve_config(config: StreamConfig) -> CurveConfig | None:
    """The CurveZMQ keys of ``config`` (its ``curve_*`` keys), read and checked; None without them."""
    return CurveConfig.from_options(config.curve_secret_key, config.curve_server_key, config.curve_allow,
                                    config.curve_allow_insecure_key)


def build_pipeline(config: StreamConfig, features: bool = False, *, model=None) -> Pipeline:
    """The pipeline ``run_stream`` (``features=False``) or ``run_features`` runs, not yet opened.

    Loads the model (``config.model``, unless ``model`` is given; for features optional: its
    front end, else LogMel's defaults) and builds the source and sinks (nothing is opened or
    bound yet).  Raises ConfigError for a missing model or a model without a front end,
    ModelFileError for a bad file.
    """
    config = config.validate()
    if features:
        from streamrnn.audio.frontend import LogMel, as_frontend

        if config.model:
            fe = load_model(config.model, max_bytes=config.max_model_bytes).frontend
            if fe is None:
                raise ConfigError(f"model {config.model!r} has no front end (it takes feature frames)")
            processor = FeatureProcessor(as_frontend(fe))
        else:
            processor = FeatureProcessor(LogMel())
    else:
        processor = ModelProcessor(model if model is not None else stream_model(config), config)
    curve = curve_config(config)
    stats = Stats()
    source = open_source(config.source, config, stats=stats, curve=curve)
    if not features:
        check_model_takes_source(processor.model, source, config.source)
    sinks = [open_sink(u, config, stats=stats, curve=curve) for u in config.sink]
    return Pipeline(source, sinks, processor, config=config, stats=stats)


def check_model_takes_source(model, source, uri: str) -> None:
    """ConfigError (one line, exit 2 from the CLI) when ``model`` cannot read what ``source`` carries:
    a feature-frame model (no front end) on an audio-only source (file, stdin, mic, demo), which
    would otherwise drop every block.  A ZeroMQ source declares audio or features per stream, so
    its streams are checked as they arrive.  (The converse, a model with a front end, reads both
    audio and feature frames of its width, so it has nothing to refuse here.)"""
    if model.frontend is None and isinstance(source, AUDIO_ONLY_SOURCES):
        raise ConfigError(f"model {model.name or '(unnamed)'!r} takes feature frames ({model.input_size} values "
                          f"per frame, no audio front end) but --source {uri} carries audio: use a model with a "
                          f"front end, or send feature frames over a ZeroMQ source")


def build_text_run(config: StreamConfig, model) -> TextRun:
    """What ``run_stream`` runs for a token model (``model.arch.vocab_size`` set): UTF-8 text from
    stdin, one ``next_token`` event per token to every sink (``streamrnn.runtime.textstream``).
    ConfigError unless ``config.source`` is ``stdin``."""
    config = config.validate()
    if config.source != "stdin":
        raise ConfigError(f"model {model.name!r} reads text: use --source stdin (UTF-8 text), not {config.source!r}")
    curve = curve_config(config)
    stats = Stats()
    sinks = [open_sink(u, config, stats=stats, curve=curve) for u in config.sink]
    return TextRun(model, sinks, stream_id=config.stream_id or "stdin0", duration=config.duration, stats=stats)


def run_stream(config: StreamConfig, stop: threading.Event | None = None, on_ready=None) -> Stats:
    """Run ``config.model`` on ``config.source`` into ``config.sink``: what ``streamrnn stream`` runs.

    Blocks until the source ends, ``config.duration`` seconds pass or ``stop`` is set (from another
    thread or a signal handler); then ends open segments, sends end-of-stream and a last stats
    message and closes everything.  ``on_ready(pipeline)`` is called once the sinks and the
    source are open (``pipeline.source.describe()`` says what it reads).  Returns the run's
    ``Stats``.  Raises ConfigError, ModelFileError, AudioError (a missing file) before anything runs.

    A token model (``model.arch.vocab_size`` set, ``streamrnn.nn.text``) reads UTF-8 text from
    stdin instead (``config.source`` must be ``stdin``; ``on_ready`` gets a ``TextRun``) and
    publishes one ``next_token`` event per token (``streamrnn.runtime.textstream``).
    """
    config = config.validate()
    model = stream_model(config)
    if model.arch.vocab_size is not None:  # a token model reads text, not audio
        return build_text_run(config, model).run(stop, on_ready=on_ready)
    return build_pipeline(config, model=model).run(stop, on_ready=on_ready)


def run_features(config: StreamConfig, stop: threading.Event | None = None, on_ready=None) -> Stats:
    """Stream the front end's features of ``config.source`` (``streamrnn features``): like
    ``run_stream`` without the model; ``config.model`` (optional) only lends its front end."""
    return build_pipeline(config, features=True).run(stop, on_ready=on_ready)

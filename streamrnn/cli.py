"""The ``streamrnn`` command line: thin Click commands over the public API.

Errors raised on purpose (``StreamRNNError``) become one line on stderr and
exit status 2; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from streamrnn import __version__
from streamrnn.config import DEFAULT_TICK_MS, MAX_TICK_MS, EventParams, StreamConfig
from streamrnn.errors import StreamRNNError


def _set_verbosity(ctx, param, value):
    """``-v``/``-vv`` after a command (``streamrnn stream -v``): the same as before it; the higher wins."""
    if value:
        level = logging.INFO if value == 1 else logging.DEBUG
        root = logging.getLogger()
        root.setLevel(min(root.level or logging.WARNING, level))


class _Command(click.Command):
    """Every command also takes ``-v``/``--verbose`` (the group's option, after the command name)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not any("--verbose" in p.opts for p in self.params):
            self.params.append(click.Option(["-v", "--verbose"], count=True, expose_value=False, is_eager=True,
                                            callback=_set_verbosity, help="More log output (-v info, -vv debug)."))


class _Group(click.Group):
    """Turns streamrnn's typed errors into one clear line and a non-zero exit; its commands take -v."""

    command_class = _Command

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except StreamRNNError as e:
            click.echo(f"streamrnn: error: {e}", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="streamrnn")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int):
    """streamrnn: real-time recurrent networks over audio and ZeroMQ streams."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.captureWarnings(True)  # Python warnings are log records: one format, never mid-line


# The one rule of model names (docs/model-format.md, "Bundled names and paths")
_MODEL_HELP = ("A bundled model name (a bare word: vad) or a model file (any path with a '/' or a suffix: "
               "./vad, runs/x/model.safetensors).")

# --- info -------------------------------------------------------------------------------
@cli.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def info(model: str, as_json: bool):
    """Describe MODEL (a bundled name such as vad, or a file: any path with a '/' or a suffix,
    e.g. ./vad): cell, sizes, parameters, labels, front end and file size."""
    from streamrnn.nn.modelfile import model_metadata, resolve_model_path
    from streamrnn import load_model

    path = resolve_model_path(model)
    m = load_model(path)
    d = model_metadata(m)
    d.update(path=str(path), file_bytes=path.stat().st_size, n_params=m.n_params,
             output_size=m.output_size)
    if as_json:
        click.echo(json.dumps(d))
        return
    head = d["head"]
    click.echo(f"model       {d.get('name', path.stem)}  ({path}, {d['file_bytes']} bytes)")
    more = (", bidirectional (offline only)" if m.bidirectional else "") + (
        f", look-ahead {m.delay} frame(s)" if m.delay else "")
    click.echo(f"cell        {m.cell}, {m.num_layers} layer(s), input {m.input_size}, hidden {m.hidden_size}{more}")
    click.echo(f"parameters  {m.n_params}")
    if head:
        click.echo(f"head        {m.output_size} output(s), {head['activation']}, labels {head['labels']}")
    else:
        click.echo(f"head        none (outputs the top hidden state, {m.hidden_size} values)")
    click.echo(f"norm        {'yes' if m.arch.has_norm else 'no'}")
    fe = d["frontend"]
    click.echo(f"front end   {json.dumps(fe) if fe else 'none (the model takes feature frames)'}")


# --- stream / features / listen / devices (the real-time runtime) ------------------------
def _common_stream_options(f):
    """Options shared by ``stream`` and ``features``; each is named like its StreamConfig key, where
    its default lives (a new option: the field there and the click option here)."""
    opts = [
        click.option("--source", help="mic, mic:DEVICE, file:PATH, stdin, demo, zmq+sub://HOST:PORT, "
                                      "zmq+pull://HOST:PORT (or zmq+sub+ipc://PATH ...). Default: mic. "
                                      "stdin takes headerless raw PCM, interleaved s16le at 16000 Hz, mono "
                                      "unless --format, --rate and --channels say otherwise, or a WAV stream "
                                      "(its header's rate, channels and format are used); other containers "
                                      "(FLAC, Ogg, MP3) are refused."),
        click.option("--sink", multiple=True, help="stdout, jsonl:PATH, csv:PATH, zmq+pub://HOST:PORT, "
                                                   "zmq+push://HOST:PORT, null; repeat for several. Default: stdout."),
        click.option("--config", "config_path", type=click.Path(dir_okay=False),
                     help="TOML file of defaults (e.g. configs/stream.toml)."),
        click.option("--duration", type=float, help="Seconds to run (default: until the source ends or a signal)."),
        click.option("--stream-id", help="Stream id of a single-stream source (default mic0, file0, stdin0, demo0)."),
        click.option("--rate", type=int, help=f"Sample rate of stdin and the microphone, Hz (default {StreamConfig.rate})."),
        click.option("--format", "format", type=click.Choice(["s16le", "f32le"]),
                     help=f"Sample format of raw stdin (default {StreamConfig.format}; a WAV header overrides it)."),
        click.option("--channels", type=int, help=f"Channels of stdin and the microphone (default {StreamConfig.channels})."),
        click.option("--block-ms", type=float, help=f"Milliseconds of audio per block (default {StreamConfig.block_ms:g})."),
        click.option("--tick-ms", type=float,
                     help=f"Read a ZeroMQ source at most once per this many ms, everything queued at once: one "
                          f"wake-up and one model call for many streams' messages, for up to this much latency "
                          f"(default {DEFAULT_TICK_MS:g} for ZeroMQ sources, 0 for others; 0: read each "
                          f"message as it arrives; at most {MAX_TICK_MS:g})."),
        click.option("--realtime/--no-realtime", default=None,
                     help="Pace file sources like a microphone (default: the demo yes, files no)."),
        click.option("--json/--no-json", "json", default=None, help="JSON lines on stdout even on a terminal."),
        click.option("--max-message-bytes", type=int, help="Largest accepted ZeroMQ message (bytes)."),
        click.option("--max-streams", type=int, help=f"Most concurrent streams of a ZeroMQ source (default {StreamConfig.max_streams})."),
        click.option("--idle-timeout", type=float,
                     help="Close a stream after this many seconds without data (default 0: never)."),
        click.option("--max-model-bytes", type=int, help=f"Refuse model files larger than this (default {StreamConfig.max_model_bytes >> 20} MiB)."),
        *_curve_options(),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _curve_options():
    """CurveZMQ options (docs/operations.md, "Security"); keys come from `streamrnn keygen`."""
    return [
        click.option("--curve-secret-key", type=click.Path(dir_okay=False),
                     help="CurveZMQ key pair (a .key_secret file): binding sockets encrypt with it; "
                          "connecting sockets present it."),
        click.option("--curve-server-key", type=click.Path(dir_okay=False),
                     help="The server's CurveZMQ public key (.key): connecting sockets encrypt."),
        click.option("--curve-allow", type=click.Path(file_okay=False),
                     help="Directory of client public keys (*.key): binding sockets accept only these."),
        click.option("--curve-allow-insecure-key", is_flag=True, default=None,
                     help="Accept a secret key file that its group or others may read (refused by default, "
                          "as ssh does)."),
    ]


def _apply(options):
    """Decorate with a list of click options (in the order given)."""
    def deco(f):
        for o in reversed(options):
            f = o(f)
        return f
    return deco


def _stream_config(config_path, options: dict, sets=()):
    """The StreamConfig of a command: options are named like StreamConfig's keys, the [events] keys
    by their own names (--min-on is events.min_on, --events/--no-events events.enabled)."""
    import dataclasses

    from streamrnn.config import EventParams, load_stream_config

    ev = {f.name for f in dataclasses.fields(EventParams)}
    keys = {("events.enabled" if k == "events" else f"events.{k}" if k in ev else k): v for k, v in options.items()}
    return load_stream_config(config_path, overrides=sets, options=keys)


def _run_until_signal(run, cfg) -> None:
    """``run(cfg, stop, on_ready)`` with SIGINT/SIGTERM setting ``stop``; what runs and its stats go
    to stderr."""
    import signal
    import threading

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()  # the loop notices within 50 ms, ends segments, flushes sinks, exits 0

    def ready(pipe):
        started.append(pipe)
        click.echo(f"streamrnn: streaming {pipe.source.describe()} -> "
                   f"{', '.join(s.uri or s.describe() for s in pipe.sinks)}", err=True)

    started = []
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        run(cfg, stop, ready)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if started:
            click.echo(started[0].summary(), err=True)


_SET_OPTION = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                           help="Set any config key, e.g. --set events.min_on=0.2 (repeatable).")


def _model_stream_options(f):
    """The options of ``stream`` (and of ``serve``, whose workers each run a ``stream``): the model,
    the common stream options, events, threads and --set."""
    opts = [
        click.option("--model", help=_MODEL_HELP),
        _common_stream_options,
        click.option("--events/--no-events", default=None, help="Start/end events for sigmoid outputs (default on)."),
        click.option("--on-threshold", type=float,
                     help=f"Probability that starts a segment (default {EventParams.on_threshold})."),
        click.option("--off-threshold", type=float,
                     help=f"Probability below which a segment may end (default {EventParams.off_threshold})."),
        click.option("--min-on", type=float, help=f"Shortest segment, seconds (default {EventParams.min_on})."),
        click.option("--min-off", type=float,
                     help=f"Shortest gap, seconds; shorter dips are bridged (default {EventParams.min_off})."),
        click.option("--max-segment", type=float,
                     help=f"Longest segment before it is cut, seconds (default {EventParams.max_segment:g})."),
        click.option("--threads", type=int,
                     help="Numba threads that share the model step of many streams (default 1: single-threaded, "
                          "nothing spins); at most NUMBA_NUM_THREADS, the CPU count by default."),
        _SET_OPTION,
    ]
    return _apply(opts)(f)


@cli.command()
@_model_stream_options
def stream(config_path, sets, **options):
    """Run MODEL on live audio or feature frames; publish predictions and events.

    A token model (next-token text model) reads UTF-8 text from --source stdin instead and
    publishes one next_token event per token.
    Precedence of every option: command line > STREAMRNN_* environment > --config > defaults.
    Stats go to stderr at exit; SIGINT/SIGTERM end segments, flush the sinks and exit 0.
    """
    from streamrnn.runtime.run import run_stream

    cfg = _stream_config(config_path, options, sets)
    if not cfg.model:
        raise click.UsageError("--model is required (or `model` in the config / STREAMRNN_MODEL)")
    _run_until_signal(run_stream, cfg)


@cli.command()
@_model_stream_options
@click.option("--workers", type=int, help="Worker processes (Ray actors with --ray); default: the CPU count.")
@click.option("--snapshot-interval", type=float,
              help="Seconds between snapshots of each worker's streams (default 2).")
@click.option("--state-dir", type=click.Path(file_okay=False),
              help="Directory of the local workers' snapshots (default: private and temporary).")
@click.option("--metrics", metavar="HOST:PORT", help="Serve Prometheus metrics over HTTP, e.g. 127.0.0.1:9100.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="auto", default=None, metavar="[ADDRESS]",
              help="Workers are Ray actors on the cluster at ADDRESS (default: auto, the running cluster); "
                   "needs `pip install 'streamrnn[ray]'`.")
def serve(config_path, sets, workers, snapshot_interval, state_dir, metrics, ray_address, **options):
    """Run MODEL on many cores (or a Ray cluster): one ingress (--source zmq+pull:// or zmq+sub://),
    one egress (--sink zmq+pub://), N workers; a stream id always reaches the same worker (CRC-32 of
    the id modulo N). Every --snapshot-interval s each worker snapshots its streams; a worker that dies
    is restarted and resumes them (the gap flagged). SIGINT/SIGTERM drain: every stream gets eos, exit 0.
    --max-streams is per worker. See docs/operations.md, "Running on many cores".
    """
    import signal
    import threading

    from streamrnn.config import ServeConfig
    from streamrnn.serve.service import Service

    cfg = _stream_config(config_path, options, sets)
    given = {"workers": workers, "snapshot_interval": snapshot_interval, "state_dir": state_dir,
             "metrics": metrics, "ray": ray_address}
    service = Service(cfg, ServeConfig(**{k: v for k, v in given.items() if v is not None}))
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *a: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}

    def ready(svc):
        click.echo(f"streamrnn: serving {cfg.source} -> {cfg.sink[0]} with {svc.n} worker(s)"
                   + (f", metrics on http://{svc.serve.metrics}/metrics" if svc.serve.metrics else ""), err=True)

    try:
        rc = service.run(stop, ready)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    click.echo(service.summary(), err=True)
    sys.exit(rc)


@cli.command()
@click.option("--model", help="Use this model's front end (default: LogMel defaults, 40 mels at 16 kHz).")
@_common_stream_options
@_SET_OPTION
def features(config_path, sets, **options):
    """Stream live audio features (the front end alone; content "features")."""
    from streamrnn.runtime.run import run_features

    _run_until_signal(run_features, _stream_config(config_path, options, sets))


@cli.command()
@click.argument("url")
@click.option("--topic", default="", help="Subscription prefix (e.g. out/mic0/); default everything.")
@click.option("--count", type=int, default=0, help="Exit after this many messages (0: never).")
@click.option("--duration", type=float, default=0.0, help="Exit after this many seconds (0: never).")
@click.option("--no-data", is_flag=True, help="Print array shapes only, not the values.")
@click.option("--max-message-bytes", type=int, default=None, help="Largest accepted message (bytes).")
@_apply(_curve_options())
def listen(url, topic, count, duration, no_data, max_message_bytes, curve_secret_key, curve_server_key,
           curve_allow, curve_allow_insecure_key):
    """Decode any streamrnn/1 traffic at URL to JSON lines: the records of docs/formats.md (as
    `stream --sink stdout` writes them, plus the wire fields direction, topic, t_send, ref_seq).

    URL: zmq+sub://HOST:PORT (connects), zmq+pull://HOST:PORT (binds), their +ipc forms, or a bare
    tcp://HOST:PORT / ipc://PATH (subscribe, connect). Malformed messages print as
    {"v":1,"type":"bad","reason":REASON,"error":...}; counts by reason go to stderr at exit.
    """
    import signal
    import threading

    from streamrnn.transport.endpoints import CurveConfig
    from streamrnn.transport.listen import listen as listen_to

    curve = CurveConfig.from_options(curve_secret_key, curve_server_key, curve_allow, curve_allow_insecure_key)
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *a: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    stats = None
    try:
        stats = listen_to(url, lambda rec: click.echo(json.dumps(rec, separators=(",", ":"))), topic=topic, count=count,
                          duration=duration, with_data=not no_data, max_message_bytes=max_message_bytes,
                          curve=curve, stop=stop, on_ready=lambda ep: click.echo(
                              f"streamrnn: listening on {ep.address} (topic {ep.topic!r})", err=True))
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        sys.stdout.flush()
        if stats is not None:
            click.echo(stats.summary(latency=False), err=True)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per device.")
def devices(as_json):
    """List audio input devices (for --source mic:DEVICE)."""
    from streamrnn.transport.sources import import_sounddevice

    sd = import_sounddevice()
    try:
        devs = sd.query_devices()
        default_in = sd.default.device[0]
    except Exception as e:  # PortAudioError: no host API could be initialised
        raise click.ClickException(f"cannot list audio devices: {e}") from None
    inputs = [(i, d) for i, d in enumerate(devs) if d["max_input_channels"] > 0]
    if not inputs:
        click.echo("no audio input devices found (is PulseAudio/ALSA running? see docs/operations.md)", err=True)
        sys.exit(1)
    for i, d in inputs:
        api = sd.query_hostapis(d["hostapi"])["name"]
        if as_json:
            click.echo(json.dumps({"index": i, "name": d["name"], "hostapi": api, "channels": d["max_input_channels"],
                                   "default_samplerate": d["default_samplerate"], "default": i == default_in}))
        else:
            mark = "*" if i == default_in else " "
            click.echo(f"{mark} {i:3d}  {d['name']}  ({api}, {d['max_input_channels']} in, "
                       f"{d['default_samplerate']:g} Hz)")


# --- batch (a whole corpus, docs/batch.md) ----------------------------------------------------
@cli.command()
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--model", required=True, help=_MODEL_HELP)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: each file's outputs mirror its path relative to its INPUT; summary.json.")
@click.option("--write", default="segments", show_default=True,
              help="Outputs per file, comma-separated: segments (JSON lines), audacity (label file), rttm, csv, "
                   "npy (frame predictions).")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Local worker processes, each loading the model once (default: every core).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Run the files as Ray tasks: --ray=ADDRESS joins that cluster (inputs and model on a path every "
                   "node sees), --ray alone starts a private local one on 127.0.0.1.")
@click.option("--force", is_flag=True, help="Redo files whose outputs were already made by the same model and settings.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="TOML file whose [events] section sets the segments' defaults (e.g. configs/stream.toml).")
@click.option("--on-threshold", type=float,
              help=f"Probability that starts a segment (default {EventParams.on_threshold}).")
@click.option("--off-threshold", type=float,
              help=f"Probability below which a segment may end (default {EventParams.off_threshold}).")
@click.option("--min-on", type=float, help=f"Shortest segment, seconds (default {EventParams.min_on}).")
@click.option("--min-off", type=float,
              help=f"Shortest gap, seconds; shorter dips are bridged (default {EventParams.min_off}).")
@click.option("--max-segment", type=float,
              help=f"Longest segment before it is cut, seconds (default {EventParams.max_segment:g}).")
@click.option("--pad", type=float, default=0.0, show_default=True,
              help="Seconds added to both ends of every segment (neighbours meet halfway, never overlap).")
@click.option("--max-model-bytes", type=int, help="Refuse model files larger than this.")
@_SET_OPTION
def batch(inputs, out_dir, write, workers, ray_address, force, pad, config_path, sets, **options):
    """Run a model over every audio file of INPUT... (files, folders searched recursively by audio
    extension, JSON-lines manifests of {"audio": PATH}, glob patterns): each exactly as
    `stream --source file:` runs it, on every core or a Ray cluster. Files already done by the same
    model file and settings are skipped; a bad file is reported in one line and counted. Exit
    status 0: all succeeded, 1: some failed, 2: usage error, 130: interrupted (rerun to continue).
    SIGINT/SIGTERM: no new file starts, those in progress finish."""
    import os
    import signal
    import threading

    from streamrnn.runtime.batch import run_batch

    if ray_address not in (None, "local") and os.path.exists(ray_address):
        raise click.UsageError(f"--ray took {ray_address!r} (an input) as its cluster address: write --ray=ADDRESS, "
                               "or put --ray after the other options")
    cfg = _stream_config(config_path, {k: v for k, v in options.items()}, sets)
    stop = threading.Event()
    tty = sys.stderr.isatty()
    view = {"bar": None, "n": 0, "total": 0, "hours": 0.0}

    def on_signal(signum, frame):
        stop.set()
        signal.signal(signum, signal.SIG_DFL)  # a second signal ends at once
        click.echo("streamrnn: stopping after the files in progress (again to abort)", err=True)

    def on_start(info):
        view["total"] = info["todo"]
        click.echo(f"streamrnn: {info['files']} file(s): {info['todo']} to run, {info['skipped']} already done "
                   f"(same model and settings; --force redoes them)", err=True)
        if tty and info["todo"]:
            from tqdm import tqdm

            cols, rows = _terminal_size(sys.stderr)
            view["bar"] = tqdm(total=info["todo"], unit="file", file=sys.stderr, ncols=cols, nrows=rows)

    def say(line):
        if view["bar"] is not None:
            view["bar"].write(line, file=sys.stderr)
        else:
            click.echo(line, err=True)

    def on_result(r):
        view["n"] += 1
        where = f"[{view['n']}/{view['total']}]"
        if r["status"] == "failed":
            say(f"{where} FAILED {r['path']}: {r['reason']}")
        else:
            view["hours"] += r["audio_seconds"] / 3600
            for w in r.get("warnings", ()):
                say(f"{where} warning {r['file']}: {w}")
            if view["bar"] is None:
                say(f"{where} done {r['file']}: {r['audio_seconds']:.2f} s of audio, {r['segments']} segment(s)")
        if view["bar"] is not None:
            h = view["hours"]
            view["bar"].set_postfix_str(f"{h:.2f} h of audio" if h >= 0.1 else f"{h * 3600:.0f} s of audio",
                                        refresh=False)
            view["bar"].update(1)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = run_batch(inputs, cfg.model, out_dir, write=write, events=cfg.events, pad=pad, workers=workers,
                            ray=ray_address, use_ray=ray_address is not None, force=force,
                            max_model_bytes=cfg.max_model_bytes, stop=stop, on_start=on_start, on_result=on_result)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if view["bar"] is not None:
            view["bar"].close()
    rtf = summary["real_time_factor"]
    click.echo(f"streamrnn: {summary['done']} done, {summary['skipped']} skipped, {summary['failed']} failed"
               f"{', ' + str(summary['not_run']) + ' not run (interrupted: rerun to continue)' if summary['interrupted'] else ''}; "
               f"{summary['audio_hours']:.3f} h of audio, {summary['speech_hours']:.3f} h of segments; "
               f"CPU {summary['cpu_seconds']:.1f} s" + (f" (real-time factor {rtf:.5f})" if rtf else "")
               + f"; summary: {Path(out_dir) / 'summary.json'}", err=True)
    if summary["interrupted"]:
        sys.exit(130)
    if summary["failed"]:
        sys.exit(1)


# --- keygen (CurveZMQ key pairs, docs/operations.md "Security") ---------------------------
@cli.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--name", default="streamrnn", show_default=True, help="File names: NAME.key and NAME.key_secret.")
def keygen(directory: str, name: str):
    """Write a CurveZMQ key pair to DIRECTORY: NAME.key (public: give it to peers, or put it in a
    server's --curve-allow directory) and NAME.key_secret (secret, mode 0600: --curve-secret-key)."""
    from streamrnn.transport.endpoints import write_keypair

    pub, sec = write_keypair(directory, name)
    click.echo(f"public key  {pub}\nsecret key  {sec}")


# --- train / eval / gradcheck (the offline trainer, docs/training.md) --------------------
@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.safetensors.")
@click.option("--force", is_flag=True, help="Start afresh in an OUT folder that already holds a model or "
                                            "checkpoint, overwriting them (without it: refused).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set optim.lr=0.003 (repeatable).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output folder (default runs/<config name>).")
@click.option("--gradflow", "gradflow_lags", type=click.IntRange(0), default=0, is_flag=False, flag_value=100,
              help="After every epoch measure the gradient-flow horizon over up to N lags (--gradflow alone: "
                   "100) on the validation data; logged and in metrics.jsonl.")
@click.option("--max-memory", type=str, default=None, metavar="SIZE",
              help="Refuse to start when the estimated memory of the run exceeds SIZE (bytes, or with K, M, G: "
                   "binary units); default: what the machine has available (train.max_memory).")
def train(config: str, resume: bool, force: bool, overrides: tuple, out_dir: str | None, gradflow_lags: int,
          max_memory: str | None):
    """Train a model with truncated BPTT as CONFIG.toml says; writes OUT/model.safetensors,
    OUT/checkpoint.safetensors, OUT/metrics.jsonl (and OUT/curves.png with matplotlib).
    Says the train/validation split at the start; on a terminal a progress bar per epoch
    (updates, loss, learning rate, ETA), else one line per epoch. Every epoch logs the pre-clip
    gradient norm and the fraction of clipped updates. An OUT folder holding a model or
    checkpoint is refused without --resume or --force."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from streamrnn.config import TrainConfig, load_config
    from streamrnn.train.trainer import check_out_dir, train_from_config

    cfg_path = Path(config)
    cfg = load_config(TrainConfig, cfg_path, overrides,
                      options={"train.max_memory": None if max_memory is None else _parse_size(max_memory)})
    out = Path(out_dir) if out_dir else Path("runs") / cfg_path.stem
    check_out_dir(out, resume=resume, force=force)
    tty = sys.stderr.isatty()
    bar = None

    def on_start(info):
        held = ("none" if not info["n_valid"] else "from data.valid" if cfg.data.valid
                else f"held out of data.train, data.valid_fraction = {cfg.data.valid_fraction:g}")
        click.echo(f"data: {info['n_train']} training sequences ({info['train_frames']} frames), "
                   f"{info['n_valid']} validation ({held}); about {info['updates_per_epoch']} updates per epoch, "
                   f"{info['total_updates']} in {cfg.train.epochs} epoch(s)", err=True)

    def on_step(i):
        nonlocal bar
        line = (f"loss {i['loss']:.4f}  lr {i['lr']:.3g}  grad norm {i['grad_norm']:.3g}"
                f"{'' if i['ok'] else '  (skipped: NaN/Inf)'}")
        if not tty:
            if i["chunk"] == i["n_chunks"] or not i["ok"]:
                click.echo(f"epoch {i['epoch'] + 1} {i['chunk']}/{i['n_chunks']} step {i['step']}  {line}", err=True)
            return
        if bar is None:  # a resumed epoch starts part-way
            cols, rows = _terminal_size(sys.stderr)
            bar = tqdm(total=i["n_chunks"], initial=i["chunk"] - 1, desc=f"epoch {i['epoch'] + 1}", unit="update",
                       file=sys.stderr, ncols=cols, nrows=rows, leave=True)
        bar.set_postfix_str(line, refresh=False)
        bar.update(1)

    def on_epoch(r):
        nonlocal bar
        if bar is not None:
            bar.close()
            bar = None
        parts = [f"{k} {v:.4g}" for k, v in r.items()
                 if isinstance(v, float) and (k.startswith("valid_") or k in (
                     "train_loss", "grad_norm_mean", "clipped_fraction", "horizon_frames", "unigram_perplexity"))]
        click.echo(f"epoch {r['epoch']}: " + "  ".join(parts), err=True)

    with logging_redirect_tqdm():  # log lines (warnings) are written above the bar, never into it
        try:
            res = train_from_config(cfg, base_dir=cfg_path.parent, out_dir=out, resume=resume, on_step=on_step,
                                    on_epoch=on_epoch, name=cfg_path.stem, gradflow_lags=gradflow_lags,
                                    on_start=on_start)
        finally:
            if bar is not None:
                bar.close()
    note = " (stopped early)" if res.stopped_early else ""
    click.echo(f"trained {len(res.history)} epoch(s), {res.steps} updates{note}; "
               f"best model: {out / 'model.safetensors'}", err=True)


def _terminal_size(stream) -> tuple[int, int]:
    """(columns, rows) of the terminal ``stream`` writes to; 100 x 24 where it reports none or 0 x 0
    (a fresh pseudo-terminal), on which tqdm would draw no bar at all."""
    import os

    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return 100, 24
    return size.columns or 100, size.lines or 24


def _parse_size(text: str) -> int:
    """'512M' -> 536870912: bytes with an optional binary K, M, G or T suffix; BadParameter otherwise."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(t[-1:], 1)
    try:
        n = float(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        n = -1
    if not 0 < n < 2**63:
        raise click.BadParameter(f"{text!r} is not a size such as 4G, 512M or 1000000", param_hint="--max-memory")
    return int(n)


@cli.command("eval")
@click.option("--model", "model_path", required=True, help=_MODEL_HELP)
@click.argument("data", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--task", type=click.Choice(["frame", "sequence", "next_frame"]), default=None,
              help="Override the task stored in the model file.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Also draw waveform, log-mel, probability and labels of one manifest file to this PNG "
                   "(needs matplotlib: the plot extra).")
@click.option("--plot-file", type=click.IntRange(0), default=0, show_default=True,
              help="Which manifest entry --plot draws (0 = first line).")
def eval_cmd(model_path: str, data: str, as_json: bool, task: str | None, plot_path: str | None, plot_file: int):
    """Evaluate a model on DATA (a folder of .npz files or a JSONL manifest): loss and,
    for classifiers, accuracy, precision, recall, F1 and ROC-AUC; for a one-output sigmoid
    model with an audio front end on frame labels (a voice-activity detector) also false
    alarms per hour of labelled non-speech."""
    from streamrnn import load_model
    from streamrnn.errors import ConfigError
    from streamrnn.train.data import read_manifest
    from streamrnn.train.trainer import evaluate, sequences_for_model

    m = load_model(model_path)
    # the model's labels are the classes it was trained with (None: "any label" targets)
    entry = None
    if plot_path:  # checked before the (long) evaluation
        from streamrnn.train.vadplot import require_matplotlib

        require_matplotlib()
        if Path(data).is_dir():
            raise ConfigError("--plot needs a JSONL manifest of audio files, not a folder of .npz features")
        entries = read_manifest(data)
        if plot_file >= len(entries):
            raise ConfigError(f"--plot-file {plot_file}: the manifest has {len(entries)} entries "
                              f"(0-{len(entries) - 1})")
        entry = entries[plot_file]
    seqs = sequences_for_model(m, data)  # text files for a token model, else as load_dataset reads them
    res = evaluate(m, seqs, task=task)
    if entry is not None:
        from streamrnn.train.vadplot import plot_vad

        plot_vad(m, entry.audio, plot_path, labels_path=entry.labels)
        res["plot"] = str(plot_path)
    if as_json:
        click.echo(json.dumps(res))
        return
    for k, v in res.items():
        click.echo(f"{k:<22}{v:.6g}" if isinstance(v, float) else f"{k:<22}{v}")


@cli.command()
@click.option("--cell", "cells", multiple=True, type=click.Choice(["rnn_tanh", "rnn_relu", "gru", "lstm"]),
              help="Cell(s) to check (default all).")
@click.option("--layers", type=click.IntRange(1, 8), default=2, show_default=True)
@click.option("--loss", "losses", multiple=True, type=click.Choice(["bce", "ce", "mse"]),
              help="Loss(es) to check (default all).")
@click.option("--tolerance", type=float, default=1e-6, show_default=True)
@click.option("--direction", "directions", multiple=True, type=click.Choice(["uni", "bi"]),
              help="Unidirectional and/or bidirectional models (default both).")
def gradcheck(cells: tuple, layers: int, losses: tuple, tolerance: float, directions: tuple):
    """Float64 central-difference check of the backward kernels; prints the worst relative
    error per cell, loss and direction, exits 1 if any is above the tolerance."""
    from streamrnn.train.bptt import gradcheck as check

    worst = 0.0
    for direction in directions or ("uni", "bi"):
        for cell in cells or ("rnn_tanh", "rnn_relu", "gru", "lstm"):
            for loss in losses or ("bce", "ce", "mse"):
                r = check(cell, layers, loss, bidirectional=direction == "bi")
                worst = max(worst, r["worst"])
                click.echo(f"{cell:<9} {loss:<4} {direction:<3} layers {layers}  worst relative error "
                           f"{r['worst']:.2e} ({r['where']}, {r['n_checked']} entries)")
    click.echo(f"worst {worst:.2e} (tolerance {tolerance:g}): {'ok' if worst <= tolerance else 'FAILED'}")
    if worst > tolerance:
        sys.exit(1)


# --- gradflow (docs/training.md, "Gradient flow") -------------------------------------------
@cli.command("gradflow")
@click.argument("model")
@click.argument("data", type=click.Path(exists=True))
@click.option("--max-lag", type=click.IntRange(1, 100_000), default=200, show_default=True,
              help="Largest lag k (frames) of |dL_t/ds_(t-k)|.")
@click.option("--anchors", type=click.IntRange(1, 100_000), default=32, show_default=True,
              help="Anchor frames t averaged over.")
@click.option("--warmup", type=click.IntRange(0), default=200, show_default=True,
              help="Frames each window runs from zero state before its farthest lag.")
@click.option("--task", type=click.Choice(["frame", "sequence", "next_frame"]), default=None,
              help="Override the task stored in the model file.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the anchor draw.")
@click.option("--run", "run_dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="A `streamrnn train --out` folder: add its pre-clip gradient norms and clipped fractions.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Draw the norms per lag (and the run's history) to this PNG (needs matplotlib).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def gradflow_cmd(model, data, max_lag, anchors, warmup, task, seed, run_dir, plot_path, as_json):
    """Gradient flow of MODEL on DATA (as `eval` reads it): the mean norm of the loss gradient with
    respect to the state k frames back, its fitted decay per step and horizon (100-fold drop), the
    spectral radius of each layer's recurrent gate blocks, and with --run a training run's history."""
    from streamrnn import load_model
    from streamrnn.train.gradflow import format_gradflow, gradient_flow, plot_gradflow
    from streamrnn.train.trainer import sequences_for_model

    if plot_path:
        from streamrnn.train.vadplot import require_matplotlib

        require_matplotlib()  # before the measurement
    m = load_model(model)
    g = gradient_flow(m, sequences_for_model(m, data), max_lag=max_lag, n_anchors=anchors, warmup=warmup,
                      seed=seed, run_dir=run_dir, task=task)
    if plot_path:
        plot_gradflow(g, plot_path, title=f"gradient flow: {m.name} on {Path(data).name}")
    if as_json:
        click.echo(json.dumps(g.to_dict()))
        return
    for line in format_gradflow(g):
        click.echo(line)


# --- generate (token models, docs/training.md "Next-token prediction") -----------------------
@cli.command()
@click.option("--model", "model_path", required=True, help="A token model file (embedding + vocab).")
@click.option("--prompt", required=True, help="Text the model reads first (UTF-8).")
@click.option("--tokens", "n_tokens", type=click.IntRange(0, 1_000_000), default=100, show_default=True,
              help="Tokens (characters or words) to generate.")
@click.option("--temperature", type=click.FloatRange(0.0), default=1.0, show_default=True,
              help="Sampling temperature; 0 takes the most probable token every step.")
@click.option("--seed", type=int, default=None, help="Seed of the draw (repeatable output).")
def generate(model_path, prompt, n_tokens, temperature, seed):
    """Print PROMPT followed by a continuation drawn from a next-token model."""
    from streamrnn import load_model
    from streamrnn.nn.text import generate as gen, model_vocab

    m = load_model(model_path)
    click.echo(model_vocab(m).join(prompt, gen(m, prompt, n_tokens, temperature, seed)))


# --- bench (tools/bench.py, docs/bench.md) ---------------------------------------------------
@cli.command()
@click.option("--quick", is_flag=True, help="Fewer repeats: a smoke run in about a minute.")
@click.option("--only", multiple=True,
              type=click.Choice(["step", "bound", "pipeline", "streams", "many", "startup", "train", "batch"]),
              help="Run only these sections (repeatable).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Directory for bench.json and bench.md (default: a scratch directory, printed at the "
                   "end; --out docs updates the checkout's docs/).")
def bench(quick, only, out):
    """Side-by-side benchmark against NumPy, PyTorch, ONNX Runtime and Silero VAD.

    Runs tools/bench.py of a source checkout (the benchmark and its peers are not part of the
    installed package); optional peers are skipped with a note when not installed.
    """
    import runpy

    script = Path(__file__).resolve().parent.parent / "tools" / "bench.py"
    if not script.is_file():
        raise StreamRNNError("streamrnn bench runs tools/bench.py from a source checkout of streamrnn; "
                             f"{script} is not there (clone the repository and pip install -e .)")
    argv = [str(script)] + (["--quick"] if quick else []) + [a for o in only for a in ("--only", o)]
    if out:
        argv += ["--out", out]
    old = sys.argv
    sys.argv = argv
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = old


def main():
    cli(prog_name="streamrnn")


if __name__ == "__main__":
    main()

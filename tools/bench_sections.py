"""Sections of tools/bench.py that exercise the whole runtime: pipeline, many streams, start-up, training.

Each returns a dict with its numbers and a ``markdown`` section for docs/bench.md.
CPU time is measured with ``time.process_time`` (in-process) or from /proc (subprocesses).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"


def _long_file(seconds: int, rate: int, d: Path) -> Path:
    """``seconds`` of the demo recording (tiled) at ``rate`` Hz: speech, music-like sounds, noise."""
    import soundfile as sf
    import soxr

    from streamrnn.transport.sources import demo_path

    x, sr = sf.read(str(demo_path()), dtype="float32")
    x = np.tile(x, seconds * sr // len(x) + 1)[: seconds * sr]
    if rate != sr:
        x = soxr.resample(x, sr, rate).astype(np.float32)
    path = d / f"long_{seconds}s_{rate}.wav"
    sf.write(str(path), x, rate, subtype="PCM_16")
    return path


# --- whole pipeline ---------------------------------------------------------------------------
def _streamrnn_pipeline_cpu(path: Path, out: Path) -> float:
    """CPU seconds of the pipeline's run(): read, resample, log-mel, model, events, write JSON lines."""
    import streamrnn
    from streamrnn.config import StreamConfig
    from streamrnn.runtime.pipeline import Pipeline
    from streamrnn.transport.sinks import open_sink
    from streamrnn.transport.sources import open_source

    model = streamrnn.load_model("vad")
    p = Pipeline(open_source(f"file:{path}"), [open_sink(f"jsonl:{out}")], model=model, config=StreamConfig())
    p.warm_up(48000)
    t0 = time.process_time()
    p.run()
    return time.process_time() - t0


def _stage_cpu(path: Path, out: Path) -> dict:
    """CPU seconds of each stage of the pipeline, run by hand in one streaming loop over the same
    file and the same 1 s blocks, each stage's calls timed on their own: what the whole is made of."""
    import streamrnn
    from streamrnn.audio.frontend import as_frontend
    from streamrnn.audio.resample import Resampler
    from streamrnn.transport import wire
    from streamrnn.transport.records import row_lines
    from streamrnn.transport.sources import open_source

    model = streamrnn.load_model("vad")
    src = open_source(f"file:{path}")
    fe = as_frontend(model.frontend)
    st = model.stream()
    rs = None
    names = ("read (soundfile, int16 -> float32)", "resample 48 -> 16 kHz (soxr HQ)", "log-mel front end",
             f"model ({model.num_layers}-layer {model.cell.upper()} {model.hidden_size} + head)",
             "JSON lines (100 rows per second of audio)")
    cpu = dict.fromkeys(names, 0.0)
    clock = time.process_time
    desc = {"rate": fe.frame_rate}
    k = 0
    with open(out, "w", encoding="utf-8", buffering=1 << 16) as f:
        src.open()
        while not src.exhausted:
            t0 = clock()
            chunks = [c for c in src.read(0.05) if c.data.shape[0]]
            t1 = clock()
            cpu[names[0]] += t1 - t0
            for c in chunks:
                if rs is None:  # warm every stage on the first block, untimed
                    rs = Resampler(c.rate, fe.sample_rate, 1)
                    st.push(fe.push(rs.push(c.data[:4800])))
                    rs.reset()
                    fe.reset()
                    st.reset()
                t0 = clock()
                x = rs.push(c.data)
                t1 = clock()
                frames = fe.push(x)
                t2 = clock()
                y = st.push(frames)
                t3 = clock()
                f.write(row_lines(wire.Message(wire.PRED, "file0", sample_index=k, data=y), desc))
                t4 = clock()
                k += y.shape[0]
                for name, dt in zip(names[1:], (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    cpu[name] += dt
        src.close()
    return cpu


def _silero_cpu(path: Path, out: Path):
    """The same file through Silero VAD's packaged ONNX model, as its own streaming wrapper runs it:
    read, resample to 16 kHz, 512-sample windows with 64 samples of context, one ONNX Runtime
    thread, probabilities written as JSON lines."""
    try:
        import importlib.resources

        import onnxruntime as ort
        import silero_vad  # noqa: F401  (the package that ships the model)
    except ImportError as e:
        return None, f"Silero VAD not measured ({e.name} not installed: pip install silero-vad onnxruntime)"
    import soundfile as sf
    import soxr

    onnx_path = importlib.resources.files("silero_vad") / "data" / "silero_vad.onnx"
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    t0 = time.process_time()
    x, sr = sf.read(str(path), dtype="float32")
    x = soxr.resample(x, sr, 16000).astype(np.float32)
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros((1, 64), np.float32)
    srate = np.array(16000, dtype=np.int64)
    with open(out, "w") as f:
        for i in range(0, len(x) - 511, 512):
            chunk = np.concatenate([context, x[None, i:i + 512]], axis=1)  # (1, 576)
            prob, state = sess.run(None, {"input": chunk, "state": state, "sr": srate})
            context = chunk[:, -64:]
            f.write(json.dumps({"t": i / 16000, "p": float(prob[0, 0])}) + "\n")
    return time.process_time() - t0, "Silero VAD v6 (silero_vad.onnx from the silero-vad package), ONNX Runtime, 1 thread"


def bench_pipeline(a) -> dict:
    seconds = 600 if not a.quick else 60
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        path = _long_file(seconds, 48000, d)
        ours, theirs, note, stages = [], [], "", []
        for _ in range(max(1, a.repeats)):
            ours.append(_streamrnn_pipeline_cpu(path, d / "ours.jsonl"))
            stages.append(_stage_cpu(path, d / "stages.jsonl"))
            cpu, note = _silero_cpu(path, d / "silero.jsonl")
            if cpu is not None:
                theirs.append(cpu)
    r = {"audio_seconds": seconds, "input_rate": 48000, "streamrnn_cpu_s": float(np.median(ours)),
         "silero_cpu_s": float(np.median(theirs)) if theirs else None, "silero": note,
         "stages_cpu_s": {k: float(np.median([st[k] for st in stages])) for k in stages[0]}}
    r["streamrnn_rtf"] = r["streamrnn_cpu_s"] / seconds
    r["silero_rtf"] = r["silero_cpu_s"] / seconds if theirs else None
    ratio = f"{r['silero_cpu_s'] / r['streamrnn_cpu_s']:.1f}x" if theirs else "-"
    r["markdown"] = "\n".join([
        "## Whole pipeline on a long file", "",
        f"{seconds} s of audio at 48 kHz (the demo recording tiled): read, resample to 16 kHz, log-mel, "
        "the bundled VAD (2-layer GRU), events, JSON lines to a file. CPU seconds of the processing "
        "(after start-up), median of repeats; the real-time factor is CPU time / audio time.", "",
        "| | CPU s | real-time factor | CPU vs streamrnn |", "|---|---:|---:|---:|",
        f"| streamrnn (bundled VAD) | {r['streamrnn_cpu_s']:.2f} | {r['streamrnn_rtf']:.5f} | 1x |",
        (f"| {note} | {r['silero_cpu_s']:.2f} | {r['silero_rtf']:.5f} | {ratio} |" if theirs else f"| {note} | - | - | - |"),
        "", "Where streamrnn's time goes: the same stages run by hand in one streaming loop over the same file "
        "and 1 s blocks, each stage's calls timed on their own (median of repeats). The whole pipeline's CPU "
        "minus their sum is its own bookkeeping (wire messages, events, stats).", "",
        "| stage | CPU s | real-time factor | share of the whole |", "|---|---:|---:|---:|",
        *[f"| {k} | {v:.3f} | {v / seconds:.6f} | {v / r['streamrnn_cpu_s']:.0%} |"
          for k, v in r["stages_cpu_s"].items()],
        f"| rest of the pipeline | {r['streamrnn_cpu_s'] - sum(r['stages_cpu_s'].values()):.3f} | | |",
    ])
    print("pipeline", {k: v for k, v in r.items() if k != "markdown"}, flush=True)
    return r


# --- many streams through the real ZeroMQ path -------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU seconds of process ``pid`` (and, ``children``, of its children it waited for)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15 if children else 13]) / os.sysconf("SC_CLK_TCK")


def _wait_idle(pid: int, step: float = 0.25, idle: float = 0.05, limit: float = 60.0) -> float:
    """Wait until process ``pid`` uses under ``idle`` of a core over ``step`` s (it only polls now);
    returns its CPU seconds then (the last reading if it exits or ``limit`` s pass)."""
    t_end = time.monotonic() + limit
    c = _cpu_seconds(pid)
    while time.monotonic() < t_end:
        time.sleep(step)
        try:
            c2 = _cpu_seconds(pid)
        except OSError:
            break
        if c2 - c < idle * step:
            return c2
        c = c2
    return c


def _run_streams(n: int, seconds: float, block_ms: int) -> dict:
    import re

    port_in = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamrnn", "stream", "--model", "vad", "--source", f"zmq+pull://127.0.0.1:{port_in}",
         "--sink", "null", "--max-streams", str(n + 8), "--no-events", "--duration", str(seconds + 8)],
        env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    time.sleep(1.0)
    _wait_idle(proc.pid)  # start-up and warm-up done: the server only polls
    gen = subprocess.Popen([sys.executable, str(TOOLS / "loadgen.py"), "--streams", str(n), "--seconds", str(seconds),
                            "--block-ms", str(block_ms), f"tcp://127.0.0.1:{port_in}"],
                           env=env, stdout=subprocess.PIPE, text=True)
    c_start = _cpu_seconds(proc.pid)  # after start-up: the load starts now
    time.sleep(1.5)  # every stream has started
    c0, t0 = _cpu_seconds(proc.pid), time.monotonic()
    out, _ = gen.communicate(timeout=seconds + 120)  # loadgen gives up on a send blocked for 10 s
    c1, t1 = _cpu_seconds(proc.pid), time.monotonic()
    c_end = _wait_idle(proc.pid)  # its CPU until the backlog is processed, not its idle tail and exit
    _, err = proc.communicate(timeout=120)
    sent = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"messages": None, "behind_s": float("inf")}
    frames = re.search(r"frames_out\s+(\d+)", err)
    lat = re.search(r"latency\s+p50 ([\d.]+) ms, p99 ([\d.]+) ms", err)
    drops = re.search(r"drops\s+(\d+)", err)
    cpu_frac = (c1 - c0) / (t1 - t0)
    msgs_in = re.search(r"messages_in\s+(\d+)", err)
    # CPU per received message, from the end of start-up to the end of the backlog: on a loaded
    # machine the wall-clock fraction misses a backlog processed after the window, this does not
    per_msg = (c_end - c_start) / int(msgs_in.group(1)) if msgs_in and int(msgs_in.group(1)) else None
    return {"streams": n, "cpu_fraction": cpu_frac, "messages_sent": sent["messages"],
            "cpu_us_per_message": per_msg * 1e6 if per_msg else None,
            "streams_per_core_cpu_bound": 1.0 / (per_msg * 1000 / block_ms * (1 + block_ms / 1000)) if per_msg else None,
            "generator_behind_s": sent["behind_s"], "frames_out": int(frames.group(1)) if frames else None,
            "drops": int(drops.group(1)) if drops else 0,
            "latency_ms": [float(lat.group(1)), float(lat.group(2))] if lat else None,
            "streams_per_core": n / cpu_frac if cpu_frac > 0 else None}


STREAM_LOADS = {100: [100, 250, 500, 750, 1000, 1500], 20: [100, 250, 500, 750]}  # block ms -> streams


def bench_streams(a) -> dict:
    seconds = 5 if a.quick else 12
    runs = 1 if a.quick else 3  # the VM's speed drifts between runs: the median run of each load counts
    rows = []
    for block_ms, counts in STREAM_LOADS.items():
        for n in ([50, 200] if a.quick else counts):
            tries = sorted((_run_streams(n, seconds, block_ms) for _ in range(runs)), key=lambda r: r["cpu_fraction"])
            r = dict(tries[len(tries) // 2], block_ms=block_ms, runs=runs, cpu_fractions=[t["cpu_fraction"] for t in tries])
            rows.append(r)
            print("streams", r, flush=True)
            if r["cpu_fraction"] > 0.95 or r["generator_behind_s"] > 1.0 or (r["latency_ms"] or [0, 0])[1] > 1000:
                # the core is saturated, or the machine gives the server or the one load generator less
                # than the load needs (the server falls seconds behind): larger loads measure nothing more
                break
    return {"rows": rows, "markdown": streams_markdown(rows)}


def streams_markdown(rows: list) -> str:
    md = ["## Many streams on one core", "",
          "`tools/loadgen.py` (a second process) sends N concurrent 16 kHz streams, int16 blocks of 100 ms or "
          "20 ms in real time, over ZeroMQ PUSH on 127.0.0.1 to one `streamrnn stream --model vad --source "
          "zmq+pull://...` process (every stream's front-end state in one `FeatureBank`, every GRU state in one "
          "`Bank`: two kernel calls per read for all streams; the data messages of a read decoded together, the "
          "predictions of a tick handed to the sinks together). "
          "CPU fraction is that process's CPU time over wall time while the load runs (1.0 = one core busy); "
          "streams per core = N / CPU fraction. CPU us per message is the process's CPU from the end of its start-up "
          "until its backlog is processed (it idles again) over the messages it received (data, descriptors once "
          "a second, end of stream), "
          "and the CPU bound the streams one core would carry at that cost; it does not depend on how much "
          "of the core other processes leave, which the latency does. Each load runs several times; the table "
          "shows the median run (and the range of CPU fractions).", "",
          "| block | streams | CPU fraction (range) | streams per core | CPU us per message | streams per core at the CPU bound | latency p50 / p99 ms | drops |",
          "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lat = r["latency_ms"]
        fr = r.get("cpu_fractions") or [r["cpu_fraction"]]
        pm, cb = r.get("cpu_us_per_message"), r.get("streams_per_core_cpu_bound")
        md.append(f"| {r.get('block_ms', 100)} ms | {r['streams']} | {r['cpu_fraction']:.2f} ({min(fr):.2f}-{max(fr):.2f}) | "
                  f"{r['streams_per_core']:.0f} | {'-' if pm is None else f'{pm:.1f}'} | {'-' if cb is None else f'{cb:.0f}'} | "
                  f"{'-' if not lat else f'{lat[0]:.1f} / {lat[1]:.1f}'} | {r['drops']} |")
    if any((r["latency_ms"] or [0, 0])[1] > 1000 for r in rows):
        md += ["", "Where the latency runs into seconds, the machine gave the server (or the one load generator) less "
                   "CPU than the load needs: those rows' CPU fraction and streams per core measure the machine's other "
                   "load, not the server; their CPU per message still holds."]
    for block_ms in STREAM_LOADS:
        ok = [r for r in rows if r.get("block_ms", 100) == block_ms and r["cpu_fraction"] <= 0.9 and not r["drops"]
              and r["latency_ms"] and r["latency_ms"][1] < 100]
        best = max(ok, key=lambda r: r["streams"], default=None)
        if best:
            md += ["", f"{block_ms} ms blocks: largest measured load kept in real time on one core with no drops and "
                       f"p99 under 100 ms: {best['streams']} streams (estimated capacity "
                       f"{best['streams_per_core']:.0f} streams per core)."]
    return "\n".join(md)


# --- one live stream, paced in real time -------------------------------------------------------------
LIVE_WINDOW = (4.0, 20.0)  # s after `streamrnn stream` starts: the CPU between them is the paced loop's


def _demo_16k() -> np.ndarray:
    import soundfile as sf

    from streamrnn.transport.sources import demo_path

    x, sr = sf.read(str(demo_path()), dtype="float32")
    assert sr == 16000, sr
    return x


def _paced(step, x: np.ndarray, block: int, seconds: float, rate: int = 16000) -> float:
    """``step(block)`` on consecutive ``block``-sample slices of ``x``, each when its last sample would
    have arrived from a microphone (sleeping until then); returns the process's CPU seconds per
    audio second of the loop (start-up and the first, warming call excluded)."""
    step(x[:block])
    n = int(seconds * rate) // block
    t0, c0 = time.monotonic(), time.process_time()
    for i in range(n):
        wait = t0 + (i + 1) * block / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        j = (i * block) % (len(x) - block)
        step(x[j:j + block])
    return (time.process_time() - c0) / (n * block / rate)


def live_loop(name: str, seconds: float) -> dict:
    """One paced loop in this process (``python tools/bench_sections.py --live-loop NAME SECONDS``)."""
    x = _demo_16k()
    if name == "idle":  # the floor: waking every 20 ms and doing nothing
        return {"cpu_per_s": _paced(lambda b: None, x, 320, seconds), "block": 320}
    if name == "api":  # streamrnn's Python API: 20 ms pushes of float32 samples
        import streamrnn

        s = streamrnn.load_model("vad").audio_stream(16000)
        return {"cpu_per_s": _paced(s.push, x, 320, seconds), "block": 320}
    if name == "silero":  # its ONNX model as its own OnnxWrapper runs it: 512 samples + 64 of context
        import importlib.util

        import onnxruntime as ort

        spec = importlib.util.find_spec("silero_vad")
        if spec is None:
            raise ImportError("silero_vad")
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(Path(list(spec.submodule_search_locations)[0]) / "data" / "silero_vad.onnx"),
                                    so, providers=["CPUExecutionProvider"])
        st = {"state": np.zeros((2, 1, 128), np.float32), "ctx": np.zeros((1, 64), np.float32)}
        sr = np.array(16000, np.int64)

        def step(b):
            chunk = np.concatenate([st["ctx"], b[None]], axis=1)  # (1, 576)
            _, st["state"] = sess.run(None, {"input": chunk, "state": st["state"], "sr": sr})
            st["ctx"] = chunk[:, -64:]

        return {"cpu_per_s": _paced(step, x, 512, seconds), "block": 512}
    if name == "ten":  # TEN VAD: int16 hops of 160 samples, two per 20 ms block
        from ten_vad import TenVad

        vad = TenVad(160, 0.5)
        pcm = (np.clip(x, -1, 1 - 2**-15) * 32768).astype(np.int16)

        def step(b):
            vad.process(b[:160])
            vad.process(b[160:])

        return {"cpu_per_s": _paced(step, pcm, 320, seconds), "block": 320}
    raise ValueError(name)


def _thread_cpu_seconds(pid: int) -> float:
    """CPU seconds of every thread of process ``pid`` from schedstat (nanoseconds: /proc's stat counts
    10 ms ticks, 13 us of a 20 ms block over a 16 s window)."""
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            pass
    return total / 1e9


def _cli_live_cpu(seconds: float, sink: str = "null") -> float:
    """CPU seconds per audio second of ``streamrnn stream --model vad --source demo --sink SINK``
    (paced in real time; ``stdout``: JSON lines, to /dev/null) between LIVE_WINDOW[0] and
    LIVE_WINDOW[0] + seconds after it starts."""
    proc = subprocess.Popen([sys.executable, "-m", "streamrnn", "stream", "--model", "vad", "--source", "demo",
                             "--sink", sink] + (["--json"] if sink == "stdout" else []),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        time.sleep(LIVE_WINDOW[0])
        c0, w0 = _thread_cpu_seconds(proc.pid), time.monotonic()
        time.sleep(max(0.0, t0 + LIVE_WINDOW[0] + seconds - time.monotonic()))
        c1, w1 = _thread_cpu_seconds(proc.pid), time.monotonic()
        if proc.poll() is not None:
            raise RuntimeError("streamrnn stream ended inside the measuring window")
    finally:
        proc.kill()
        proc.wait()
    return (c1 - c0) / (w1 - w0)


def _live_loop_subprocess(name: str, seconds: float):
    r = subprocess.run([sys.executable, str(TOOLS / "bench_sections.py"), "--live-loop", name, str(seconds)],
                       capture_output=True, text=True, timeout=seconds + 120,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    if r.returncode != 0:
        return None, (r.stderr.strip().splitlines() or ["failed"])[-1]
    return json.loads(r.stdout.strip().splitlines()[-1])["cpu_per_s"], ""


LIVE_ROWS = (("cli", "`streamrnn stream --model vad --source demo --sink null` (20 ms blocks)"),
             ("cli_stdout", "the same with `--sink stdout --json` (one JSON line per prediction, to /dev/null)"),
             ("api", "streamrnn API: `audio_stream.push` of 20 ms blocks"),
             ("silero", "Silero VAD v6 (ONNX Runtime, 1 thread): 32 ms chunks (512 samples + 64 of context)"),
             ("ten", "TEN VAD: two 10 ms hops per 20 ms block"),
             ("idle", "the floor: the same paced loop doing nothing (one sleep and wake-up per 20 ms)"))


def bench_live(a) -> dict:
    """One live 16 kHz stream paced in real time: CPU seconds per audio second, beyond start-up, of
    streamrnn's CLI and API and of Silero VAD's and TEN VAD's paced loops, interleaved."""
    seconds = 5.0 if a.quick else LIVE_WINDOW[1] - LIVE_WINDOW[0]
    runs = {k: [] for k, _ in LIVE_ROWS}
    notes = {}
    for _ in range(1 if a.quick else max(3, a.repeats)):
        for key, _ in LIVE_ROWS:
            if key in notes:
                continue
            if key in ("cli", "cli_stdout"):
                runs[key].append(_cli_live_cpu(seconds, "null" if key == "cli" else "stdout"))
            else:
                v, why = _live_loop_subprocess(key, seconds)
                if v is None:
                    notes[key] = f"not measured: {why}"
                else:
                    runs[key].append(v)
        print("live", {k: [round(v, 5) for v in vs] for k, vs in runs.items()}, flush=True)
    med = {k: float(np.median(v)) if v else None for k, v in runs.items()}
    md = ["## One live stream, paced in real time", "",
          f"One 16 kHz stream (the demo recording) delivered in real time: each block is processed when its last "
          f"sample would have arrived, and the loop sleeps in between. CPU seconds of the process per second of "
          f"audio, after start-up ({seconds:g} s windows; the CLI measured from /proc (every thread's schedstat, "
          f"in ns) between {LIVE_WINDOW[0]:g} s and {LIVE_WINDOW[0] + seconds:g} s after it starts, the loops with "
          f"`time.process_time` in their own process). The contenders run one after the other, interleaved over "
          f"the repeats; median (range). "
          f"After every sleep the caches are cold (other processes run meanwhile), so a live block costs far "
          f"more than the same work in a tight loop; numbers on a shared machine are noisy.", "",
          "| loop | CPU s per audio s (range) | us per 20 ms | vs streamrnn stream |", "|---|---:|---:|---:|"]
    for key, label in LIVE_ROWS:
        v = runs[key]
        if not v:
            md.append(f"| {label} | {notes.get(key, '-')} | | |")
            continue
        ratio = f"{med[key] / med['cli']:.1f}x" if med.get("cli") else "-"
        md.append(f"| {label} | {med[key]:.4f} ({min(v):.4f}-{max(v):.4f}) | {med[key] * 20000:.0f} | {ratio} |")
    r = {"seconds": seconds, "runs": runs, "median_cpu_per_audio_s": med, "notes": notes, "markdown": "\n".join(md)}
    return r


# --- start-up ---------------------------------------------------------------------------------------
STARTUP_CMD = ["stream", "--model", "vad", "--source", "demo", "--sink", "stdout", "--json", "--no-events"]

# One cold warm-up in a fresh process, with Numba's compile events: CPU seconds of each kernel's
# compile (``nested`` ones inside their caller's time), printed as one JSON object.
_KERNEL_PROFILE = r"""
import json, sys, time
from numba.core import event
spans, stack = [], []
class L(event.Listener):
    def on_start(self, e):
        stack.append(time.process_time())
    def on_end(self, e):
        f = e.data["dispatcher"].py_func
        spans.append((len(stack) - 1, f"{f.__module__}.{f.__qualname__}", time.process_time() - stack.pop()))
event.register("numba:compile", L())
import streamrnn
import streamrnn.runtime.pipeline as pl
pl.compile_front_end_elsewhere = lambda *a: None  # every kernel compiles here, to be timed
t0 = time.process_time()
streamrnn.run_stream(streamrnn.StreamConfig(model="vad", source="demo", duration=0.1, sink=("null",)))
top = {}
for depth, name, dt in spans:
    if depth == 0:
        top[name] = top.get(name, 0.0) + dt
print(json.dumps({"run_cpu_s": time.process_time() - t0, "kernels": top}))
"""


def _first_prediction(cache_dir: str) -> tuple[float, float]:
    """(wall s, CPU s) from starting ``streamrnn stream --model vad --source demo`` to its first
    prediction on stdout; CPU is the child's user + system time (/proc) when that line arrives,
    with its front-end compile helper's (a cold start's, waited for before the first prediction)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "streamrnn", *STARTUP_CMD], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    wall = cpu = None
    try:
        for line in proc.stdout:
            if '"pred"' in line:
                wall, cpu = time.perf_counter() - t0, _cpu_seconds(proc.pid, children=True)
                break
    finally:
        proc.kill()
        proc.wait()
    if wall is None:
        raise RuntimeError("no prediction")
    return wall, cpu


def _kernel_compile_cpu() -> dict:
    """CPU seconds of each kernel's first compile in the README command's warm-up (empty cache)."""
    with tempfile.TemporaryDirectory() as cache:
        out = subprocess.run([sys.executable, "-c", _KERNEL_PROFILE], env={**os.environ, "NUMBA_CACHE_DIR": cache},
                             capture_output=True, text=True, check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_startup(a) -> dict:
    """Cold (empty kernel cache, a fresh one each time) and warm starts of the README's first
    command, medians of repeats (wall and CPU seconds), and the compile CPU of each kernel."""
    n = 1 if a.quick else max(3, a.repeats)
    cold, warm = [], []
    for _ in range(n):
        with tempfile.TemporaryDirectory() as cache:
            cold.append(_first_prediction(cache))
            warm.append(_first_prediction(cache))
    med = lambda rows, k: float(np.median([r[k] for r in rows]))  # noqa: E731
    prof = _kernel_compile_cpu()
    kernels = sorted(prof["kernels"].items(), key=lambda kv: -kv[1])
    load = os.getloadavg()[0]
    md = ["## Start-up", "",
          f"From starting `streamrnn {' '.join(STARTUP_CMD)}` to its first prediction on stdout. Cold: an empty "
          "Numba cache (`NUMBA_CACHE_DIR` a fresh directory: every kernel compiles); warm: the kernels loaded "
          f"from that cache. Medians of {n} runs; wall seconds depend on what else the machine runs (load average "
          f"{load:.1f} on {os.cpu_count()} CPUs when measured), CPU seconds (the process's user + system time) "
          "much less.", "",
          "| | wall s | CPU s | wall range |", "|---|---:|---:|---:|",
          *(f"| {name} | {med(rows, 0):.2f} | {med(rows, 1):.2f} | {min(r[0] for r in rows):.1f}-"
            f"{max(r[0] for r in rows):.1f} |" for name, rows in (("cold", cold), ("warm", warm))),
          "", "The cold start compiles the front end's kernels in a helper process while the model's compiles "
          "(CPU above: both); where its compile goes (CPU seconds of each kernel's compile, callees included, "
          "all in one process; one run):", "", "| kernel | compile CPU s |", "|---|---:|"]
    md += [f"| `{k}` | {v:.2f} |" for k, v in kernels]
    md += [f"| whole warm-up and 0.1 s of stream | {prof['run_cpu_s']:.2f} |"]
    print("startup cold", cold, "warm", warm, "kernels", kernels, flush=True)
    return {"cold_s": med(cold, 0), "cold_cpu_s": med(cold, 1), "warm_s": med(warm, 0), "warm_cpu_s": med(warm, 1),
            "cold_runs": cold, "warm_runs": warm, "kernel_compile_cpu_s": dict(kernels), "load_average": load,
            "markdown": "\n".join(md)}


# --- training --------------------------------------------------------------------------------------
def bench_train(a) -> dict:
    args = [sys.executable, str(TOOLS / "bench_train.py"), "--json", "--epochs", "2" if a.quick else "3",
            "--rounds", "1" if a.quick else "2"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        return {"markdown": f"## Training\n\nbench_train.py failed: {r.stderr.strip().splitlines()[-1:]}\n"}
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    md = ["## Training (truncated BPTT)", "",
          "`tools/bench_train.py`: 2-layer GRU, input 40, batch 32, k1 = k2 = 100, Adam, clipping 1.0, the same "
          "initial weights, data and chunking for both, one thread; seconds per epoch (fastest timed epoch).", "",
          "| hidden | streamrnn s/epoch | PyTorch s/epoch | PyTorch / streamrnn | valid loss streamrnn | valid loss PyTorch |",
          "|---:|---:|---:|---:|---:|---:|"]
    for row in rep.get("rows", []):
        torch_s = row.get("torch_s_per_epoch")
        ratio = row.get("speed_ratio_torch_over_streamrnn")
        md.append(f"| {row['hidden']} | {row['streamrnn_s_per_epoch']:.3f} | "
                  f"{'-' if torch_s is None else f'{torch_s:.3f}'} | {'-' if ratio is None else f'{ratio:.2f}x'} | "
                  f"{row['streamrnn_valid_loss']:.6f} | {row.get('torch_valid_loss', float('nan')):.6f} |")
    rep["markdown"] = "\n".join(md)
    print("train", rep.get("rows"), flush=True)
    return rep


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--live-loop":  # one paced loop, for bench_live
        print(json.dumps(live_loop(sys.argv[2], float(sys.argv[3]))))
    else:
        raise SystemExit("usage: bench_sections.py --live-loop api|silero|ten|idle SECONDS (tools/bench.py runs it)")

"""`streamrnn batch` and `streamrnn.speech_segments` (issue 17), on real files with the real CLI.

A generated corpus of 30 files (nested folders; WAV, FLAC, OGG via soundfile; 8 to 48 kHz; mono and
stereo; two broken) runs through `batch --workers 2`; the 28 good files' predictions equal
`stream --source file:` bit for bit (the CLI as a subprocess for one file of each format, the
function it runs, `run_stream`, for all 28), their segments equal its end events and
`speech_segments` on the same audio; a local Ray cluster started here gives the same outputs; a
SIGINT mid-run and a rerun finish the corpus without redoing or half-writing a file.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from click.testing import CliRunner

import streamrnn
from streamrnn.audio.files import read_labels
from streamrnn.cli import cli
from streamrnn.config import EventParams, StreamConfig
from streamrnn.runtime.batch import (OUTPUT_SUFFIXES, Prediction, find_inputs, run_batch, segment_params,
                                     segments_of)
from streamrnn.transport.sources import demo_path

PY = sys.executable
ALL = "segments,audacity,rttm,csv,npy"
# (relative path, rate, channels, subtype, seconds, offset into the demo s)
GOOD = [(f"{folder}{name}_{i}.{ext}", rate, ch, sub, 1.0 + (i % 4) * 0.5, 1.5 * i)
        for i, (folder, name, ext, rate, ch, sub) in enumerate([
            ("", "top", "wav", 16000, 1, "PCM_16"), ("", "top", "flac", 44100, 2, "PCM_24"),
            ("a/", "speech", "ogg", 48000, 1, "VORBIS"), ("a/", "speech", "wav", 8000, 2, "FLOAT"),
            ("a/b/", "deep", "flac", 22050, 1, "PCM_16"), ("a/b/", "deep", "ogg", 32000, 2, "VORBIS"),
            ("a/b/c/", "deeper", "wav", 11025, 1, "PCM_16"), ("d/", "other", "flac", 16000, 2, "PCM_16"),
            ("d/", "other", "wav", 44100, 1, "PCM_24"), ("d/e/", "x", "ogg", 16000, 1, "VORBIS"),
            ("d/e/", "x", "wav", 48000, 2, "PCM_16"), ("", "loud", "flac", 8000, 1, "PCM_16"),
            ("a/", "y", "wav", 22050, 2, "DOUBLE"), ("a/b/", "z", "ogg", 44100, 1, "VORBIS"),
        ] * 2)]
BROKEN = ["a/broken.wav", "d/e/empty.flac"]
CLI_CHECKED = ["top_0.wav", "top_1.flac", "a/speech_2.ogg", "a/speech_3.wav"]  # one per format, stereo, 8-48 kHz


def _env():
    root = str(Path(streamrnn.__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


def cli_run(*args, cwd, timeout=300):
    return subprocess.run([PY, "-m", "streamrnn", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=_env(), timeout=timeout)


def _demo():
    x, sr = sf.read(str(demo_path()), dtype="float32")
    return x, sr


def make_corpus(root: Path) -> Path:
    x, sr = _demo()
    for rel, rate, ch, sub, secs, off in GOOD:
        seg = x[int(off * sr) % (len(x) - 3 * sr):][: int(secs * sr)]
        y = soxr.resample(seg, sr, rate).astype(np.float32) * 0.8
        if ch == 2:
            y = np.stack([y, 0.5 * y], axis=1)
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(p), y, rate, subtype=sub)
    (root / BROKEN[0]).write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunkjunkjunk")  # no fmt/data chunk
    (root / BROKEN[1]).write_bytes(b"")  # empty
    (root / "a" / "notes.txt").write_text("not audio: a folder input leaves it alone\n")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def run_w2(corpus, tmp_path_factory):
    """`batch --workers 2` over the corpus, every output kind."""
    out = tmp_path_factory.mktemp("out_w2")
    r = cli_run("batch", corpus, "--model", "vad", "--out", out, "--write", ALL, "--workers", "2", cwd=out)
    return r, out


def _stream_reference(path: Path, tmp: Path, via_cli: bool):
    """Frame predictions (T, O) float32 and end events of `stream --source file:PATH`."""
    out = tmp / (path.name + ".ref.jsonl")
    if via_cli:
        r = cli_run("stream", "--model", "vad", "--source", f"file:{path}", "--sink", f"jsonl:{out}", cwd=tmp)
        assert r.returncode == 0, r.stderr
    else:
        streamrnn.run_stream(StreamConfig(model="vad", source=f"file:{path}", sink=(f"jsonl:{out}",), realtime=False))
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    preds = [r for r in recs if r["type"] == "pred"]
    assert [r["frame"] for r in preds] == list(range(len(preds)))
    y = np.array([r["y"] for r in preds], np.float32)  # JSON holds repr of each float32: exact round trip
    ends = [(r["start_time"], r["time"], r["label"]) for r in recs if r["type"] == "event" and r["event"] == "end"]
    return y, ends


def _segments(out: Path, rel: str):
    return [json.loads(line) for line in (out / (rel + ".segments.jsonl")).read_text().splitlines()]


def test_corpus_outputs_equal_stream_and_speech_segments(corpus, run_w2, tmp_path):
    r, out = run_w2
    assert r.returncode == 1, r.stderr  # two files failed
    failed = [ln for ln in r.stderr.splitlines() if " FAILED " in ln]  # one line each: the file and the reason
    assert len(failed) == 2 and all(any(str(corpus / b) in ln for ln in failed) for b in BROKEN), r.stderr
    assert sum("] done " in ln for ln in r.stderr.splitlines()) == 28  # not a terminal: one plain line per file
    s = json.loads((out / "summary.json").read_text())
    assert (s["files"], s["done"], s["failed"], s["skipped"], s["interrupted"]) == (30, 28, 2, 0, False)
    assert sorted(f["file"] for f in s["failures"]) == sorted(BROKEN)
    audio = s["audio_hours"] * 3600
    assert audio == pytest.approx(sum(secs for *_, secs, _ in GOOD), abs=0.01 * len(GOOD))  # Vorbis pads a little
    assert s["cpu_seconds"] > 0 and s["real_time_factor"] == pytest.approx(s["cpu_seconds"] / audio)
    all_lines = [json.loads(ln) for ln in (out / "segments.jsonl").read_text().splitlines()]
    speech = 0.0
    for rel, rate, ch, *_ in GOOD:
        path = corpus / rel
        y_ref, ends = _stream_reference(path, tmp_path, via_cli=rel in CLI_CHECKED)
        y = np.load(out / (rel + ".npy"), allow_pickle=False)
        assert y.dtype == np.float32 and y.shape == y_ref.shape and np.array_equal(y, y_ref), rel  # bit for bit
        segs = _segments(out, rel)
        assert [(g["start"], g["end"], g["label"]) for g in segs] == ends, rel
        assert all(g["file"] == rel for g in segs)
        for g in segs:  # score: the mean probability over the segment's frames (10 ms each)
            k0, k1 = round(g["start"] * 100), round(g["end"] * 100)
            assert g["score"] == pytest.approx(float(y_ref[k0:k1, 0].mean()), abs=1e-6)
        plain = [{k: v for k, v in g.items() if k != "file"} for g in segs]
        assert streamrnn.speech_segments(path) == plain, rel
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
        assert streamrnn.speech_segments(x, sr) == plain, rel
        speech += sum(g["end"] - g["start"] for g in segs)
        # the other formats say the same segments
        assert [(a, b, lab) for a, b, lab in read_labels(out / (rel + ".labels.txt"))] == ends
        rows = list(csv.DictReader((out / (rel + ".csv")).open()))
        assert [(float(q["start"]), float(q["end"]), q["label"], float(q["score"])) for q in rows] == \
            [(g["start"], g["end"], g["label"], g["score"]) for g in segs]
        rttm = [ln.split() for ln in (out / (rel + ".rttm")).read_text().splitlines()]
        assert [(f[0], f[1], float(f[3]), float(f[4]), f[7]) for f in rttm] == \
            [("SPEAKER", rel, round(a, 3), round(b - a, 3), lab) for a, b, lab in ends]
        rec = json.loads((out / (rel + ".batch.json")).read_text())
        assert rec["rate"] == rate and rec["channels"] == ch and rec["outputs"] == ALL.split(",")
    assert s["speech_hours"] * 3600 == pytest.approx(speech, abs=1e-6)
    order = [i.rel for i in find_inputs([corpus]) if i.rel not in BROKEN]  # input order
    assert [ln["file"] for ln in all_lines] == [rel for rel in order for _ in _segments(out, rel)]
    for b in BROKEN:
        assert not list(out.glob(b + ".*"))


@pytest.fixture(scope="module")
def ray_address():
    ray = pytest.importorskip("ray")  # a declared test dependency (the `ray` extra); absent only off CI
    # a new private cluster ("local": not one Ray finds on the machine); its workers inherit this
    # process's environment (PYTHONPATH: the tree under test)
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _outputs(out: Path) -> dict:
    """Every output file's bytes, without the records (which hold CPU seconds) and the summary."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not p.name.endswith(".batch.json") and p.name != "summary.json"}


def test_ray_cluster_gives_the_same_outputs_as_workers(corpus, run_w2, ray_address, tmp_path):
    _, out_w2 = run_w2
    out = tmp_path / "out_ray"
    r = cli_run("batch", corpus, "--model", "vad", "--out", out, "--write", ALL, f"--ray={ray_address}", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert (s["engine"], s["done"], s["failed"]) == ("ray", 28, 2)
    ray_files, w2_files = _outputs(out), _outputs(out_w2)
    assert len(w2_files) == 28 * 5 + 1 and ray_files == w2_files


def _slow_corpus(root: Path, n=14, secs=8.0) -> Path:
    """Files long enough (44.1 kHz stereo: resampled) that a SIGINT lands mid-run."""
    x, sr = _demo()
    y = soxr.resample(x[: int(secs * sr)], sr, 44100).astype(np.float32)
    for i in range(n):
        p = root / f"g{i % 3}" / f"f{i:02d}.wav"
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(p), np.stack([np.roll(y, 1000 * i), y], axis=1), 44100, subtype="PCM_16")
    return root


def _state(out: Path, rels):
    """rel -> {output file: mtime_ns} for files with a record; asserts each is whole."""
    done = {}
    for rel in rels:
        rec = out / (rel + ".batch.json")
        outs = [out / (rel + OUTPUT_SUFFIXES[n]) for n in ("segments", "npy")]
        if rec.exists():
            assert all(o.is_file() for o in outs)
            np.load(outs[1], allow_pickle=False)  # a whole .npy
            done[rel] = {o.name: o.stat().st_mtime_ns for o in [*outs, rec]}
        else:  # not started or not finished: nothing of it is in place
            assert not any(o.exists() for o in outs), rel
    return done


@pytest.mark.parametrize("workers", [1, 2])
def test_sigint_then_rerun_skips_finished_files_and_does_the_rest(tmp_path, workers):
    corpus = _slow_corpus(tmp_path / "in", n=14 if workers == 1 else 24)
    rels = [p.relative_to(corpus).as_posix() for p in sorted(corpus.rglob("*.wav"))]
    out = tmp_path / "out"
    err = (tmp_path / "err1").open("w")
    p = subprocess.Popen([PY, "-m", "streamrnn", "batch", str(corpus), "--model", "vad", "--out", str(out),
                          "--write", "segments,npy", "--workers", str(workers)], stderr=err, env=_env(), cwd=tmp_path)
    t_end = time.monotonic() + 120
    while not list(out.rglob("*.batch.json")):
        assert p.poll() is None and time.monotonic() < t_end, (tmp_path / "err1").read_text()
        time.sleep(0.01)
    p.send_signal(signal.SIGINT)
    assert p.wait(60) == 130, (tmp_path / "err1").read_text()
    s1 = json.loads((out / "summary.json").read_text())
    first = _state(out, rels)
    assert s1["interrupted"] and s1["done"] == len(first) and 1 <= len(first) < len(rels)
    assert s1["not_run"] == len(rels) - len(first)
    assert not [q for q in out.rglob("*") if q.name.endswith(".tmp")]  # no temporary file left behind

    r = cli_run("batch", corpus, "--model", "vad", "--out", out, "--write", "segments,npy", "--workers", str(workers),
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    s2 = json.loads((out / "summary.json").read_text())
    assert (s2["skipped"], s2["done"], s2["failed"], s2["interrupted"]) == (len(first), len(rels) - len(first), 0, False)
    second = _state(out, rels)
    assert set(second) == set(rels)
    assert all(second[rel] == m for rel, m in first.items())  # finished files untouched (mtimes)

    if workers > 1:
        return  # the rest is the same for any number of workers
    # the same outputs as one uninterrupted run
    fresh = tmp_path / "fresh"
    run_batch([corpus], "vad", fresh, write=("segments", "npy"), workers=1)
    assert _outputs(out) == {k: v for k, v in _outputs(fresh).items()}

    # a third run skips everything; other settings or --force redo
    assert run_batch([corpus], "vad", out, write=("segments", "npy"), workers=1)["skipped"] == len(rels)
    assert run_batch([corpus], "vad", out, write=("segments",), workers=1)["skipped"] == len(rels)  # a subset
    s = run_batch([corpus], "vad", out, write=("segments", "npy"), workers=1, events=EventParams(min_on=0.3))
    assert (s["skipped"], s["done"]) == (0, len(rels))
    s = run_batch([corpus], "vad", out, write=("segments", "npy"), workers=1, events=EventParams(min_on=0.3),
                  force=True)
    assert (s["skipped"], s["done"]) == (0, len(rels))


def test_inputs_manifests_globs_and_collisions(corpus, tmp_path):
    rels = [i.rel for i in find_inputs([corpus])]
    assert sorted(rels) == sorted([g[0] for g in GOOD] + BROKEN)  # notes.txt left alone
    man = tmp_path / "m.jsonl"
    man.write_text("\n".join(json.dumps({"audio": os.path.relpath(corpus / g[0], tmp_path)}) for g in GOOD[:3]) + "\n")
    items = find_inputs([man])
    assert [i.path for i in items] == [str((corpus / g[0]).resolve()) for g in GOOD[:3]]
    glob_items = find_inputs([str(corpus / "a" / "**" / "*.ogg")])
    assert sorted(i.rel for i in glob_items) == sorted(os.path.relpath(g[0], "a") for g in GOOD if
                                                       g[0].startswith("a/") and g[0].endswith(".ogg"))
    # the same file twice is kept once; two files with the same relative path are refused
    assert len(find_inputs([corpus / "top_0.wav", corpus / "top_0.wav"])) == 1
    other = tmp_path / "other"
    other.mkdir()
    (other / "top_0.wav").write_bytes((corpus / "top_0.wav").read_bytes())
    with pytest.raises(streamrnn.ConfigError, match="would both write"):
        find_inputs([corpus / "top_0.wav", other / "top_0.wav"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"audio": "x.wav"}\n{"labels": "y"}\n')
    with pytest.raises(streamrnn.ConfigError, match=r"bad.jsonl:2"):
        find_inputs([bad])


def test_usage_errors_exit_2(corpus, tmp_path):
    run = CliRunner().invoke
    for args, msg in [
        ([str(tmp_path / "nothing"), "--model", "vad", "--out", str(tmp_path / "o")], "no such file"),
        ([str(corpus), "--model", "vad", "--out", str(tmp_path / "o"), "--write", "segments,mp4"], "choose from"),
        ([str(corpus), "--model", "vad", "--out", str(tmp_path / "o"), "--min-on", "-1"], "min_on"),
        ([str(corpus), "--model", "./missing.safetensors", "--out", str(tmp_path / "o")], "not found"),
        ([str(corpus), "--model", "vad", "--out", str(tmp_path / "o"), "--ray", str(corpus)], "--ray=ADDRESS"),
    ]:
        r = run(cli, ["batch", *args])
        assert r.exit_code == 2 and msg in r.output, (args, r.output)


def test_pad_and_parameter_mapping():
    assert segment_params() == EventParams()  # speech_segments' defaults are the stream command's events
    assert segment_params(0.7, None, 0.25, 0.3, 12.0) == EventParams(0.7, 0.55, 0.25, 0.3, 12.0)
    y = np.zeros((300, 1), np.float32)
    y[10:50] = 1.0
    y[60:100] = 0.5
    y[250:290] = 1.0
    ev = [{"event": "end", "label": "speech", "start_frame": a, "frame": b} for a, b in ((10, 50), (60, 100), (250, 290))]
    pred = Prediction(y, ev, 100.0, 2.95, ["speech"])
    assert segments_of(pred) == [{"start": 0.1, "end": 0.5, "label": "speech", "score": 1.0},
                                 {"start": 0.6, "end": 1.0, "label": "speech", "score": 0.5},
                                 {"start": 2.5, "end": 2.9, "label": "speech", "score": 1.0}]
    # pad 0.2 s: clipped at 0 and at the end (2.95 s); the 0.1 s gap is shared (they meet at 0.55)
    assert [(g["start"], g["end"]) for g in segments_of(pred, 0.2)] == [(0.0, 0.55), (0.55, 1.2), (2.3, 2.95)]


def test_bidirectional_model_runs_whole_files(corpus, tmp_path):
    from streamrnn.audio.stream import FeatureStream

    vad = streamrnn.load_model("vad")
    m = streamrnn.Model.random("gru", vad.input_size, 8, num_layers=1, output_size=1, activation="sigmoid",
                               bidirectional=True, frontend=vad.frontend, labels=["speech"], seed=3)
    path = tmp_path / "bi.safetensors"
    m.save(path)
    rels = ["top_0.wav", "a/speech_3.wav"]
    s = run_batch([corpus / r for r in rels], str(path), tmp_path / "out", write=("segments", "npy"), workers=1)
    assert (s["done"], s["failed"]) == (2, 0)
    for rel in rels:
        x, sr = sf.read(str(corpus / rel), dtype="float32", always_2d=True)
        ref = m.forward(FeatureStream(vad.frontend, sr).push(x))  # the whole file in one push
        y = np.load(tmp_path / "out" / (Path(rel).name + ".npy"))
        assert np.array_equal(y, ref)
        assert streamrnn.speech_segments(corpus / rel, model=m) == \
            [{k: v for k, v in g.items() if k != "file"} for g in _segments(tmp_path / "out", Path(rel).name)]


def test_progress_bar_on_a_terminal(corpus, tmp_path):
    """stderr on a terminal: a tqdm bar (files, audio hours, ETA) instead of a line per file."""
    import pty

    master, slave = pty.openpty()
    p = subprocess.Popen([PY, "-m", "streamrnn", "batch", str(corpus / "a" / "b"), "--model", "vad", "--out",
                          str(tmp_path / "o"), "--workers", "1"], stderr=slave, stdout=subprocess.DEVNULL,
                         env={**_env(), "COLUMNS": "120"}, cwd=tmp_path)
    os.close(slave)
    chunks = []
    while True:
        try:
            b = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not b:
            break
        chunks.append(b)
    assert p.wait(120) == 0
    text = b"".join(chunks).decode(errors="replace")
    n = len(list((corpus / "a" / "b").rglob("*.*")))
    assert f"{n}/{n}" in text and "of audio" in text and ("file/s" in text or "s/file" in text), text
    assert "] done " not in text  # no plain per-file lines


def _workers_of(pid: int) -> list[int]:
    """The pool's worker processes of the batch command ``pid`` (spawned children; not the resource tracker)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"spawn_main" in cmd and b"resource_tracker" not in cmd:
            out.append(int(d.name))
    return out


def test_a_killed_worker_does_not_stop_the_run(tmp_path):
    """A worker process dies mid-run (here: SIGKILL): the files in flight run again on fresh workers."""
    corpus = _slow_corpus(tmp_path / "in", n=20)
    out = tmp_path / "out"
    err = tmp_path / "err"
    p = subprocess.Popen([PY, "-m", "streamrnn", "batch", str(corpus), "--model", "vad", "--out", str(out),
                          "--write", "segments", "--workers", "2"], stderr=err.open("w"), env=_env(), cwd=tmp_path)
    t_end = time.monotonic() + 120
    while not list(out.rglob("*.batch.json")):
        assert p.poll() is None and time.monotonic() < t_end, err.read_text()
        time.sleep(0.01)
    victims = _workers_of(p.pid)
    assert len(victims) == 2, victims
    os.kill(victims[0], signal.SIGKILL)  # a worker process this test's command started
    assert p.wait(120) == 0, err.read_text()
    assert "a worker process died" in err.read_text()
    s = json.loads((out / "summary.json").read_text())
    assert (s["done"], s["failed"], s["interrupted"]) == (20, 0, False), s
    assert len(list(out.rglob("*.batch.json"))) == 20 and not [q for q in out.rglob("*.tmp")]


def test_speech_segments_refuses_bad_signals_clearly():
    x = np.zeros((2, 16000), np.float32)  # (channels, n): transposed by mistake
    with pytest.raises(streamrnn.InputError, match=r"\(n, channels\), not \(channels, n\)"):
        streamrnn.speech_segments(x, 16000)
    with pytest.raises(streamrnn.InputError, match="int32"):
        streamrnn.speech_segments(np.zeros(16000, np.int32), 16000)
    with pytest.raises(streamrnn.ConfigError, match="sample_rate is needed"):
        streamrnn.speech_segments(np.zeros(16000, np.float32))
    with pytest.raises(streamrnn.AudioError, match="no such audio file"):
        streamrnn.speech_segments("/nonexistent/x.wav")
    # int16 samples are scaled as the file source scales them: the same segments as float
    x, sr = _demo()
    q = np.round(x[: 4 * sr] * 32767).astype(np.int16)
    assert streamrnn.speech_segments(q, sr) == streamrnn.speech_segments(q.astype(np.float32) / 32768, sr)


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path):
    from streamrnn.runtime.batch import remove_stale_temps

    dead = subprocess.Popen([PY, "-c", "pass"])
    dead.wait()  # a process id that no longer runs
    stem = tmp_path / "x.wav"
    stale = tmp_path / f".x.wav.segments.jsonl.{dead.pid}.tmp"
    mine = tmp_path / f".x.wav.npy.{os.getpid()}.tmp"
    live = tmp_path / f".x.wav.csv.{os.getppid()}.tmp"
    other = tmp_path / f".y.wav.npy.{dead.pid}.tmp"
    for p in (stale, mine, live, other):
        p.write_text("partial")
    assert remove_stale_temps(stem) == 1
    assert not stale.exists() and mine.exists() and live.exists() and other.exists()

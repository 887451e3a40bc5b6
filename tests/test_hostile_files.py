"""Hostile files and configs (issue 13, items 8-18): every input is generated here, and the real CLI
runs as a subprocess under an address-space limit, so an attempted multi-gigabyte allocation fails
the test rather than the machine.  What a user must see: one line on stderr, exit status 2 (or a
warning and the work done), memory bounded, files with whole records only."""

from __future__ import annotations

import json
import os
import resource
import stat
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import streamrnn
from streamrnn.audio.frontend import LogMel, frontend_budget
from streamrnn.config import TrainConfig, load_config
from streamrnn.errors import ConfigError, TrainingError
from streamrnn.nn.modelfile import model_metadata

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
AS_LIMIT = 768 * 2**20  # bytes of address space for a CLI run: python + numpy + numba + the model fit easily
SR = 16000


def run_cli(*args, cwd, as_limit=AS_LIMIT, fsize=None, timeout=180):
    """``python -m streamrnn ARGS`` with RLIMIT_AS (and RLIMIT_FSIZE) set in the child."""
    def limits():
        resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([PY, "-m", "streamrnn", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limits, env=env)


def one_error_line(r, *needles):
    """Exit 2, no traceback, exactly one 'streamrnn: error:' line, containing every needle."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "MemoryError" not in r.stderr, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("streamrnn: error:")]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def warnings_of(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if " WARNING: " in ln and "compiling the Numba kernels" not in ln]


def noise(seconds, scale=0.05, seed=0, rate=SR):
    return (np.random.default_rng(seed).standard_normal(int(seconds * rate)) * scale).astype(np.float32)


def model_with_frontend(path, frontend: dict):
    """A small valid model whose 'frontend' metadata is ``frontend`` verbatim (not validated on save)."""
    from safetensors.numpy import save_file

    m = streamrnn.Model.random("gru", input_size=40, hidden_size=8, num_layers=1, output_size=1,
                               activation="sigmoid", labels=["speech"])
    meta = model_metadata(m)
    meta["frontend"] = frontend
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in m.tensors().items()}, str(path),
              metadata={"streamrnn": json.dumps(meta)})
    return path


# --- item 8: front-end settings inside the documented limits, but too costly --------------------------

HOSTILE_FRONTENDS = {
    "n_fft_65535_mels_4096": ({"type": "logmel", "n_fft": 65535, "win_length": 400, "n_mels": 4096}, "MiB of tables"),
    "n_fft_65536_mels_4096_hop_1": ({"type": "logmel", "n_fft": 65536, "win_length": 400, "hop_length": 1,
                                     "n_mels": 4096}, "MiB of tables"),
    "n_fft_65536_hop_1": ({"type": "logmel", "n_fft": 65536, "win_length": 400, "hop_length": 1, "n_mels": 40},
                          "operations per second of audio"),
    "rate_1e-300": ({"type": "logmel", "sample_rate": 1e-300, "fmax": None}, "outside the supported range"),
}


@pytest.mark.parametrize("name", list(HOSTILE_FRONTENDS))
@pytest.mark.parametrize("command", ["info", "stream"])
def test_model_file_with_a_costly_front_end_is_one_line_and_exit_2(tmp_path, name, command):
    fe, needle = HOSTILE_FRONTENDS[name]
    model_with_frontend(tmp_path / "m.safetensors", fe)
    sf.write(tmp_path / "a.wav", noise(1.0), SR)
    args = (["info", "m.safetensors"] if command == "info" else
            ["stream", "--model", "m.safetensors", "--source", "file:a.wav", "--sink", "null"])
    r = run_cli(*args, cwd=tmp_path, timeout=120)  # 1e-300 used to spin at 100 % CPU: the timeout catches it
    one_error_line(r, "m.safetensors", needle)


def test_front_ends_under_the_budget_still_load(tmp_path):
    """The budget refuses only what is costly: n_fft 65536 with 40 mels, hop 1 with n_fft 512, 384 kHz."""
    for fe in ({"type": "logmel", "n_fft": 65536, "win_length": 400, "n_mels": 40},
               {"type": "logmel", "n_fft": 512, "hop_length": 1, "n_mels": 40},
               {"type": "logmel", "sample_rate": 384000, "n_fft": 8192, "win_length": 8192, "hop_length": 3840}):
        model_with_frontend(tmp_path / "m.safetensors", fe)
        r = run_cli("info", "--json", "m.safetensors", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["frontend"] == fe


@pytest.mark.parametrize("kw", [dict(n_fft=16384, win_length=16384, n_mels=128),
                                dict(n_fft=3000, win_length=1500, n_mels=64),  # the DFT path
                                dict(n_fft=512, n_mels=40)])
def test_the_table_estimate_bounds_the_memory_really_allocated(kw):
    """tracemalloc (NumPy reports its buffers to it) measures the building of the tables: the
    budget's estimate must be an upper bound, and not a wild one (within 8x for large tables)."""
    est = frontend_budget(SR, kw["n_fft"], kw.get("win_length", 400), 160, kw["n_mels"])["table_bytes"]
    import streamrnn.audio.frontend as fmod

    fmod._TABLES.clear()  # tables are shared between equal settings: build afresh
    tracemalloc.start()
    LogMel(**kw)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak <= est, (peak, est)
    if est > 8 * 2**20:
        assert est < 8 * peak, (peak, est)


# --- item 9: training configs without size caps ------------------------------------------------------

@pytest.mark.parametrize("sets", [["model.hidden_size=1000000000"], ["tbptt.lanes=100000000"],
                                  ["tbptt.k1=2000000000", "tbptt.k2=2000000000"],
                                  ["model.num_layers=64", "model.hidden_size=65536"]])
def test_training_config_beyond_the_machine_is_refused_with_the_estimate(tmp_path, sets):
    args = ["train", ROOT / "configs" / "tiny.toml", "--out", tmp_path / "run"]
    for s in sets:
        args += ["--set", s]
    r = run_cli(*args, cwd=tmp_path)
    one_error_line(r, "this training run needs about", "more than")


def test_max_memory_option_refuses_a_small_run_and_allows_it_when_big_enough(tmp_path):
    cfg = ROOT / "configs" / "tiny.toml"
    r = run_cli("train", cfg, "--out", tmp_path / "a", "--max-memory", "64K", cwd=tmp_path)
    one_error_line(r, "needs about", "train.max_memory (--max-memory): 64.0 KiB")
    r = run_cli("train", cfg, "--out", tmp_path / "b", "--max-memory", "256M", "--set", "train.epochs=1",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run_cli("train", cfg, "--out", tmp_path / "c", "--max-memory", "lots", cwd=tmp_path)
    assert r.returncode == 2 and "is not a size" in r.stderr


def test_the_training_estimate_bounds_the_arrays_really_allocated(tmp_path):
    """tracemalloc over building a Trainer and two updates (the arrays the estimate counts);
    measured 16.3 MB against the estimate's 17.7 MB for this config."""
    from streamrnn.train.data import Sequence
    from streamrnn.train.lanes import training_bytes
    from streamrnn.train.trainer import Trainer

    rng = np.random.default_rng(0)
    seqs = [Sequence(rng.standard_normal((400, 20)).astype(np.float32),
                     (rng.random((400, 1)) > 0.5).astype(np.float32), np.ones(400, np.float32), f"s{i}")
            for i in range(8)]
    cfg = load_config(TrainConfig, overrides=["model.hidden_size=96", "model.num_layers=2", "model.cell=lstm",
                                              "tbptt.lanes=8", "tbptt.k1=50", "tbptt.k2=100", "data.loss=bce",
                                              "data.valid_fraction=0"], env={})
    Trainer(cfg, seqs, out_dir=None).fit(max_steps=2)  # imports, kernel cache loads: not the run's arrays
    tracemalloc.start()
    t = Trainer(cfg, seqs, out_dir=None)
    t.fit(max_steps=2)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    est = training_bytes(t.arch, 8, 50, 100, 3200, 1, np.float32)
    assert peak <= est + (seqs[0].x.nbytes * 8 * 3), (peak, est)  # + the prepared copies of the data
    assert est < 20 * peak, (peak, est)


# --- items 10 and 11: manifests and label files pointing anywhere ---------------------------------

def _vad_manifest(tmp_path, labels: str, audio="a.wav"):
    sf.write(tmp_path / "a.wav", noise(1.0), SR)
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio": audio, "labels": labels}) + "\n")
    return tmp_path / "m.jsonl"


def test_label_file_that_never_ends_is_refused_before_reading(tmp_path):
    _vad_manifest(tmp_path, "/dev/zero")
    r = run_cli("eval", "--model", "vad", "m.jsonl", cwd=tmp_path, timeout=120)
    one_error_line(r, "/dev/zero", "not a regular file")


def test_label_file_above_the_cap_is_refused(tmp_path):
    from streamrnn.audio.files import MAX_LABEL_BYTES

    with open(tmp_path / "big.txt", "wb") as f:  # sparse: no disk, but st_size above the cap
        f.truncate(MAX_LABEL_BYTES + 1)
    _vad_manifest(tmp_path, "big.txt")
    r = run_cli("eval", "--model", "vad", "m.jsonl", cwd=tmp_path)
    one_error_line(r, "big.txt", "above the limit of")


def test_errors_never_echo_a_foreign_file(tmp_path):
    secret = "root:SECRET-HASH-1234:0:0:root:/root:/bin/bash"
    (tmp_path / "passwd").write_text(secret + "\nmore\n")
    _vad_manifest(tmp_path, "passwd")
    r = run_cli("eval", "--model", "vad", "m.jsonl", cwd=tmp_path)
    line = one_error_line(r, "passwd:1")
    assert "SECRET" not in r.stderr and "root" not in line.split("passwd:1")[1]
    # a manifest that is itself a foreign file
    r = run_cli("eval", "--model", "vad", "passwd", cwd=tmp_path)
    one_error_line(r, "passwd:1")
    assert "SECRET" not in r.stderr
    # `info` on a text file: neither its bytes nor their value as an integer
    text = b"#!/bin/sh\necho SECRET-HASH-1234 and a long tail of text after it\n"
    (tmp_path / "script.safetensors").write_bytes(text)
    r = run_cli("info", "script.safetensors", cwd=tmp_path)
    line = one_error_line(r, "script.safetensors", "not a safetensors file")
    assert str(int.from_bytes(text[:8], "little")) not in line and "SECRET" not in r.stderr


@pytest.mark.parametrize("command", ["stream", "train"])
def test_config_file_that_never_ends_is_refused_before_reading(tmp_path, command):
    args = (["stream", "--model", "vad", "--source", "stdin", "--sink", "null", "--config", "/dev/zero"]
            if command == "stream" else ["train", "/dev/zero", "--out", tmp_path / "run"])
    one_error_line(run_cli(*args, cwd=tmp_path, timeout=60), "/dev/zero", "not a regular file")


def test_fifos_among_data_files_are_refused_not_read(tmp_path):
    """A FIFO never ends (and blocks on open): .txt corpora and .npz folders take regular files only."""
    from streamrnn.train.data import load_npz_folder
    from streamrnn.train.text import read_texts

    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.txt").write_text("hello")
    os.mkfifo(tmp_path / "t" / "b.txt")
    with pytest.raises(ConfigError, match="b.txt: text file is not a regular file"):
        read_texts(tmp_path / "t")
    (tmp_path / "n").mkdir()
    np.savez(tmp_path / "n" / "a.npz", x=np.zeros((4, 3), np.float32))
    os.mkfifo(tmp_path / "n" / "b.npz")
    with pytest.raises(TrainingError, match="b.npz: not a regular file"):
        load_npz_folder(tmp_path / "n")


def test_manifest_paths_are_relative_to_the_manifest_folder(tmp_path):
    (tmp_path / "data").mkdir()
    sf.write(tmp_path / "data" / "a.wav", noise(1.0), SR)
    (tmp_path / "data" / "a.txt").write_text("0.2\t0.5\tspeech\n")
    (tmp_path / "data" / "m.jsonl").write_text(json.dumps({"audio": "a.wav", "labels": "a.txt"}) + "\n")
    r = run_cli("eval", "--model", "vad", "--json", "data/m.jsonl", cwd=tmp_path)  # run from elsewhere
    assert r.returncode == 0, r.stderr


# --- item 12: bundled names and files --------------------------------------------------------------

def test_a_file_in_the_working_directory_never_shadows_a_bundled_name(tmp_path):
    (tmp_path / "vad").write_bytes(b"not a model at all")
    r = run_cli("info", "--json", "vad", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert Path(json.loads(r.stdout)["path"]).resolve() == (ROOT / "streamrnn" / "models" / "vad.safetensors")
    one_error_line(run_cli("info", "./vad", cwd=tmp_path), "vad", "not a safetensors file")
    one_error_line(run_cli("info", "nosuchmodel", cwd=tmp_path), "no bundled model named 'nosuchmodel'",
                   "./nosuchmodel")
    r = run_cli("stream", "--help", cwd=tmp_path)
    assert "bare word" in r.stdout and "./vad" in r.stdout


# --- item 13: one reader for truncated, damaged and empty audio -----------------------------------

def _cut(tmp_path, ext, subtype, seconds=2.0, keep=0.5):
    x = noise(seconds, seed=1)
    good = tmp_path / f"good.{ext}"
    sf.write(good, x, SR, subtype=subtype)
    data = good.read_bytes()
    bad = tmp_path / f"cut.{ext}"
    bad.write_bytes(data[: int(len(data) * keep)])
    return good, bad


@pytest.mark.parametrize("ext,subtype", [("flac", "PCM_16"), ("wav", "PCM_16")])
def test_truncated_audio_is_read_up_to_the_cut_by_every_entry_point(tmp_path, ext, subtype):
    good, bad = _cut(tmp_path, ext, subtype)
    (tmp_path / "cut.txt").write_text("0.1\t0.3\tspeech\n")
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio": bad.name, "labels": "cut.txt"}) + "\n")
    runs = {
        "stream": run_cli("stream", "--model", "vad", "--source", f"file:{bad.name}", "--sink", "jsonl:s.jsonl",
                          "--no-events", cwd=tmp_path),
        "features": run_cli("features", "--source", f"file:{bad.name}", "--sink", "jsonl:f.jsonl", cwd=tmp_path),
        "eval": run_cli("eval", "--model", "vad", "--json", "m.jsonl", cwd=tmp_path),
    }
    durations = set()
    for name, r in runs.items():
        assert r.returncode == 0, (name, r.stderr[-2000:])
        w = [ln for ln in warnings_of(r.stderr) if "truncated audio file" in ln]
        assert len(w) == 1 and bad.name in w[0], (name, r.stderr)
        durations.add(w[0].split("read ")[1].split(" s of")[0])
        assert "of the 2.00 s its header declares" in w[0]
    assert len(durations) == 1  # the same audio read everywhere
    read_s = float(durations.pop())
    assert 0.3 < read_s < 1.1
    # the features are those of the intact file's first samples (libsndfile decodes the reference)
    x_ref, _ = sf.read(good, dtype="float32")
    n = int(round(read_s * SR))
    recs = [json.loads(ln) for ln in (tmp_path / "f.jsonl").read_text().splitlines()]
    rows = np.array([r["x"] for r in recs if r["type"] == "features"], np.float32)  # docs/formats.md
    assert abs(len(rows) - LogMel().n_frames_for(n)) <= 2  # read_s is rounded to 10 ms in the message
    np.testing.assert_allclose(rows, LogMel().compute(x_ref)[:len(rows)], rtol=1e-6, atol=1e-6)


def test_damaged_and_empty_audio_are_one_line_and_exit_2(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), SR)
    (tmp_path / "junk.flac").write_bytes(b"fLaC" + os.urandom(2000))
    (tmp_path / "zero.wav").write_bytes(b"")
    for name, needle in [("empty.wav", "holds no samples"), ("junk.flac", "cannot read audio"),
                         ("zero.wav", "cannot read audio")]:
        for cmd in (["stream", "--model", "vad"], ["features"]):
            r = run_cli(*cmd, "--source", f"file:{name}", "--sink", "null", cwd=tmp_path)
            one_error_line(r, name, needle)


# --- items 14 and 15: NaN in a float file, float audio at int16 scale -----------------------------

def _preds(path):
    rows = [json.loads(ln) for ln in Path(path).read_text().splitlines()]
    return [r for r in rows if r.get("type") == "pred"]


def test_nan_in_a_float_file_is_zeroed_counted_and_located_and_no_block_is_lost(tmp_path):
    x = noise(4.0, seed=2)
    x[int(1.5 * SR)] = np.nan
    sf.write(tmp_path / "nan.wav", x, SR, subtype="FLOAT")
    clean = x.copy()
    clean[int(1.5 * SR)] = 0.0
    sf.write(tmp_path / "clean.wav", clean, SR, subtype="FLOAT")
    r = run_cli("stream", "--model", "vad", "--source", "file:nan.wav", "--sink", "jsonl:nan.jsonl", "--no-events",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    w = warnings_of(r.stderr)
    assert len(w) == 1 and "nan.wav: 1 NaN/Inf sample(s) at 1.500 s (sample 24000) replaced by 0" in w[0], r.stderr
    assert "non_finite 1" in r.stderr.replace("  ", " ") or "non_finite=1" in r.stderr, r.stderr
    r2 = run_cli("stream", "--model", "vad", "--source", "file:clean.wav", "--sink", "jsonl:clean.jsonl",
                 "--no-events", cwd=tmp_path)
    assert r2.returncode == 0
    a, b = _preds(tmp_path / "nan.jsonl"), _preds(tmp_path / "clean.jsonl")
    assert [p["frame"] for p in a] == [p["frame"] for p in b] and len(a) > 390  # 4 s at 100 frames/s
    assert [p["y"] for p in a] == [p["y"] for p in b]  # as if the sample were 0: nothing dropped
    # training refuses it by default, naming the position and the option that replaces them
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio": "nan.wav"}) + "\n")
    r = run_cli("eval", "--model", "vad", "m.jsonl", cwd=tmp_path)
    one_error_line(r, "nan.wav", "at 1.500 s", "--set data.nonfinite=zero")


def test_float_audio_at_int16_scale_is_warned_once_and_counted(tmp_path, caplog):
    from streamrnn.audio.stream import FeatureStream

    x = noise(3.0, scale=0.01, seed=3) * 32768  # quiet noise, as int16 numbers in a float file
    fs = FeatureStream(LogMel(), SR)
    for i in range(0, len(x), 1600):
        fs.push(x[i:i + 1600])
    assert fs.n_out_of_range == 30  # every 100 ms block
    w = [r for r in caplog.records if "far outside [-1, 1]" in r.getMessage()]
    assert len(w) == 1
    fs2 = FeatureStream(LogMel(), SR)
    fs2.push(np.clip(x / 32768 * 3.0, -1.5, 1.5))  # loud, clipped at 1.5: an accident, not a scale error
    assert fs2.n_out_of_range == 0
    sf.write(tmp_path / "loud.wav", x, SR, subtype="FLOAT")
    r = run_cli("stream", "--model", "vad", "--source", "file:loud.wav", "--sink", "null", cwd=tmp_path)
    assert r.returncode == 0
    assert sum("far outside [-1, 1]" in ln for ln in warnings_of(r.stderr)) == 1, r.stderr


# --- item 16: checkpoints carry a checksum ---------------------------------------------------------

@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    r = run_cli("train", ROOT / "configs" / "tiny.toml", "--out", d / "run", "--set", "train.epochs=1", cwd=d)
    assert r.returncode == 0, r.stderr
    return d


def _damage(run, how):
    import shutil

    from streamrnn.train.trainer import read_checkpoint, write_checkpoint

    p = run / "run" / "checkpoint.safetensors"
    q = run / f"run_{how}"
    if q.exists():
        shutil.rmtree(q)
    shutil.copytree(run / "run", q)
    p = q / "checkpoint.safetensors"
    data = bytearray(p.read_bytes())
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    if how == "bit":
        start, _ = header["theta"]["data_offsets"]
        data[8 + n + start + 5] ^= 0x10  # one bit of one parameter
    elif how == "json":
        i = data.index(b'\\"fingerprint\\"', 8, 8 + n)
        data[i + 3] = ord("#")  # one broken character in the checkpoint's JSON metadata
    p.write_bytes(bytes(data))
    if how == "nan":
        arrays, meta = read_checkpoint(p)
        arrays["theta"][3] = np.nan
        write_checkpoint(p, arrays, meta)  # a valid checksum over NaN parameters
    return q


@pytest.mark.parametrize("how,needle", [("bit", "checksum does not match"), ("json", "checksum does not match"),
                                        ("nan", "hold NaN/Inf")])
def test_damaged_checkpoint_is_one_clear_line_on_resume(trained_run, how, needle):
    q = _damage(trained_run, how)
    r = run_cli("train", ROOT / "configs" / "tiny.toml", "--out", q, "--resume", "--set", "train.epochs=2",
                cwd=trained_run)
    line = one_error_line(r, "checkpoint.safetensors", needle)
    assert "diverged" not in line


def test_intact_checkpoint_resumes(trained_run):
    r = run_cli("train", ROOT / "configs" / "tiny.toml", "--out", _damage(trained_run, "none"), "--resume",
                "--set", "train.epochs=2", cwd=trained_run)
    assert r.returncode == 0, r.stderr


# --- item 17: CurveZMQ key files ------------------------------------------------------------------

def test_secret_key_readable_by_others_is_refused_unless_allowed(tmp_path):
    r = run_cli("keygen", tmp_path / "k", cwd=tmp_path)
    assert r.returncode == 0
    sec, pub = tmp_path / "k" / "streamrnn.key_secret", tmp_path / "k" / "streamrnn.key"
    assert stat.S_IMODE(sec.stat().st_mode) == 0o600
    args = ["listen", "zmq+sub://127.0.0.1:1", "--duration", "0.1", "--curve-secret-key", sec,
            "--curve-server-key", pub]
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    for mode in (0o644, 0o640, 0o604):
        sec.chmod(mode)
        one_error_line(run_cli(*args, cwd=tmp_path), str(sec), f"mode {mode:04o}", "--curve-allow-insecure-key")
    assert run_cli(*args, "--curve-allow-insecure-key", cwd=tmp_path).returncode == 0
    # the same rule for the stream command
    r = run_cli("stream", "--model", "vad", "--source", "zmq+pull://127.0.0.1:1", "--sink", "null",
                "--curve-secret-key", sec, "--duration", "0.1", cwd=tmp_path)
    one_error_line(r, str(sec), "mode 0604")


@pytest.mark.parametrize("damage", ["short", "not_z85", "foreign_pair", "binary", "no_keys", "bare_key_line"])
def test_malformed_secret_key_is_one_line_naming_the_file(tmp_path, damage):
    assert run_cli("keygen", tmp_path / "k", cwd=tmp_path).returncode == 0
    assert run_cli("keygen", tmp_path / "k2", cwd=tmp_path).returncode == 0
    sec = tmp_path / "k" / "streamrnn.key_secret"
    text = sec.read_text()
    other = (tmp_path / "k2" / "streamrnn.key_secret").read_text()
    line = [ln for ln in text.splitlines() if "secret-key" in ln][0]
    key = line.split('"')[1]
    if damage == "short":
        text = text.replace(key, key[:30])
    elif damage == "not_z85":
        text = text.replace(key, "\\" * 40)
    elif damage == "foreign_pair":
        text = text.replace(line, [ln for ln in other.splitlines() if "secret-key" in ln][0])
    elif damage == "bare_key_line":
        text = "public-key\n"  # a key name with no value (pyzmq's parser raised IndexError)
    elif damage == "binary":
        text = None
        sec.write_bytes(os.urandom(300))
    else:
        text = "# nothing here\n"
    if text is not None:
        sec.write_text(text)
    sec.chmod(0o600)
    r = run_cli("listen", "zmq+sub://127.0.0.1:1", "--duration", "0.1", "--curve-secret-key", sec,
                "--curve-server-key", tmp_path / "k" / "streamrnn.key", cwd=tmp_path)
    one_error_line(r, str(sec))


# --- item 18: disk full leaves whole records -------------------------------------------------------

@pytest.mark.parametrize("sink", ["jsonl", "csv"])
def test_disk_full_leaves_only_whole_records(tmp_path, sink):
    """RLIMIT_FSIZE makes every write past 64 KiB fail (EFBIG) in the child, as a full disk does;
    the sink's file must end with a complete line, whatever the failing write left."""
    sf.write(tmp_path / "a.wav", noise(20.0), SR)
    out = tmp_path / f"out.{sink}"
    limit = 64 * 1024 + 123  # not on a line boundary
    r = run_cli("stream", "--model", "vad", "--source", "file:a.wav", "--sink", f"{sink}:{out.name}", "--no-events",
                cwd=tmp_path, fsize=limit)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "every sink failed" in r.stderr and "File too large" in r.stderr
    data = out.read_bytes()
    assert 0 < len(data) <= limit and data.endswith(b"\n")
    lines = data.decode("utf-8").splitlines()
    if sink == "jsonl":
        assert all(isinstance(json.loads(ln), dict) for ln in lines)
    else:
        import csv

        rows = list(csv.reader(lines))
        assert len({len(row) for row in rows}) == 1 and len(rows) > 100

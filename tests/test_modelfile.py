"""Model files: round trip, PyTorch names, and one clear error for every defect."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file

import streamrnn
from conftest import frames, small_model
from streamrnn.nn.modelfile import model_metadata


def write(path, tensors, meta):
    md = {"streamrnn": meta if isinstance(meta, str) else json.dumps(meta)} if meta is not None else None
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=md)
    return path


@pytest.fixture
def good(tmp_path):
    m = small_model("gru", layers=2, norm=True)
    m.labels = ["a", "b", "c"]
    return m.tensors(), model_metadata(m)


def test_round_trip_keeps_weights_and_metadata(tmp_path, cell):
    m = small_model(cell, layers=3, norm=True)
    m.labels, m.name = ["x", "y", "z"], "demo"
    path = tmp_path / "m.safetensors"
    m.save(path)
    m2 = streamrnn.load_model(path)
    assert (m2.cell, m2.num_layers, m2.labels, m2.name, m2.activation) == (cell, 3, ["x", "y", "z"], "demo", "sigmoid")
    for k, v in m.tensors().items():
        np.testing.assert_array_equal(m2.tensors()[k], v)
    x = frames(30)
    np.testing.assert_array_equal(m2.forward(x), m.forward(x))
    assert not list(tmp_path.glob("*.tmp"))  # written atomically, no temp file left


def test_tensor_names_are_pytorch_state_dict_names(tmp_path):
    path = tmp_path / "m.safetensors"
    small_model("lstm", layers=2).save(path)
    from safetensors import safe_open
    with safe_open(str(path), "np") as f:
        names = set(f.keys())
        meta = json.loads(f.metadata()["streamrnn"])
    assert names == {f"rnn.{w}_l{k}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh") for k in (0, 1)} | {"head.weight", "head.bias"}
    assert meta["format"] == 1 and meta["cell"] == "lstm" and meta["head"]["activation"] == "sigmoid"
    assert meta["frontend"] is None


def test_model_without_head(tmp_path):
    m = small_model("rnn_tanh", head=False)
    m.save(tmp_path / "m.safetensors")
    m2 = streamrnn.load_model(tmp_path / "m.safetensors")
    assert m2.output_size == 7 and m2.activation is None


def edit(good, drop=(), add=None, meta_update=None, reshape=None, dtype=None):
    tensors, meta = dict(good[0]), dict(good[1])
    for k in drop:
        del tensors[k]
    tensors.update(add or {})
    if reshape:
        tensors[reshape[0]] = np.zeros(reshape[1], np.float32)
    if dtype:
        tensors[dtype[0]] = tensors[dtype[0]].astype(dtype[1])
    meta.update(meta_update or {})
    return tensors, meta


@pytest.mark.parametrize("change, match", [
    (dict(drop=["rnn.bias_hh_l1"]), "missing tensors for a 2-layer gru: rnn.bias_hh_l1"),
    (dict(add={"rnn.weight_ih_l2": np.zeros((21, 7), np.float32)}), "unexpected tensors: rnn.weight_ih_l2"),
    (dict(reshape=("rnn.weight_hh_l0", (21, 6))), r"'rnn.weight_hh_l0' has shape \(21, 6\), expected \(21, 7\)"),
    (dict(dtype=("head.bias", np.int32)), "'head.bias' has dtype I32, expected F32"),
    (dict(meta_update={"cell": "transformer"}), "unknown cell 'transformer'"),
    (dict(meta_update={"format": 3}), "model format 3 is not supported"),
    (dict(meta_update={"format": True}), "model format True is not supported"),
    (dict(meta_update={"bidirectional": True}), "'bidirectional' needs model format 2, the file says format 1"),
    (dict(meta_update={"format": 2, "bidirectional": "yes"}), "'bidirectional' must be true or false"),
    (dict(meta_update={"format": 2, "delay": -1}), r"'delay' must be an integer in \[0, 65536\], got -1"),
    (dict(meta_update={"format": 2, "bidirectional": True}), "missing tensors.*rnn.weight_ih_l0_reverse"),
    (dict(add={"rnn.weight_ih_l0_reverse": np.zeros((21, 5), np.float32)}),
     "unexpected tensors: rnn.weight_ih_l0_reverse; a PyTorch bidirectional=True model needs metadata"),
    (dict(meta_update={"hidden_size": 0}), r"'hidden_size' must be an integer in \[1, 65536\], got 0"),
    (dict(meta_update={"num_layers": "2"}), "'num_layers' must be an integer"),
    (dict(meta_update={"head": {"activation": "tanh"}}), "unknown head activation 'tanh'"),
    (dict(meta_update={"head": {"activation": "sigmoid", "labels": ["a"]}}), "3 outputs but 1 labels"),
    (dict(meta_update={"head": None}), "unexpected tensors: head.bias, head.weight"),
    (dict(add={"norm.std": np.zeros(5, np.float32)}), "'norm.std' must be > 0"),
    (dict(add={"head.bias": np.array([0, np.nan, 0], np.float32)}), "'head.bias' contains NaN or Inf"),
    (dict(drop=["norm.std"]), "missing tensors.*norm.std"),
])
def test_inconsistent_files_give_one_clear_error(tmp_path, good, change, match):
    tensors, meta = edit(good, **change)
    path = write(tmp_path / "bad.safetensors", tensors, meta)
    with pytest.raises(streamrnn.ModelFileError, match=match):
        streamrnn.load_model(path)


def test_bad_json_and_missing_metadata(tmp_path, good):
    with pytest.raises(streamrnn.ModelFileError, match="not valid JSON"):
        streamrnn.load_model(write(tmp_path / "a.safetensors", good[0], "{not json"))
    with pytest.raises(streamrnn.ModelFileError, match="no 'streamrnn' metadata entry"):
        streamrnn.load_model(write(tmp_path / "b.safetensors", good[0], None))


def test_truncated_and_foreign_files(tmp_path, good):
    path = write(tmp_path / "m.safetensors", *good)
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 10])
    with pytest.raises(streamrnn.ModelFileError, match="truncated"):
        streamrnn.load_model(tmp_path / "cut.safetensors")
    (tmp_path / "head.safetensors").write_bytes(data[:20])
    with pytest.raises(streamrnn.ModelFileError, match="not a safetensors file or truncated"):
        streamrnn.load_model(tmp_path / "head.safetensors")
    (tmp_path / "tiny").write_bytes(b"abc")
    with pytest.raises(streamrnn.ModelFileError, match="shorter than the 8-byte header"):
        streamrnn.load_model(tmp_path / "tiny")
    (tmp_path / "x.pt").write_bytes(struct.pack("<Q", 5) + b"\x80\x04K\x01.")  # a pickle is never executed
    with pytest.raises(streamrnn.ModelFileError, match="header is not JSON"):
        streamrnn.load_model(tmp_path / "x.pt")


def test_missing_file_unknown_bundled_name_and_size_cap(tmp_path, good):
    with pytest.raises(streamrnn.ModelFileError, match="model file not found"):
        streamrnn.load_model(tmp_path / "nope.safetensors")
    with pytest.raises(streamrnn.ModelFileError, match="no bundled model named .no-such-model. .bundled: vad"):
        streamrnn.load_model("no-such-model")
    path = write(tmp_path / "m.safetensors", *good)
    with pytest.raises(streamrnn.ModelFileError, match="above the limit of 100 bytes"):
        streamrnn.load_model(path, max_bytes=100)


def test_bidirectional_round_trip_is_format_2_with_pytorch_names(tmp_path):
    m = streamrnn.Model.random("gru", 5, 7, num_layers=2, output_size=3, activation="sigmoid",
                               bidirectional=True, seed=3)
    path = tmp_path / "bi.safetensors"
    m.save(path)
    from safetensors import safe_open
    with safe_open(str(path), "np") as f:
        names = set(f.keys())
        meta = json.loads(f.metadata()["streamrnn"])
        head_shape = f.get_tensor("head.weight").shape
    assert meta["format"] == 2 and meta["bidirectional"] is True and "delay" not in meta
    assert {f"rnn.weight_hh_l{k}_reverse" for k in (0, 1)} <= names and len(names) == 2 * 2 * 4 + 2
    assert head_shape == (3, 14)  # head input 2H
    m2 = streamrnn.load_model(path)
    assert m2.bidirectional and m2.delay == 0
    x = frames(40)
    np.testing.assert_array_equal(m2.forward(x), m.forward(x))
    # a plain model is still written as format 1, readable by format-1 readers
    small_model("gru").save(tmp_path / "uni.safetensors")
    with safe_open(str(tmp_path / "uni.safetensors"), "np") as f:
        assert json.loads(f.metadata()["streamrnn"])["format"] == 1


def test_delay_round_trip(tmp_path):
    m = small_model("lstm")
    m = streamrnn.Model(m.arch, m.tensors(), delay=7)
    m.save(tmp_path / "d.safetensors")
    m2 = streamrnn.load_model(tmp_path / "d.safetensors")
    assert m2.delay == 7 and model_metadata(m2)["format"] == 2 and model_metadata(m2)["delay"] == 7
    assert "delay=7" in repr(m2)


def test_format_1_reader_refuses_format_2_files_clearly(tmp_path, monkeypatch):
    """A reader of format 1 only (streamrnn before bidirectional/delay) refuses the new files with its
    one clear message instead of misreading them."""
    import streamrnn.nn.modelfile as mf

    m = streamrnn.Model.random("lstm", 5, 7, output_size=3, bidirectional=True)
    m.save(tmp_path / "bi.safetensors")
    monkeypatch.setattr(mf, "READ_FORMATS", (1,))
    with pytest.raises(streamrnn.ModelFileError, match=r"model format 2 is not supported \(this streamrnn reads "
                                                       r"formats 1\)"):
        streamrnn.load_model(tmp_path / "bi.safetensors")

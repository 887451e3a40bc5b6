"""Config loading: defaults, TOML, environment and --set layers; errors name the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from streamrnn.config import TrainConfig, load_config, to_dict
from streamrnn.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_match_the_documented_train_toml():
    """configs/train.toml spells out every default: loading it changes nothing."""
    assert load_config(TrainConfig, ROOT / "configs" / "train.toml", env={}) == TrainConfig()


def test_every_field_is_in_train_toml():
    text = (ROOT / "configs" / "train.toml").read_text()
    for sec in dataclasses.fields(TrainConfig):
        assert f"[{sec.name}]" in text
        for f in dataclasses.fields(getattr(TrainConfig(), sec.name)):
            assert f"\n{f.name} = " in text, f"{sec.name}.{f.name} missing from configs/train.toml"


def test_tiny_config_loads():
    cfg = load_config(TrainConfig, ROOT / "configs" / "tiny.toml", env={})
    assert cfg.model.hidden_size == 8 and cfg.tbptt.k2 == 24


def test_layers_in_order(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[optim]\nlr = 0.5\nname = 'sgd'\n[tbptt]\nk1 = 7\nk2 = 9\n")
    env = {"STREAMRNN_TRAIN__OPTIM__LR": "0.25", "STREAMRNN_TRAIN__TBPTT__LANES": "5", "OTHER": "x"}
    cfg = load_config(TrainConfig, p, overrides=["tbptt.lanes=6"], env=env)
    assert cfg.optim.name == "sgd"  # TOML over default
    assert cfg.optim.lr == 0.25  # env over TOML
    assert cfg.tbptt.lanes == 6  # --set over env
    assert (cfg.tbptt.k1, cfg.tbptt.k2) == (7, 9)


def test_set_converts_types():
    cfg = load_config(TrainConfig, overrides=["train.epochs=3", "optim.lr=1e-2", "model.norm=false",
                                              "data.classes=[\"a\", \"b\"]", "model.cell=lstm",
                                              "tbptt.jitter=0.5"], env={})
    assert cfg.train.epochs == 3 and cfg.optim.lr == 0.01 and cfg.model.norm is False
    assert cfg.data.classes == ("a", "b") and cfg.model.cell == "lstm" and cfg.tbptt.jitter == 0.5
    assert load_config(TrainConfig, overrides=["data.classes=x,y"], env={}).data.classes == ("x", "y")


@pytest.mark.parametrize("toml,match", [
    ("[optim]\nlrate = 1\n", "'optim.lrate'"),
    ("[optimizer]\nlr = 1\n", "'optimizer'"),
    ("[tbptt]\nk1 = 'ten'\n", "tbptt.k1: expected an integer"),
    ("[tbptt]\nk1 = 10\nk2 = 5\n", "tbptt.k2 must be >= tbptt.k1"),
    ("[model]\ncell = 'transformer'\n", "model.cell must be one of"),
    ("[model]\nnorm = 3\n", "model.norm: expected true or false"),
    ("[optim\n", "invalid TOML"),
])
def test_bad_files_name_the_key(tmp_path, toml, match):
    p = tmp_path / "bad.toml"
    p.write_text(toml)
    with pytest.raises(ConfigError, match=match):
        load_config(TrainConfig, p, env={})


def test_bad_overrides_and_env(tmp_path):
    with pytest.raises(ConfigError, match="'optim.lrr'"):
        load_config(TrainConfig, overrides=["optim.lrr=1"], env={})
    with pytest.raises(ConfigError, match="key=value"):
        load_config(TrainConfig, overrides=["optim.lr"], env={})
    with pytest.raises(ConfigError, match="'optim' is a section"):
        load_config(TrainConfig, overrides=["optim=3"], env={})
    with pytest.raises(ConfigError, match="'tbptt.kk'"):
        load_config(TrainConfig, env={"STREAMRNN_TRAIN__TBPTT__KK": "3"})
    with pytest.raises(ConfigError, match="no such config"):
        load_config(TrainConfig, tmp_path / "missing.toml", env={})


def test_to_dict_round_trips():
    cfg = load_config(TrainConfig, overrides=["data.classes=[\"a\"]"], env={})
    from streamrnn.config import from_dict

    assert from_dict(TrainConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_both_loaders_refuse_non_finite_numbers_with_the_same_conversion(bad):
    """Training and streaming configs share one value conversion (config.convert)."""
    from streamrnn.runtime.pipeline import load_stream_config

    with pytest.raises(ConfigError, match=r"optim\.lr: expected a finite number"):
        load_config(TrainConfig, overrides=[f"optim.lr={bad}"], env={})
    with pytest.raises(ConfigError, match=r"environment STREAMRNN_MIN_ON: min_on: expected a finite number"):
        load_stream_config(env={"STREAMRNN_MIN_ON": bad})
    with pytest.raises(ConfigError, match=r"option --on-threshold: on_threshold: expected a finite number"):
        load_stream_config(env={}, overrides={"on_threshold": float(bad)})

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
    ("[data]\noffset_weight = -1.0\n", r"data.offset_weight must be in \[0, 1000\], got -1.0"),
    ("[data]\noffset_frames = -2\n", r"data.offset_frames must be in \[0, 65536\] frames, got -2"),
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
    from streamrnn.config import load_stream_config

    with pytest.raises(ConfigError, match=r"optim\.lr: expected a finite number"):
        load_config(TrainConfig, overrides=[f"optim.lr={bad}"], env={})
    with pytest.raises(ConfigError, match=r"environment STREAMRNN_EVENTS__MIN_ON: events\.min_on: expected a finite number"):
        load_stream_config(env={"STREAMRNN_EVENTS__MIN_ON": bad})
    with pytest.raises(ConfigError, match=r"option --on-threshold: events\.on_threshold: expected a finite number"):
        load_stream_config(env={}, overrides={"events.on_threshold": float(bad)})


def test_config_knows_every_cell_the_kernels_run():
    """config.CELLS (config sits below nn, so it cannot import the table) names exactly nn's cells."""
    from streamrnn.config import CELLS
    from streamrnn.nn.cells import CELL_CODES

    assert set(CELLS) == set(CELL_CODES)


def test_stream_and_training_configs_share_one_loader_and_one_naming_scheme(tmp_path):
    """StreamConfig goes through load_config like TrainConfig: TOML tables, then ENV_PREFIX + KEY__SUBKEY,
    then --set strings, then command-line options."""
    from streamrnn.config import EventParams, StreamConfig, env_name, load_stream_config

    assert env_name(StreamConfig, "events.min_on") == "STREAMRNN_EVENTS__MIN_ON"
    assert env_name(TrainConfig, "optim.lr") == "STREAMRNN_TRAIN__OPTIM__LR"
    toml = tmp_path / "s.toml"
    toml.write_text('rate = 8000\n[events]\nmin_on = 0.3\nmax_segment = 5.0\n')
    c = load_config(StreamConfig, toml, ["events.max_segment=7"], env={"STREAMRNN_EVENTS__MIN_ON": "0.4"},
                    options={"events.on_threshold": 0.6, "rate": None})
    assert (c.rate, c.events) == (8000, EventParams(on_threshold=0.6, min_on=0.4, max_segment=7.0))
    assert load_stream_config(toml, env={}, overrides=["rate=22050"]).rate == 22050
    toml.write_text("min_on = 0.3\n")  # the event keys moved into [events]: the error says where
    with pytest.raises(ConfigError, match=r"unknown key 'min_on'.*did you mean 'events\.min_on'"):
        load_stream_config(toml, env={})


def test_an_unknown_streamrnn_variable_is_warned_about_with_the_closest_name(caplog):
    from streamrnn.config import load_stream_config

    with caplog.at_level("WARNING", logger="streamrnn.config"):
        cfg = load_stream_config(env={"STREAMRNN_MINON": "0.5", "STREAMRNN_RAET": "8000",
                                      "STREAMRNN_TRAIN__OPTIM__LR": "0.1", "STREAMRNN_REQUIRE_AUDIO": "1",
                                      "OTHER_MINON": "1"})
    msgs = [r.getMessage() for r in caplog.records]
    assert cfg.events.min_on == 0.1 and cfg.rate == 16000  # ignored, not guessed
    assert any("STREAMRNN_MINON" in m and "did you mean STREAMRNN_EVENTS__MIN_ON" in m for m in msgs)
    assert any("STREAMRNN_RAET" in m and "did you mean STREAMRNN_RATE" in m for m in msgs)
    assert len(msgs) == 2  # a training variable, a test-harness switch and other programs' names are fine
    caplog.clear()
    with caplog.at_level("WARNING", logger="streamrnn.config"):
        load_config(TrainConfig, env={"STREAMRNN_EVENTS__MINON": "1"})
    assert "did you mean STREAMRNN_EVENTS__MIN_ON" in caplog.text


def test_event_defaults_are_written_once():
    """The CLI, StreamConfig and EventDetector all take the [events] defaults from EventParams."""
    import inspect

    from streamrnn.config import EventParams, StreamConfig

    assert StreamConfig().events == EventParams()
    for mod in ("streamrnn.runtime.events", "streamrnn.runtime.pipeline", "streamrnn.cli"):
        src = inspect.getsource(__import__(mod, fromlist=["x"]))
        assert "0.35" not in src and "30.0" not in src, mod


def test_a_file_made_valid_by_later_layers_loads_and_a_bad_file_is_named(tmp_path):
    from streamrnn.config import load_stream_config

    t = tmp_path / "t.toml"
    t.write_text("[tbptt]\nk1 = 200\n")  # k2 (default 100) < k1: invalid alone ...
    assert load_config(TrainConfig, t, ["tbptt.k2=200"], env={}).tbptt.k2 == 200  # ... fixed by --set
    with pytest.raises(ConfigError, match=r"config '.*t\.toml': .*tbptt\.k2 must be >= tbptt\.k1"):
        load_config(TrainConfig, t, env={})
    s = tmp_path / "s.toml"
    s.write_text("[events]\non_threshold = 0.3\n")  # below off_threshold 0.35: the file's own error
    with pytest.raises(ConfigError, match=r"config '.*s\.toml': need 0 <= off_threshold"):
        load_stream_config(s, env={})
    assert load_stream_config(s, env={}, options={"events.off_threshold": 0.2}).events.on_threshold == 0.3


def test_code_written_before_the_events_section_still_finds_the_defaults():
    """tools/eval_vad.py (another branch) reads StreamConfig().event_params() and runtime.stats.Stats."""
    from streamrnn.config import EventParams, StreamConfig
    from streamrnn.runtime.stats import Stats
    from streamrnn.stats import Stats as S

    assert StreamConfig().event_params() == EventParams() and Stats is S

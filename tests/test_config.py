import pytest

from mmboundary.config import RunConfig, apply_overrides, config_diff, dump_config, load_config
from mmboundary.errors import ConfigError, RunError
from mmboundary.runs import Run


def test_default_config_validates_and_round_trips(tmp_path):
    cfg = load_config()
    p = tmp_path / "c.yaml"
    p.write_text(dump_config(cfg))
    assert load_config(p) == cfg


def test_shipped_configs_validate():
    from pathlib import Path

    for p in sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")):
        load_config(p)


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("base:\n  vlm:\n    epochz: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'base\.vlm\.epochz'"):
        load_config(p)


def test_wrong_type_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("generation:\n  batch_size: many\n")
    with pytest.raises(ConfigError, match=r"key 'generation\.batch_size'"):
        load_config(p)


def test_overrides_apply_and_are_validated():
    cfg = load_config(None, ["base.vlm.lr=0.01", "data.benchmark.n_train=10", "stages=[data]"])
    assert cfg.base.vlm.lr == 0.01 and cfg.data.benchmark.n_train == 10 and cfg.stages == ["data"]
    with pytest.raises(ConfigError, match="unknown key 'base.nope'"):
        load_config(None, ["base.nope=1"])
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(None, ["base.vlm.lr"])


def test_external_source_needs_files():
    with pytest.raises(ConfigError, match="data.train"):
        load_config(None, ["data.source=jsonl"])


def test_apply_overrides_does_not_mutate():
    d = {"a": {"b": 1}}
    assert apply_overrides(d, ["a.b=2", "a.c.d=x"]) == {"a": {"b": 2, "c": {"d": "x"}}}
    assert d == {"a": {"b": 1}}


def test_config_diff_names_keys():
    a, b = RunConfig(), load_config(None, ["seed=3", "base.vlm.lr=0.5"])
    assert config_diff(a, b) == ["base.vlm.lr", "seed"]


def test_run_dir_reopen_and_mismatch(tmp_path):
    cfg = RunConfig()
    run = Run.open(tmp_path / "r", cfg)
    assert (tmp_path / "r" / "config.yaml").exists()
    d = run.begin_stage("data")
    (d / "x.txt").write_text("partial")
    assert not run.is_complete("data")
    run.mark_complete("data", {"n": 1})
    again = Run.open(tmp_path / "r")
    assert again.config == cfg and again.is_complete("data") and again.marker("data")["summary"] == {"n": 1}
    with pytest.raises(RunError, match="seed"):
        Run.open(tmp_path / "r", load_config(None, ["seed=1"]))
    with pytest.raises(RunError, match="already complete"):
        again.begin_stage("data")


def test_interrupted_stage_is_restarted_clean(tmp_path):
    run = Run.open(tmp_path / "r", RunConfig())
    d = run.begin_stage("base")
    (d / "leftover.bin").write_text("half")
    d2 = run.begin_stage("base")  # no marker: a new attempt starts from an empty folder
    assert list(d2.iterdir()) == []

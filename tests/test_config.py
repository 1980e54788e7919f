import pytest

from mmboundary.config import RunConfig, TrainConfig, apply_overrides, config_diff, dump_config, load_config
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


def test_a_section_given_in_part_keeps_its_own_defaults(tmp_path):
    # sft.train defaults to TrainConfig(epochs=6, lr=3e-4, batch_size=32, warmup_ratio=0.1), not TrainConfig()
    own = RunConfig().sft.train
    assert (own.lr, own.warmup_ratio) == (3e-4, 0.1) != (TrainConfig().lr, TrainConfig().warmup_ratio)
    cfg = load_config(None, ["sft.train.max_steps=3"])
    assert cfg.sft.train == own.model_copy(update={"max_steps": 3})
    f = tmp_path / "c.yaml"
    f.write_text("base:\n  clip:\n    batch_size: 8\n")
    clip = load_config(f).base.clip
    assert (clip.batch_size, clip.lr, clip.epochs) == (8, 3e-4, 6)
    assert load_config(None, ["base.vlm.lr=0.5"]).base.vlm.epochs == RunConfig().base.vlm.epochs == 6


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


# --- paths in a config file -----------------------------------------------------------------------

def _layout(tmp_path):
    """cfg/run.yaml beside cfg/data/train.jsonl and cfg/ckpt/; the working directory is work/."""
    from pathlib import Path

    cfg_dir, work = tmp_path / "cfg", tmp_path / "work"
    (cfg_dir / "data").mkdir(parents=True)
    (cfg_dir / "data" / "train.jsonl").write_text("")
    (cfg_dir / "ckpt").mkdir()
    (work / "local").mkdir(parents=True)
    (work / "local" / "test.jsonl").write_text("")
    (cfg_dir / "run.yaml").write_text(
        "data:\n  source: jsonl\n  train: data/train.jsonl\n  test: local/test.jsonl\n"
        "  ood: /nowhere/ood.jsonl\nmodel:\n  path: ckpt\nclip:\n  path: openai/clip-vit-large-patch14\n")
    return Path(cfg_dir), Path(work)


def test_config_file_paths_resolve_against_the_files_folder(tmp_path, monkeypatch):
    cfg_dir, work = _layout(tmp_path)
    monkeypatch.chdir(work)
    cfg = load_config(cfg_dir / "run.yaml")
    assert cfg.data.train == cfg_dir / "data" / "train.jsonl"  # there: made absolute
    assert str(cfg.data.test) == "local/test.jsonl"  # not there: as written, read from the working directory
    assert str(cfg.data.ood) == "/nowhere/ood.jsonl"  # absolute: unchanged
    assert cfg.model.path == str(cfg_dir / "ckpt")  # a local checkpoint folder
    assert cfg.clip.path == "openai/clip-vit-large-patch14"  # a hub id is never rewritten
    # --set values: against the working directory, made absolute when they exist there
    cfg = load_config(cfg_dir / "run.yaml", ["data.test=local/test.jsonl", "data.ood=later.jsonl",
                                             "model.path=Qwen/Qwen2-VL-7B-Instruct"])
    assert cfg.data.test == work / "local" / "test.jsonl" and str(cfg.data.ood) == "later.jsonl"
    assert cfg.model.path == "Qwen/Qwen2-VL-7B-Instruct"
    # a run's saved config is read as written, never against the run folder
    assert str(load_config(cfg_dir / "run.yaml", relative_to_file=False).data.train) == "data/train.jsonl"
    # layered files: each against its own folder
    (tmp_path / "over").mkdir()
    (tmp_path / "over" / "test.jsonl").write_text("")
    (tmp_path / "over" / "o.yaml").write_text("data:\n  test: test.jsonl\n")
    cfg = load_config([cfg_dir / "run.yaml", tmp_path / "over" / "o.yaml"])
    assert cfg.data.train == cfg_dir / "data" / "train.jsonl" and cfg.data.test == tmp_path / "over" / "test.jsonl"


def test_default_config_and_its_dump_have_no_resolved_path(tmp_path):
    cfg = load_config()
    assert all(getattr(getattr(cfg, s), k) is None for s, k in (("data", "train"), ("model", "path"), ("clip", "path")))
    p = tmp_path / "c.yaml"
    p.write_text(dump_config(cfg))
    assert dump_config(load_config(p)) == dump_config(cfg)


def test_run_reopens_with_paths_resolved_since_it_was_made(tmp_path, monkeypatch):
    """A run saved with a relative path reopens with the same file given absolute (as a config
    file's folder now resolves it); a run directory that is a file is a RunError."""
    cfg_dir, work = _layout(tmp_path)
    sets = ["data.source=jsonl", "data.train=data/train.jsonl", "data.test=data/train.jsonl"]
    monkeypatch.chdir(work)  # no data/ here: the paths stay as written, as every path did before
    old = load_config(None, sets)
    monkeypatch.chdir(cfg_dir)
    run = Run.open(tmp_path / "r", old)
    assert "train: data/train.jsonl" in (run.root / "config.yaml").read_text()
    new = load_config(None, sets)
    assert new.data.train.is_absolute()
    assert Run.open(tmp_path / "r", new).config.data.train == old.data.train  # the saved config is kept
    with pytest.raises(RunError, match="differs at: data.test"):
        Run.open(tmp_path / "r", load_config(None, ["data.source=jsonl", "data.train=data/train.jsonl",
                                                    "data.test=other.jsonl"]))
    (tmp_path / "afile").write_text("")
    with pytest.raises(RunError, match="is a file, not a run directory"):
        Run.open(tmp_path / "afile", new)


def test_a_missing_data_file_names_the_path_looked_for(tmp_path, monkeypatch):
    from mmboundary.data.loading import load_dataset_file
    from mmboundary.errors import DataError

    monkeypatch.chdir(tmp_path)
    for fmt, what in (("jsonl", "dataset file"), ("annotated", "annotation file")):
        with pytest.raises(DataError) as e:
            load_dataset_file("datasets/x.json", fmt=fmt)
        assert str(e.value).startswith(f"datasets/x.json: {what} not found: {tmp_path / 'datasets' / 'x.json'} (")

"""Several processes: sharding helpers, the accelerate config files, and (marked slow) SFT and
evaluation under `accelerate launch` with 2 CPU processes compared with 1 process.

Tolerances: 2 processes are not bitwise equal to 1 because the all-reduce (gloo) sums the two
processes' gradients in another order than one process's backward pass does, so the gradients
differ in the last float32 bits; Adam divides by sqrt(v), which magnifies that noise on
parameters whose gradient is itself rounding noise (the CLIP vision tower's key bias gets no
true gradient: attention is invariant to it). Measured: 2.9e-6 on that bias, at most 6.7e-7 on
every other weight, after 4 steps at lr 3e-3. A per-process mean loss (not weighted by response
tokens) gives 1.4e-2 on the same test, so 1e-5 separates right from wrong by three orders.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _helpers import small_run
from mmboundary.distributed import ShardError, merge_shards, shard_map, shard_range

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_dist_sft_worker.py")
TOLERANCE = 1e-5


# --- pure helpers -------------------------------------------------------------------------------

def test_shard_range_seven_items_on_two_and_three_ranks():
    assert [shard_range(7, 2, r) for r in range(2)] == [(0, 4), (4, 7)]
    assert [shard_range(7, 3, r) for r in range(3)] == [(0, 3), (3, 5), (5, 7)]
    assert [shard_range(1, 3, r) for r in range(3)] == [(0, 1), (1, 1), (1, 1)]  # empty slices, nothing lost
    with pytest.raises(ValueError):
        shard_range(7, 2, 2)


@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
def test_shards_cover_every_index_exactly_once(world):
    for n in range(0, 20):
        ranges = [shard_range(n, world, r) for r in range(world)]
        covered = [i for a, b in ranges for i in range(a, b)]
        assert covered == list(range(n))
        sizes = [b - a for a, b in ranges]
        assert max(sizes) - min(sizes) <= 1


def test_merge_shards_reorders_and_rejects_duplicates_and_gaps():
    items = [f"ex{i}" for i in range(7)]
    parts = [[(i, items[i]) for i in range(*shard_range(7, 2, r))] for r in range(2)]
    assert merge_shards(parts, 7) == items
    assert merge_shards(parts[::-1], 7) == items  # rank order does not matter: indices do
    with pytest.raises(ShardError, match="item 3 was returned twice"):
        merge_shards([parts[0], parts[1] + [(3, "again")]], 7)
    with pytest.raises(ShardError, match="1 of 7 items were returned by no rank"):
        merge_shards([parts[0], parts[1][:-1]], 7)
    with pytest.raises(ShardError, match="outside"):
        merge_shards([[(7, "x")]], 7)


def test_shard_map_with_one_process_is_a_plain_call():
    calls = []

    def fn(xs):
        calls.append(list(xs))
        return [x * 10 for x in xs]

    assert shard_map(fn, [1, 2, 3]) == [10, 20, 30]
    assert calls == [[1, 2, 3]]
    with pytest.raises(ShardError):
        shard_map(lambda xs: xs[:-1], [1, 2])


def test_response_token_count_weights_slices_into_the_global_mean():
    """The weighting of `training.loop` ('shard'): the token-mean loss of a batch equals the
    slices' token-mean losses weighted by `response_token_count`, for a real tiny VLM and
    responses of different lengths (one slice of 1 item, one of 2)."""
    from PIL import Image

    from mmboundary.models.factory import build_tiny
    from mmboundary.models.spec import ModelSpec
    from mmboundary.models.tokenizer import train_tokenizer
    from mmboundary.training.loop import response_token_count

    texts = ["There are 2 circles.", "There is 1 red square. So the answer is 1.", "2 plus 1 is 3. So 3."]
    tok = train_tokenizer(texts * 3 + ["How many?"], 300)
    vlm = build_tiny(tok, ModelSpec(text_num_layers=1, text_hidden_size=32, text_intermediate_size=64,
                                    vision_hidden_size=32, vision_num_layers=1, vision_intermediate_size=64,
                                    max_length=96), seed=0)
    img = Image.new("RGB", (32, 32), "white")

    def enc(rs):
        return dict(vlm.encode([vlm.prompt_text("How many?")] * len(rs), [img] * len(rs), rs))

    with torch.no_grad():
        whole = enc(texts)
        parts = [enc(texts[:1]), enc(texts[1:])]
        counts = [response_token_count(p) for p in parts]
        assert sum(counts) == response_token_count(whole)
        assert counts[0] != counts[1] / 2  # different lengths: an unweighted mean would differ
        weighted = sum(vlm.model(**p).loss * c for p, c in zip(parts, counts)) / sum(counts)
        assert float(weighted) == pytest.approx(float(vlm.model(**whole).loss), rel=1e-5)
        unweighted = sum(vlm.model(**p).loss for p in parts) / 2
        assert abs(float(unweighted) - float(vlm.model(**whole).loss)) > 1e-3


# --- accelerate config files --------------------------------------------------------------------

CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml")) + \
    [ROOT / "tests" / "fixtures" / "accelerate" / "deepspeed_zero2_cpu.yaml"]


def test_the_shipped_accelerate_configs_are_there():
    names = {p.name for p in CONFIGS}
    assert {"ddp.yaml", "ddp_2nodes.yaml", "fsdp.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3.yaml",
            "cpu_2proc.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_parses_and_builds_the_launch_environment(path, monkeypatch):
    """Each config loads with accelerate 1.15's own classes (unknown top-level keys are an error
    there), passes `accelerate launch`'s validation, and yields the environment the launcher
    would give the processes (DeepSpeed / FSDP settings included). The launcher's check that the
    main port is free is stubbed (another test's processes may hold it; nothing is launched)."""
    import accelerate.utils.launch

    monkeypatch.setattr(accelerate.utils.launch, "is_port_in_use", lambda port=None: False)
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DistributedType, prepare_multi_gpu_env

    cfg = load_config_from_file(str(path))
    args = launch_command_parser().parse_args(["--config_file", str(path), "train.py"])
    args, defaults, mp_from_config = _validate_launch_command(args)
    assert args.num_processes == cfg.num_processes and args.num_machines == cfg.num_machines
    if cfg.distributed_type == DistributedType.DEEPSPEED:
        from accelerate.utils import prepare_deepspeed_cmd_env

        assert set(cfg.deepspeed_config) <= {
            "gradient_accumulation_steps", "gradient_clipping", "offload_optimizer_device", "offload_param_device",
            "zero3_init_flag", "zero3_save_16bit_model", "zero_stage", "deepspeed_config_file"}
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as launch_command does
        _, env = prepare_deepspeed_cmd_env(args)
        assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
        assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == str(cfg.deepspeed_config["zero_stage"])
    else:
        env = prepare_multi_gpu_env(args)
        if cfg.distributed_type == DistributedType.FSDP:
            assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
            assert env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT"  # the final model is gathered for rank 0
    if cfg.num_machines > 1:
        assert cfg.main_process_ip and cfg.num_processes == 8 * cfg.num_machines


# --- 2 processes (slow) -------------------------------------------------------------------------

def _env(**extra):
    return {**os.environ, "HF_HUB_OFFLINE": "1", "MMBOUNDARY_PROGRESS": "0", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false", **extra}


def _launch(args: list[str], cwd: Path, config: Path | None = None, **env):
    head = ["accelerate", "launch"] + (["--config_file", str(config)] if config is not None else
                                       ["--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                                        "--mixed_precision", "no", "--dynamo_backend", "no"])
    subprocess.run(head + args, check=True, env=_env(**env), cwd=cwd, timeout=900)


def _weights(d: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(d / "model" / "model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def one_process_sft(tmp_path_factory):
    out = tmp_path_factory.mktemp("sft1") / "out"
    subprocess.run([sys.executable, str(WORKER), str(out)], check=True, env=_env(), cwd=out.parent, timeout=600)
    return out


@pytest.mark.slow
def test_two_processes_sft_equals_one_process_and_resumes(one_process_sft, tmp_path):
    """SFT (`train_sft`, global batch 4 of responses of 1-4 steps, 4 steps): 2 DDP processes
    (gloo) x 2 items vs 1 process x 4 items; weights within 1e-5, the same loss curve. The
    checkpoint at step 2 is written once, with both processes' generator states; launching the
    2 processes again on the same folder resumes from it and ends with the same weights."""
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate CLI not installed")
    out = tmp_path / "two"
    _launch([str(WORKER), str(out)], tmp_path)
    one = json.loads((one_process_sft / "summary.json").read_text())
    two = json.loads((out / "summary.json").read_text())
    assert one["processes"] == 1 and two["processes"] == 2 and two["batch_split"] == "shard"
    assert two["loss_curve"] == pytest.approx(one["loss_curve"], rel=1e-5)
    w1, w2 = _weights(one_process_sft), _weights(out)
    assert _max_diff(w1, w2) < TOLERANCE
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["step-2"]  # one writer: no stray temporary folder from a second process
    state = torch.load(out / "checkpoints" / "step-2" / "trainer_state.pt", weights_only=True)
    assert state["world"] == 2 and len(state["torch_rng_per_rank"]) == 2
    assert not torch.equal(state["torch_rng_per_rank"][0], state["torch_rng_per_rank"][1])  # per-rank seeds

    _launch([str(WORKER), str(out)], tmp_path)  # again: resumes from step-2, runs steps 3-4
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["resumed_from"] == "step-2"
    assert resumed["loss_curve"] == two["loss_curve"]
    assert _max_diff(_weights(out), w2) == 0.0  # same processes, same order: bitwise on CPU


@pytest.mark.slow
def test_deepspeed_zero2_two_cpu_processes_run_sft_and_resume(one_process_sft, tmp_path):
    """DeepSpeed ZeRO-2 (optimiser states and gradients partitioned over 2 CPU processes,
    DS_ACCELERATOR=cpu, gloo) runs the same SFT and ends within 1e-5 of 1 process. Its
    checkpoint at step 2 holds both processes' optimiser shards (`accelerator.save_state`) and
    the trainer state; launched again on the same folder it resumes from step 2 and ends with the
    same weights and loss curve; resumed as one plain process it is refused with a clear error.
    Needs `pip install -e '.[deepspeed]'`; DeepSpeed builds its small shared-memory
    communication op with the C++ compiler on first use."""
    pytest.importorskip("deepspeed", reason="deepspeed not installed (pip install -e '.[deepspeed]')")
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate CLI not installed")
    out = tmp_path / "ds"
    _launch([str(WORKER), str(out), "--mode", "deepspeed"], tmp_path,
            config=ROOT / "tests" / "fixtures" / "accelerate" / "deepspeed_zero2_cpu.yaml", DS_ACCELERATOR="cpu")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["distributed_type"] == "DistributedType.DEEPSPEED" and summary["processes"] == 2
    assert _max_diff(_weights(one_process_sft), _weights(out)) < TOLERANCE
    one = json.loads((one_process_sft / "summary.json").read_text())
    assert summary["loss_curve"] == pytest.approx(one["loss_curve"], rel=1e-5)

    ckpt = out / "checkpoints" / "step-2"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2"]
    state = torch.load(ckpt / "trainer_state.pt", weights_only=True)
    assert state["world"] == 2 and "optimizer" not in state and state["sharded"] == "DistributedType.DEEPSPEED"
    shards = [p.name for p in (ckpt / "sharded").rglob("*optim_states*")]
    assert len(shards) == 2, shards  # one optimiser shard per process

    first = _weights(out)
    _launch([str(WORKER), str(out), "--mode", "deepspeed"], tmp_path,  # again: resumes, runs steps 3-4
            config=ROOT / "tests" / "fixtures" / "accelerate" / "deepspeed_zero2_cpu.yaml", DS_ACCELERATOR="cpu")
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["resumed_from"] == "step-2"
    assert resumed["loss_curve"] == pytest.approx(summary["loss_curve"], rel=1e-6)
    assert _max_diff(_weights(out), first) < 1e-6

    plain = subprocess.run([sys.executable, str(WORKER), str(out)], env=_env(), cwd=tmp_path, timeout=600,
                           capture_output=True, text=True)
    assert plain.returncode != 0 and "written under DeepSpeed/FSDP" in plain.stderr


def _eval_run(root: Path) -> Path:
    """A run directory with data (7 test, 9 OOD examples), an untrained tiny base model, and the
    same model as a finished 'sft' stage (so both the internal and the expressed path run)."""
    from mmboundary.artifacts import load_split
    from mmboundary.config import load_config
    from mmboundary.pipeline import run_stage
    from mmboundary.runs import Run
    from mmboundary.training.base import build_base_vlm

    cfg = load_config(None, [
        "data.benchmark.n_train=8", "data.benchmark.n_test=7", "data.benchmark.n_ood=9",
        "model.text_hidden_size=32", "model.text_num_layers=1", "model.text_intermediate_size=64",
        "model.vision_hidden_size=32", "model.vision_num_layers=1", "model.vision_intermediate_size=64",
        "generation.max_new_tokens=24", "generation.batch_size=1", "stages=[data,base,evaluate]"])
    run = Run.open(root, cfg)
    run_stage(run, "data")
    vlm = build_base_vlm(cfg, load_split(run, "train"))
    vlm.save(run.stage_dir("base") / "model")
    run.mark_complete("base", {"vlm": "untrained, for the test"})
    vlm.save(run.stage_dir("sft") / "model")
    run.mark_complete("sft", {"model": "the base model, for the test"})
    return root


@pytest.mark.slow
def test_evaluate_under_two_processes_counts_every_example_once(tmp_path):
    """`mmboundary evaluate` under 2 processes: the 7 test and 9 OOD examples (not divisible by
    2) are each generated once, by one process, and come back in the split's order; the chains
    and the metrics equal those of 1 process (greedy, generation batch 1, so batching cannot
    change a token); rank 1 logs to its own file, rank 0 alone writes the stage."""
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate CLI not installed")
    one = _eval_run(tmp_path / "one")
    two = tmp_path / "two"
    shutil.copytree(one, two)
    cli = ["-m", "mmboundary.cli", "evaluate", "--run-dir"]
    subprocess.run([sys.executable] + cli + [str(one)], check=True, env=_env(), cwd=tmp_path, timeout=900)
    _launch(cli + [str(two)], tmp_path)
    for split, n in (("test", 7), ("ood", 9)):
        ids = [json.loads(x)["id"] for x in (one / "data" / f"{split}.jsonl").read_text().splitlines() if x.strip()]
        assert len(ids) == n
        for model in ("vanilla", "sft"):
            a = [json.loads(x) for x in (one / "evaluate" / f"chains_{model}_{split}.jsonl").read_text().splitlines()]
            b = [json.loads(x) for x in (two / "evaluate" / f"chains_{model}_{split}.jsonl").read_text().splitlines()]
            assert [c["example_id"] for c in b] == ids  # every example once, in order
            assert b == a
    m1 = json.loads((one / "evaluate" / "metrics.json").read_text())
    m2 = json.loads((two / "evaluate" / "metrics.json").read_text())
    assert m2 == m1
    assert (two / "evaluate" / "COMPLETE").is_file()
    assert (two / "logs" / "run.rank-1.log").is_file()
    assert not list((two / "evaluate").glob(".*tmp*"))


SMALL_RUN = small_run(n_ood=7)  # 7 OOD examples: the two processes get unequal shares


@pytest.mark.slow
def test_a_whole_run_under_two_processes(tmp_path):
    """`accelerate launch --config_file configs/accelerate/cpu_2proc.yaml -m mmboundary.cli run`
    on a miniature of the default (about a minute): every stage completes with one marker; the
    training stages report 2 processes; estimate and evaluate hold every example once; rank 1
    logs to its own file."""
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate CLI not installed")
    run = tmp_path / "run"
    cmd = ["--config_file", str(ROOT / "configs" / "accelerate" / "cpu_2proc.yaml"), "-m", "mmboundary.cli",
           "run", "--run-dir", str(run)]
    for s in SMALL_RUN:
        cmd += ["--set", s]
    subprocess.run(["accelerate", "launch"] + cmd, check=True, env=_env(), cwd=tmp_path, timeout=900)
    for stage in ("data", "base", "estimate", "sft_data", "sft", "rl", "evaluate"):
        assert (run / stage / "COMPLETE").is_file(), stage
    marker = lambda s: json.loads((run / s / "COMPLETE").read_text())["summary"]  # noqa: E731
    assert marker("sft")["processes"] == 2 and marker("sft")["batch_split"] == "shard"
    assert marker("base")["vlm"]["processes"] == 2 and marker("base")["clip"]["batch_split"] == "replicate"
    assert marker("rl")["processes"] == 2
    for split, n in (("test", 8), ("ood", 7)):
        ids = [json.loads(x)["id"] for x in (run / "data" / f"{split}.jsonl").read_text().splitlines() if x.strip()]
        lines = (run / "estimate" / f"chains_{split}.jsonl").read_text().splitlines()
        chains = [json.loads(x)["example_id"] for x in lines]
        assert chains == ids and len(ids) == n
        metrics = json.loads((run / "evaluate" / "metrics.json").read_text())[split]
        assert {m: metrics[m]["examples"] for m in ("vanilla", "sft", "rl")} == {"vanilla": n, "sft": n, "rl": n}
    assert (run / "logs" / "run.log").is_file() and (run / "logs" / "run.rank-1.log").is_file()
    assert not (run / "sft" / "checkpoints").exists()

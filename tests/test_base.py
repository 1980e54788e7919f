"""Stage `base` building blocks: training items, CLIP -> VLM vision initialisation."""

import torch

from mmboundary.config import load_config
from mmboundary.data.benchmark import CAPTION_QUESTION, BenchmarkSpec, generate_examples
from mmboundary.models.clip import build_clip
from mmboundary.models.factory import build_model
from mmboundary.models.tokenizer import train_tokenizer
from mmboundary.training.base import init_vision_from_clip, reference_response, tokenizer_corpus, training_items


def test_training_items_mix_captions_at_the_configured_share(tmp_path):
    examples = generate_examples(BenchmarkSpec.version("v1", n_train=30, n_test=1, n_ood=1), "train", tmp_path)
    cfg = load_config(None, ["base.caption_share=0.25"])
    items = training_items(cfg, examples)
    captions = [it for it in items if it[1] == CAPTION_QUESTION]
    assert len(items) == 40 and len(captions) == 10
    assert [r for _, q, r in items if q != CAPTION_QUESTION] == [reference_response(ex) for ex in examples]
    assert training_items(load_config(None, ["base.caption_share=0"]), examples)[-1][1] != CAPTION_QUESTION


def test_vision_tower_initialised_from_clip_when_shapes_match(tmp_path):
    examples = generate_examples(BenchmarkSpec.version("v1", n_train=10, n_test=1, n_ood=1), "train", tmp_path)
    tok = train_tokenizer(tokenizer_corpus(examples), 512)
    cfg = load_config()
    vlm = build_model(cfg.model, tokenizer=tok, seed=0)
    clip = build_clip(tok, cfg.clip, seed=1)
    assert init_vision_from_clip(vlm, clip.model)
    a = vlm.model.model.vision_tower.state_dict()
    b = clip.model.vision_model.state_dict()
    assert all(torch.equal(v, b[k.removeprefix("vision_model.")]) for k, v in a.items())
    small = load_config(None, ["clip.vision_hidden_size=32", "clip.vision_intermediate_size=64"]).clip
    other = build_clip(tok, small, seed=1)
    assert not init_vision_from_clip(vlm, other.model)


def test_reference_response_of_a_punctuated_chain_is_unchanged(tmp_path):
    """The boundary rule changes no chain whose steps all end in '.', '!' or '?': the built-in
    benchmark's training text stays byte-identical (the committed comparison depends on it)."""
    from mmboundary.records import Example, ReferenceStep, StepKind

    examples = generate_examples(BenchmarkSpec.version("v1", n_train=40, n_test=1, n_ood=1), "train", tmp_path)
    assert all(reference_response(ex) == " ".join(st.text for st in ex.chain) for ex in examples)
    steps = ["Is it red?", "Yes!", "It is 3.5 cm wide.", "It reads 'STOP' (twice).", "So the answer is 3."]
    ex = Example(id="p", image=tmp_path / "x.png", question="q", answers=("3",),
                 chain=tuple(ReferenceStep(text=t, kind=StepKind.reasoning) for t in steps))
    assert reference_response(ex) == " ".join(steps)
    bare = ex.model_copy(update={"chain": tuple(ReferenceStep(text=t.rstrip(".!?"), kind=StepKind.reasoning)
                                                for t in steps)})
    assert reference_response(bare) == "Is it red. Yes. It is 3.5 cm wide. It reads 'STOP' (twice). So the answer is 3."
    quoted = ex.model_copy(update={"chain": (ReferenceStep(text='He said "yes."', kind=StepKind.reasoning),)})
    assert reference_response(quoted) == 'He said "yes.".'  # the last character decides (docs/data-format.md)

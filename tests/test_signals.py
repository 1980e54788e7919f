"""Tests of the four step signals (method.md section 2): the teacher-forced scores, the token spans
of steps, U_LNLP, U_MTE, U_TokenSAR, U_CLIPScore and the batched estimator. Offline, fast."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from _helpers import COLORS, SHAPES, scene
from mmboundary.confidence import forward as forward_mod
from mmboundary.confidence.clip_score import clip_scores
from mmboundary.confidence.estimator import estimate_signals
from mmboundary.confidence.forward import ResponseScores, teacher_forced, token_scores
from mmboundary.confidence.lnlp import lnlp
from mmboundary.confidence.mte import mte
from mmboundary.confidence.spans import step_token_spans, token_offsets
from mmboundary.confidence.token_sar import normalised_relevance, removal_texts, token_sar, token_sar_batch
from mmboundary.generation import chain_record
from mmboundary.models.clip import build_clip
from mmboundary.models.factory import build_model
from mmboundary.models.spec import ClipSpec, ModelSpec
from mmboundary.models.tokenizer import train_tokenizer
from mmboundary.models.vlm import IGNORE_INDEX
from mmboundary.records import Example
from mmboundary.steps import split_steps

CHAIN = "There are 2 red objects. 2 plus 1 is 3. So the answer is 3."
LN4 = math.log(4.0)


def corpus(n: int = 200, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        c, s = rng.choice(COLORS), rng.choice(SHAPES)
        a, b = rng.randint(0, 4), rng.randint(0, 4)
        texts.append(f"How many {c} objects are there?")
        texts.append(f"There are {a} {c} objects. {a} plus {b} is {a + b}. So the answer is {a + b}.")
        texts.append(f"The {c} {s} is in the left cell, and I believe this is right.")
    texts.append("Question: Answer:")
    return texts


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(corpus(), 512)


@pytest.fixture(scope="module")
def vlm(tokenizer):
    return build_model(ModelSpec(), tokenizer=tokenizer, seed=0)


@pytest.fixture(scope="module")
def clip(tokenizer):
    return build_clip(tokenizer, ClipSpec(), seed=0)


@pytest.fixture(scope="module")
def similarity():
    from mmboundary.confidence.similarity import SentenceSimilarity

    return SentenceSimilarity(device="cpu")


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from mmboundary.confidence.similarity import default_encoder_path

    return AutoTokenizer.from_pretrained(default_encoder_path())


# --- pure tensor scores with chosen logits ------------------------------------------------------

def test_token_scores_uniform_and_peaked_by_hand():
    V = 4
    probs = torch.tensor([0.7, 0.1, 0.1, 0.1])
    logits = torch.zeros(2, 4, V)
    logits[0, 1] = torch.log(probs) + 3.0  # any shift: log_softmax removes it
    logits[1, 0] = torch.tensor([0.0, 0.0, -math.inf, 0.0])  # a masked token: entropy ln 3
    labels = torch.tensor([[IGNORE_INDEX, 1, 0, 3],  # position t predicts labels[t + 1]
                           [IGNORE_INDEX, 1, 2, IGNORE_INDEX]])
    rows = token_scores(logits, labels)
    ids, lp, h = rows[0]
    assert ids.tolist() == [1, 0, 3]
    h_peaked = -(0.7 * math.log(0.7) + 3 * 0.1 * math.log(0.1))
    np.testing.assert_allclose(lp, [-LN4, math.log(0.7), -LN4], rtol=0, atol=1e-6)
    np.testing.assert_allclose(h, [LN4, h_peaked, LN4], rtol=0, atol=1e-6)
    assert lp.dtype == np.float64 and h.dtype == np.float64
    ids, lp, h = rows[1]
    assert ids.tolist() == [1, 2]
    np.testing.assert_allclose(lp, [-math.log(3), -LN4], atol=1e-12)
    np.testing.assert_allclose(h, [math.log(3), LN4], atol=1e-12)


def test_token_scores_float64_and_chunked(monkeypatch):
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11) * 5
    labels = torch.randint(0, 11, (3, 7))
    labels[:, :2] = IGNORE_INDEX
    ref = token_scores(logits, labels)
    monkeypatch.setattr(forward_mod, "CHUNK_ELEMENTS", 11 * 2)  # two rows at a time
    chunked = token_scores(logits, labels)
    for (i1, l1, h1), (i2, l2, h2) in zip(ref, chunked):
        assert (i1 == i2).all()
        np.testing.assert_array_equal(l1, l2)
        np.testing.assert_array_equal(h1, h2)
    # against a direct float64 computation
    lp64 = torch.log_softmax(logits.double(), -1)
    expect = [lp64[0, t, labels[0, t + 1]].item() for t in range(1, 6)]
    np.testing.assert_allclose(ref[0][1], expect, atol=1e-12)


# --- the signals by hand ------------------------------------------------------------------------

def test_lnlp_and_mte_exact():
    assert lnlp([-LN4, -LN4, -LN4]) == pytest.approx(4.0, abs=1e-12)
    assert lnlp([math.log(0.7), math.log(0.1)]) == pytest.approx(1 / math.sqrt(0.07), abs=1e-12)
    assert lnlp([0.0]) == 1.0
    assert mte([LN4, LN4]) == pytest.approx(LN4, abs=1e-12)
    assert mte([0.0, 1.0, 2.0]) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError):
        lnlp([])
    with pytest.raises(ValueError):
        mte([])


def test_token_sar_weighted_sum_by_hand():
    lp = [math.log(0.5), math.log(0.25), math.log(0.1)]
    # g = 0.9, 0.5, 1.0 -> R = 0.1, 0.5, 0 -> Rn = 1/6, 5/6, 0
    assert token_sar(lp, [0.9, 0.5, 1.0]) == pytest.approx(math.log(2) / 6 + 5 * math.log(4) / 6, abs=1e-12)
    # g is clamped to [0, 1]: 1.3 -> 1 (R = 0), -0.4 -> 0 (R = 1)
    assert token_sar(lp, [1.3, -0.4, 1.0]) == pytest.approx(math.log(4), abs=1e-12)
    # sum R == 0: uniform weights, the mean NLL
    mean_nll = (math.log(2) + math.log(4) + math.log(10)) / 3
    assert token_sar(lp, [1.0, 1.0, 1.0]) == pytest.approx(mean_nll, abs=1e-12)
    np.testing.assert_allclose(normalised_relevance([0.0, 0.0]), [0.5, 0.5])
    with pytest.raises(ValueError):
        token_sar(lp, [1.0, 1.0])


class StubSimilarity:
    """g set by the test: a function of (full, removed); counts calls and keeps the pairs."""

    def __init__(self, fn):
        self.fn = fn
        self.calls = 0
        self.pairs = []

    def pairwise(self, pairs):
        self.calls += 1
        self.pairs.append(list(pairs))
        return np.array([self.fn(a, b) for a, b in pairs], dtype=np.float64)


def test_token_sar_batch_one_call_and_removals(tokenizer):
    steps_text = ["2 plus 1 is 3.", "So the answer is 3."]
    steps = []
    for text in steps_text:
        ids, _ = token_offsets(tokenizer, text)
        steps.append((ids, np.log(np.linspace(0.2, 0.9, len(ids)))))
    # g = 1 - 0.1 * (number of characters removed): relevance proportional to a token's length
    stub = StubSimilarity(lambda full, removed: 1 - 0.1 * (len(full) - len(removed)))
    values = token_sar_batch(tokenizer, stub, steps)
    assert stub.calls == 1
    assert len(stub.pairs[0]) == sum(len(ids) for ids, _ in steps)
    full, removed = removal_texts(tokenizer, steps[0][0])
    assert full == steps_text[0]
    assert removed[0] == "plus 1 is 3."  # token "2" removed (then stripped)
    for (ids, lp), v in zip(steps, values):
        full, removed = removal_texts(tokenizer, ids)
        r = np.array([min(1.0, 0.1 * (len(full) - len(x))) for x in removed])
        expect = float((r / r.sum() * -lp).sum())
        assert v == pytest.approx(expect, abs=1e-12)


# --- spans --------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["project", "minilm"])
@pytest.mark.parametrize("text", [
    CHAIN,
    "There are 2 red objects.  2 plus 1 is 3.\nSo the answer is 3.",
    "The value is 3.5 e.g. here. Done!",
])
def test_step_token_spans_partition_steps(which, text, tokenizer, minilm_tokenizer):
    tok = tokenizer if which == "project" else minilm_tokenizer
    steps = split_steps(text)
    ids, offsets = token_offsets(tok, text)
    spans = step_token_spans(text, steps, offsets)
    assert len(spans) == len(steps)
    # contiguous, in order, covering every token (the text is stripped)
    assert spans[0][0] == 0 and spans[-1][1] == len(ids)
    for (a, b), (c, d) in zip(spans, spans[1:]):
        assert a < b == c < d
    for (s, e), (a, b) in zip(steps, spans):
        decoded = tok.decode(ids[a:b], skip_special_tokens=True, clean_up_tokenization_spaces=False).strip()
        if which == "project":
            assert decoded == text[s:e]
        else:  # an uncased WordPiece tokenizer loses case and spacing around punctuation
            assert decoded.replace(" ", "") == text[s:e].lower().replace(" ", "")


def test_step_token_spans_by_hand():
    text = "ab. cd."
    offsets = [(0, 2), (2, 3), (3, 4), (4, 6), (6, 7)]  # "ab" "." " " "cd" "."
    assert step_token_spans(text, [(0, 3), (4, 7)], offsets) == [(0, 2), (2, 5)]
    offsets = [(0, 2), (2, 3), (3, 6), (6, 7)]  # "ab" "." " cd" "."
    assert step_token_spans(text, [(0, 3), (4, 7)], offsets) == [(0, 2), (2, 4)]
    # a token straddling two steps goes to the one it overlaps most
    assert step_token_spans("abcdef", [(0, 2), (2, 6)], [(0, 3), (3, 6)]) == [(0, 1), (1, 2)]
    assert step_token_spans("abcdef", [(0, 4), (4, 6)], [(0, 3), (3, 6)]) == [(0, 1), (1, 2)]
    # a step with no token of its own gets an empty span
    assert step_token_spans("abcdef", [(0, 2), (2, 3), (3, 6)], [(0, 2), (2, 6)]) == [(0, 1), (1, 1), (1, 2)]


def test_step_token_spans_with_statements_between_steps():
    # steps are the bodies only (statements excluded), as for a model that writes statements;
    # a whitespace token inside a statement must not be given to the next step (it was, and
    # made the next step's tokens non-contiguous on a sampled response with a double space)
    text = "ab, ok  sure. cd, fine."
    # tokens: "ab" "," " ok" " " " sure" "." " cd" "," " fine" "."
    offsets = [(0, 2), (2, 3), (3, 6), (6, 7), (7, 12), (12, 13), (13, 16), (16, 17), (17, 22), (22, 23)]
    assert step_token_spans(text, [(0, 2), (14, 16)], offsets) == [(0, 1), (6, 7)]
    # whitespace right before a step still belongs to it
    offsets = [(0, 2), (2, 3), (3, 6), (6, 7), (7, 12), (12, 13), (13, 14), (14, 16), (16, 17), (17, 22), (22, 23)]
    assert step_token_spans(text, [(0, 2), (14, 16)], offsets) == [(0, 1), (6, 8)]


# --- teacher-forced scores on the tiny VLM ------------------------------------------------------

ITEMS = [
    ("red", "How many red objects are there?", CHAIN),
    ("blue", "What shape is the blue object?", "The blue square is in the left cell. So the answer is square."),
    ("green", "How many green objects are there?", "There are 0 green objects. So the answer is 0."),
]


def _items(vlm, items):
    return [(vlm.prompt_text(q), scene(c), r) for c, q, r in items]


def test_teacher_forced_alignment_eos_and_full_logits(vlm):
    items = _items(vlm, ITEMS[:2])
    scores = teacher_forced(vlm, items)
    enc = vlm.encode([p for p, _, _ in items], [im for _, im, _ in items], [r for _, _, r in items])
    with torch.no_grad():
        logits = vlm.model(**{k: v for k, v in enc.items() if k != "labels"}).logits  # all positions
    for i, ((_, _, response), sc) in enumerate(zip(items, scores)):
        assert isinstance(sc, ResponseScores)
        ids = vlm.tokenizer(response, add_special_tokens=False)["input_ids"]
        assert sc.token_ids.tolist() == ids  # eos excluded
        assert len(sc.offsets) == len(ids) and not sc.truncated
        assert sc.eos_logprob is not None and sc.eos_logprob < 0
        start = int((enc["labels"][i] != IGNORE_INDEX).int().argmax())
        logp = torch.log_softmax(logits[i].double(), -1)
        expect = [logp[start + t - 1, tid].item() for t, tid in enumerate(ids)]
        np.testing.assert_allclose(sc.logprobs, expect, atol=1e-5)
        ent = -(logp.exp() * logp).sum(-1)[start - 1:start - 1 + len(ids)].numpy()
        np.testing.assert_allclose(sc.entropies, ent, atol=1e-5)
        assert (sc.entropies > 0).all() and (sc.entropies <= math.log(len(vlm.tokenizer)) + 1e-9).all()


def test_teacher_forced_batched_equals_one_by_one_and_padding_invariance(vlm):
    items = _items(vlm, ITEMS)
    batched = teacher_forced(vlm, items)
    for item, b in zip(items, batched):
        (single,) = teacher_forced(vlm, [item])
        np.testing.assert_allclose(b.logprobs, single.logprobs, rtol=0, atol=1e-5)
        np.testing.assert_allclose(b.entropies, single.entropies, rtol=0, atol=1e-5)
        assert (b.token_ids == single.token_ids).all()
    # padding invariance: a much longer item in the batch does not move the others
    longer = (vlm.prompt_text("How many purple objects are there in the picture?"), scene("purple"),
              " ".join([CHAIN] * 4))
    padded = teacher_forced(vlm, [items[0], longer, items[2]])
    for b, p in zip([batched[0], batched[2]], [padded[0], padded[2]]):
        np.testing.assert_allclose(p.logprobs, b.logprobs, rtol=0, atol=1e-5)
        np.testing.assert_allclose(p.entropies, b.entropies, rtol=0, atol=1e-5)


# --- CLIP score ---------------------------------------------------------------------------------

def test_clip_score_range_and_batched_equals_one_by_one(clip):
    images = [scene("red"), scene("blue"), scene("green", box=(30, 30, 46, 46))]
    sentences = ["There are 2 red objects.", "The blue square is in the left cell.",
                 "So the answer is 3.", " ".join(["a very long sentence"] * 40)]
    index = [0, 1, 2, 0]
    batched = clip_scores(clip, images, sentences, image_index=index)
    assert batched.shape == (4,)
    assert ((batched >= 0) & (batched <= 1)).all()
    for k, (i, s) in enumerate(zip(index, sentences)):
        (one,) = clip_scores(clip, [images[i]], [s])
        assert one == pytest.approx(batched[k], abs=1e-5)
    # the raw cosine is clamped at 0: a model whose cosines are all negative scores 0
    image_emb, text_emb = clip.embed(images, sentences)
    raw = (image_emb[index] * text_emb).sum(-1).numpy()
    np.testing.assert_allclose(batched, np.clip(raw, 0, 1), atol=1e-6)


# --- the estimator ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def examples_and_chains(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    examples, chains = [], []
    for k, (color, question, response) in enumerate(ITEMS * 2):
        path = d / f"{k}.png"
        scene(color).save(path)
        ex = Example(id=f"ex{k}", image=path, question=question, answers=("3",))
        examples.append(ex)
        chains.append(chain_record(ex, response))
    return examples, chains


class CountingEncoder:
    """Wraps a SentenceTransformer's `encode` to count the calls."""

    def __init__(self, model):
        self.model = model
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def encode(self, *args, **kwargs):
        self.calls += 1
        return self.model.encode(*args, **kwargs)


def test_estimate_signals_end_to_end(vlm, clip, similarity, examples_and_chains, monkeypatch):
    examples, chains = examples_and_chains
    counting = CountingEncoder(similarity.model)
    monkeypatch.setattr(similarity, "model", counting)
    monkeypatch.setattr(similarity, "cache_size", 0)  # no cache: one encoder call per batch
    similarity._cache.clear()
    uncached = estimate_signals(vlm, clip, similarity, examples, chains, batch_size=4, progress=False)
    assert counting.calls == 2  # 6 chains, batches of 4 and 2
    monkeypatch.setattr(similarity, "cache_size", 200_000)
    counting.calls = 0
    records = estimate_signals(vlm, clip, similarity, examples, chains, batch_size=4, progress=False)
    # the second batch only repeats sentences of the first (the fixture cycles 3 chains): cached
    assert counting.calls == 1
    assert [r.token_sar for r in records] == pytest.approx([r.token_sar for r in uncached], rel=1e-6)
    assert len(records) == sum(len(c.steps) for c in chains)
    k = 0
    for c in chains:
        (sc,) = teacher_forced(vlm, [(vlm.prompt_text(next(e for e in examples if e.id == c.example_id).question),
                                      scene(ITEMS[int(c.example_id[2:]) % 3][0]), c.text)])
        for j, step in enumerate(c.steps):
            r = records[k]
            k += 1
            assert (r.example_id, r.step_index, r.text) == (c.example_id, j, step.text)
            a, b = r.token_start, r.token_end
            assert b > a
            assert r.lnlp == pytest.approx(lnlp(sc.logprobs[a:b]), rel=1e-6)
            assert r.mte == pytest.approx(mte(sc.entropies[a:b]), rel=1e-6)
            assert r.token_sar is not None and r.token_sar >= 0
            assert 0 <= r.clip_score <= 1
            # TokenSAR weights are a convex combination: between min and max token NLL
            nll = -sc.logprobs[a:b]
            assert nll.min() - 1e-6 <= r.token_sar <= nll.max() + 1e-6
    only = estimate_signals(vlm, clip, None, examples, chains[:2], signals=("lnlp", "clip_score"), progress=False)
    assert all(r.mte is None and r.token_sar is None and r.lnlp is not None and r.clip_score is not None
               for r in only)
    assert [r.lnlp for r in only] == pytest.approx([r.lnlp for r in records[:len(only)]], rel=1e-6)
    with pytest.raises(ValueError):
        estimate_signals(vlm, clip, None, examples, chains, signals=("token_sar",), progress=False)
    with pytest.raises(ValueError):
        estimate_signals(vlm, clip, similarity, examples, chains, signals=("perplexity",), progress=False)


def test_similarity_minilm_range(similarity):
    g = similarity.pairwise([("There are 2 red objects.", "There are 2 red objects."),
                             ("There are 2 red objects.", "There are red objects."),
                             ("There are 2 red objects.", "The weather in Paris is mild.")])
    assert ((g >= 0) & (g <= 1)).all()
    assert g[0] == pytest.approx(1.0, abs=1e-5)
    assert g[0] > g[1] > g[2]


def test_truncated_response_steps_get_none(vlm, clip, similarity, examples_and_chains):
    from mmboundary.models.vlm import VLM

    examples, chains = examples_and_chains
    chain = chains[0]  # three steps
    ex = examples[0]
    n_prompt = int(vlm.encode([vlm.prompt_text(ex.question)], [scene("red")])["input_ids"].shape[1])
    short = VLM(model=vlm.model, processor=vlm.processor, kind=vlm.kind, max_length=n_prompt + 8)
    (sc,) = teacher_forced(short, [(short.prompt_text(ex.question), scene("red"), chain.text)])
    assert sc.truncated and len(sc.token_ids) == 8 and sc.eos_logprob is None
    with pytest.warns(UserWarning, match="beyond the model's max_length"):
        records = estimate_signals(short, clip, similarity, examples, [chain], progress=False)
    full = estimate_signals(vlm, clip, similarity, examples, [chain], progress=False)
    assert records[0].lnlp == pytest.approx(full[0].lnlp, rel=1e-6)  # first step fits in 8 tokens
    for r in records[1:]:  # the second step is cut after 2 of its tokens, the third entirely
        assert r.lnlp is None and r.mte is None and r.token_sar is None
    assert [(r.token_start, r.token_end) for r in records] == [(r.token_start, r.token_end) for r in full]
    assert records[-1].clip_score == pytest.approx(full[-1].clip_score, abs=1e-6)


def test_similarity_cross_encoder_class_path(tokenizer):
    """The cross-encoder path, on the MiniLM checkpoint loaded as a CrossEncoder (its scoring head
    is random offline, so only the range and the single call are checked, not the values)."""
    from mmboundary.confidence.similarity import SentenceSimilarity

    cross = SentenceSimilarity(kind="cross-encoder", device="cpu")
    assert cross.cross_encoder and type(cross.model).__name__ == "CrossEncoder"
    g = cross.pairwise([("There are 2 red objects.", "There are red objects."), ("a", "b")])
    assert g.shape == (2,) and ((g >= 0) & (g <= 1)).all() and cross.calls == 1
    with pytest.raises(TypeError):
        cross.embed(["a"])
    ids, _ = token_offsets(tokenizer, "So the answer is 3.")
    (v,) = token_sar_batch(tokenizer, cross, [(ids, np.full(len(ids), -1.0))])
    assert v == pytest.approx(1.0) and cross.calls == 2  # weights sum to 1 over NLL 1
    with pytest.raises(ValueError):
        SentenceSimilarity(kind="poly-encoder")

"""Confidence-guided self-correction (`mmboundary.correction`): with a scripted backend and a
table of confidences (a low step is resampled within the budget, the most confident candidate is
kept, the rest is regenerated from it; budget 0 is plain greedy decoding), and on a tiny random
VLM with the real internal confidence (budget 0 = `generate_texts`, candidates ranked by their
fused internal confidence, reproducible)."""

from __future__ import annotations

import pytest

from _helpers import tiny_scoring_context, tiny_spec, tiny_tokenizer
from mmboundary.config import GenerationConfig
from mmboundary.correction import (
    CorrectionConfig,
    InternalScorer,
    SelfCorrector,
    VLMBackend,
    correction_config,
)
from mmboundary.errors import ConfigError, RunError
from mmboundary.models.factory import build_tiny
from mmboundary.statements.mapping import NumericMapper

SPEC = tiny_spec()

# `examples` (three benchmark examples) is a fixture of conftest.py.


@pytest.fixture(scope="module")
def tokenizer(examples):
    return tiny_tokenizer(examples, extra=["There are 3 blue squares.", "There is 1 red circle."])


# --- a scripted model and a table of confidences ---------------------------------------------------

class ScriptedBackend:
    """Greedy chains, continuations and candidates from scripts keyed by the prefix text; every
    call is recorded."""

    def __init__(self, tokenizer, greedy: str, candidates: dict[str, list[str]] | None = None,
                 continuations: dict[str, str] | None = None):
        self.tokenizer = tokenizer
        self.eos_token_id = tokenizer.eos_token_id
        self.greedy_text = greedy
        self.candidate_texts = candidates or {}
        self.continuations = continuations or {}
        self.sample_calls: list[tuple[str, int, int]] = []
        self.greedy_calls: list[str] = []
        self.sampled_lengths: list[int] = []

    def enc(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def text(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def greedy_batch(self, examples, max_new_tokens):
        return [self.enc(self.greedy_text) + [self.eos_token_id] for _ in examples]

    def key(self, prefix) -> tuple[str, str]:
        """The prefix text without trailing space, and the space a continuation starts with (none
        when the prefix's last token is the space: it is part of the prefix)."""
        text = self.text(prefix)
        return text.rstrip(), "" if text.endswith(" ") else " "

    def greedy(self, example, prefix, max_new_tokens):
        key, space = self.key(prefix)
        self.greedy_calls.append(key)
        return self.enc(space + self.continuations[key]) + [self.eos_token_id]

    def sample(self, example, prefix, n, *, temperature, max_new_tokens, seed):
        key, space = self.key(prefix)
        self.sample_calls.append((key, n, seed))
        out = [self.enc(space + c) for c in self.candidate_texts[key][:n]]
        self.sampled_lengths += [len(x) for x in out]
        return out


class TableScorer:
    """Internal confidence (level, fused) of a step looked up by its text (default (4, 0.7))."""

    def __init__(self, table: dict[str, tuple[int, float]]):
        self.table = table

    def get(self, text):
        return self.table.get(text, (4, 0.7))

    def levels(self, examples, chains):
        return [[self.get(s.text)[0] for s in c.steps] for c in chains]

    def candidates(self, examples, chains):
        return [self.get(c.steps[-1].text) if c.steps else None for c in chains]


GREEDY = "There is 1 red circle. There are 5 blue squares. There are 7 green triangles. So the answer is 5."
TABLE = {
    "There are 5 blue squares.": (1, 0.10),      # low: resampled
    "There are 7 green triangles.": (2, 0.30),   # low: resampled if budget is left
    "There are 2 blue squares.": (3, 0.50),
    "There are 3 blue squares.": (5, 0.95),      # the most confident candidate
    "There is a blue square.": (2, 0.35),
    "There are 4 blue squares.": (5, 0.90),
}
CANDIDATES = {  # each sampled candidate runs into the next sentence, which must be cut off
    "There is 1 red circle.": ["There are 2 blue squares. So", "There are 3 blue squares. There",
                               "There is a blue square. The", "There are 4 blue squares. So"],
}
CONTINUATIONS = {"There is 1 red circle. There are 3 blue squares.": "So the answer is 3."}


def corrector(tokenizer, config, greedy=GREEDY, candidates=CANDIDATES, continuations=CONTINUATIONS, table=TABLE,
              mapper=None):
    backend = ScriptedBackend(tokenizer, greedy, candidates, continuations)
    return SelfCorrector(backend, TableScorer(table), mapper, config, max_new_tokens=128), backend


def test_low_step_is_resampled_and_the_most_confident_candidate_kept(examples, tokenizer):
    cfg = CorrectionConfig(threshold=2, samples=3, budget=3)
    sc, backend = corrector(tokenizer, cfg)
    result = sc.run(examples[:1]).results[0]
    # one correction, at the first low step, sampled from the exact prefix before it
    assert [c.step_index for c in result.corrections] == [1]
    assert backend.sample_calls[0][:2] == ("There is 1 red circle.", 3)
    c = result.corrections[0]
    assert c.level == 1
    assert [x.text for x in c.candidates] == ["There are 5 blue squares.", "There are 2 blue squares.",
                                             "There are 3 blue squares.", "There is a blue square."]
    assert c.candidates[0].original and not any(x.original for x in c.candidates[1:])
    assert [x.internal_confidence for x in c.candidates] == [0.10, 0.50, 0.95, 0.35]
    assert c.kept == 2 and c.replaced
    assert all(x.complete for x in c.candidates)
    # the rest was regenerated greedily from prefix + kept step; the old continuation is gone
    assert backend.greedy_calls == ["There is 1 red circle. There are 3 blue squares."]
    assert result.chain.text == "There is 1 red circle. There are 3 blue squares. So the answer is 3."
    assert result.chain.answer == "3"
    assert result.internal_levels == (4, 5, 4)
    # the budget was spent on the first low step: the old third step is gone, nothing else sampled
    assert result.compute.sampled_steps == 3 and len(backend.sample_calls) == 1
    assert result.compute.sampled_tokens == sum(backend.sampled_lengths) > 0  # as sampled, before the cut
    assert result.compute.regenerated_tokens > len(backend.enc("So the answer is 3."))  # + eos
    assert result.compute.scored_chains == 4 + 1  # the candidates, then the new chain


def test_budget_caps_the_samples_over_all_low_steps(examples, tokenizer):
    # no candidate beats the original: both low steps are examined, the second with what is left
    cands = {"There is 1 red circle.": ["There is a blue square."] * 3,
             "There is 1 red circle. There are 5 blue squares.": ["There are 2 blue squares.", "x", "y"]}
    table = {**TABLE, "There are 2 blue squares.": (1, 0.2), "There is a blue square.": (1, 0.05)}
    cfg = CorrectionConfig(threshold=2, samples=3, budget=4)
    sc, backend = corrector(tokenizer, cfg, candidates=cands, table=table)
    result = sc.run(examples[:1]).results[0]
    assert [(k, n) for k, n, _ in backend.sample_calls] == [
        ("There is 1 red circle.", 3), ("There is 1 red circle. There are 5 blue squares.", 1)]
    assert result.compute.sampled_steps == 4 == cfg.budget
    assert [c.step_index for c in result.corrections] == [1, 2]
    assert [len(c.candidates) for c in result.corrections] == [4, 2]  # original + samples
    # the second low step's original (0.30) beats its one candidate (0.20): nothing replaced
    assert not any(c.replaced for c in result.corrections) and result.corrections[1].kept == 0
    assert backend.greedy_calls == [] and result.compute.regenerated_tokens == 0
    assert result.chain.text == GREEDY
    # distinct, reproducible seeds per correction
    seeds = [s for _, _, s in backend.sample_calls]
    assert len(set(seeds)) == 2
    _, again = corrector(tokenizer, cfg, candidates=cands, table=table)
    SelfCorrector(again, TableScorer(table), None, cfg).run(examples[:1])
    assert [s for _, _, s in again.sample_calls] == seeds


def test_budget_zero_is_plain_greedy(examples, tokenizer):
    from mmboundary.generation import chain_record

    sc, backend = corrector(tokenizer, CorrectionConfig(threshold=5, budget=0))
    run = sc.run(examples[:2])
    assert backend.sample_calls == [] and backend.greedy_calls == []
    assert run.chains == [chain_record(ex, GREEDY) for ex in examples[:2]]
    assert run.internal_levels == [[4, 1, 2, 4]] * 2
    assert run.compute_summary()["sampled_steps"] == 0 and run.compute_summary()["extra_tokens"] == 0


def test_without_keep_original_the_best_sample_replaces_even_a_better_original(examples, tokenizer):
    table = {**TABLE, "There are 5 blue squares.": (2, 0.99)}  # low level, yet more confident than all
    cfg = CorrectionConfig(threshold=2, samples=3, budget=3)
    kept, _ = corrector(tokenizer, cfg, table=table)
    assert not kept.run(examples[:1]).results[0].corrections[0].replaced
    cfg = CorrectionConfig(threshold=2, samples=3, budget=3, keep_original=False)
    sc, _ = corrector(tokenizer, cfg, table=table)
    c = sc.run(examples[:1]).results[0].corrections[0]
    assert [x.text for x in c.candidates][c.kept] == "There are 3 blue squares."
    assert not any(x.original for x in c.candidates)


def test_expressed_signal_decides_with_the_statements(examples, tokenizer):
    greedy = ("There is 1 red circle, confidence 5/5. There are 5 blue squares, confidence 1/5. "
              "So the answer is 5, confidence 4/5.")
    cands = {"There is 1 red circle, confidence 5/5.": ["There are 3 blue squares, confidence 3/5."]}
    conts = {"There is 1 red circle, confidence 5/5. There are 3 blue squares, confidence 3/5.":
             "So the answer is 3, confidence 4/5."}
    table = {"There are 5 blue squares.": (4, 0.6), "There are 3 blue squares.": (4, 0.8)}
    cfg = CorrectionConfig(signal="expressed", threshold=1, samples=1, budget=1)
    sc, _ = corrector(tokenizer, cfg, greedy, cands, conts, table, mapper=NumericMapper())
    result = sc.run(examples[:1]).results[0]
    c = result.corrections[0]
    assert (c.step_index, c.level, c.kept) == (1, 1, 1)
    assert c.candidates[1].expressed_level == 3 and c.candidates[1].internal_level == 4
    assert result.expressed_levels == (5, 3, 4)
    assert result.chain.steps[1].statement == "confidence 3/5"
    # the same chain under the internal signal (every step at level 4): nothing is resampled
    sc, backend = corrector(tokenizer, cfg.model_copy(update={"signal": "internal"}), greedy, cands, conts, table,
                            mapper=NumericMapper())
    assert sc.run(examples[:1]).results[0].corrections == () and backend.sample_calls == []


def test_config_errors_name_the_field(tokenizer):
    with pytest.raises(ConfigError, match="threshold"):
        correction_config(threshold=9)
    assert correction_config(samples=2, budget=None).samples == 2
    backend = ScriptedBackend(tokenizer, GREEDY)
    with pytest.raises(RunError, match="internal confidence"):
        SelfCorrector(backend, None, None, CorrectionConfig(budget=2))
    with pytest.raises(ConfigError, match="statements"):
        SelfCorrector(backend, TableScorer({}), None, CorrectionConfig(signal="expressed"))
    SelfCorrector(backend, None, None, CorrectionConfig(budget=0))  # plain greedy needs no scorer


# --- a tiny random VLM with its real internal confidence --------------------------------------------

@pytest.fixture(scope="module")
def ctx():
    return tiny_scoring_context()


def test_tiny_vlm_budget_zero_equals_generate_texts(examples, tokenizer, ctx):
    from mmboundary.generation import generate_texts

    vlm = build_tiny(tokenizer, SPEC, seed=0)
    gen = GenerationConfig(max_new_tokens=14, batch_size=2)
    sc = SelfCorrector(VLMBackend(vlm, batch_size=2), InternalScorer(vlm, ctx), None,
                       CorrectionConfig(threshold=5, budget=0), max_new_tokens=14)
    run = sc.run(examples)
    assert [c.text for c in run.chains] == generate_texts(vlm, examples, gen)
    for c, lv in zip(run.chains, run.internal_levels):
        assert len(lv) == len(c.steps) and all(v is None or 1 <= v <= 5 for v in lv)


def test_tiny_vlm_candidates_ranked_by_internal_confidence(examples, tokenizer, ctx):
    vlm = build_tiny(tokenizer, SPEC, seed=0)
    cfg = CorrectionConfig(threshold=5, samples=2, budget=3, temperature=1.5, step_max_new_tokens=6)
    scorer = InternalScorer(vlm, ctx)
    sc = SelfCorrector(VLMBackend(vlm), scorer, None, cfg, max_new_tokens=14)
    run = sc.run(examples)
    examined = 0
    for ex, r in zip(examples, run.results):
        assert r.compute.sampled_steps <= cfg.budget
        assert r.compute.sampled_steps == sum(len(c.candidates) - 1 for c in r.corrections)
        for c in r.corrections:
            examined += 1
            assert c.candidates[0].original
            assert all(x.tokens <= cfg.step_max_new_tokens for x in c.candidates[1:])
            scores = [x.internal_confidence if x.internal_confidence is not None else -1.0 for x in c.candidates]
            assert scores[c.kept] == max(scores) and c.kept == scores.index(max(scores))
            for x in c.candidates:
                assert x.internal_level is None or x.internal_level == ctx.levels.level(x.internal_confidence)
        assert len(r.internal_levels) == len(r.chain.steps)
        # the recorded levels are those of the final chain on the model
        assert list(r.internal_levels) == (scorer.levels({ex.id: ex}, [r.chain])[0] or [None] * len(r.chain.steps))
    assert examined >= 2  # threshold 5: the first steps of every chain are examined
    again = SelfCorrector(VLMBackend(vlm), scorer, None, cfg, max_new_tokens=14).run(examples)
    assert again == run  # seeded sampling: the same result


def test_tiny_vlm_replaced_step_is_continued_from_its_exact_prefix(examples, tokenizer, ctx):
    vlm = build_tiny(tokenizer, SPEC, seed=0)
    backend = VLMBackend(vlm)
    # a greedy continuation from an exact prefix of the greedy ids is the rest of those ids
    ids = backend.greedy_batch(examples[:1], 14)[0]
    assert backend.greedy(examples[0], ids[:5], 14 - 5) == ids[5:]
    # without the original among the candidates, the best sample always replaces the step, and the
    # chain is regenerated greedily after it
    cfg = CorrectionConfig(threshold=5, samples=2, budget=2, temperature=1.5, step_max_new_tokens=4,
                           keep_original=False)
    run = SelfCorrector(backend, InternalScorer(vlm, ctx), None, cfg, max_new_tokens=14).run(examples)
    for r in run.results:
        c = r.corrections[0]
        assert c.step_index == 0 and c.replaced
        kept = c.candidates[c.kept]
        assert r.chain.text.startswith(kept.text)
        if not kept.complete:  # cut at 4 tokens: the greedy continuation takes the rest
            assert r.compute.regenerated_tokens > 0
            assert kept.tokens + r.compute.regenerated_tokens <= 14  # the response stays within max_new_tokens

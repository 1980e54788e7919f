"""Baselines (`mmboundary.baselines`): each one on a tiny random VLM and 3 benchmark examples
gives a confidence in [0, 1] for every step and the answer; hand-computed self-consistency and
multisample values from a fake model with canned chains; DPV / DPS "not applicable" on the tiny
model and parsed from canned instruction-following outputs; the report equals the evaluate
stage's columns."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from _helpers import tiny_spec, tiny_tokenizer
from mmboundary.baselines import (
    BaselineInputs,
    BaselineResult,
    DPSConfig,
    DPVConfig,
    ExactSimilarity,
    ExampleConfidence,
    InternalConfig,
    MultisampleConfig,
    SCConfig,
    baseline_report,
    confidence_columns,
    multisample_confidences,
    run_baseline,
    run_dps,
    run_dpv,
    run_internal,
    run_multisample,
    run_sc,
    sc_confidences,
    sc_equivalence,
)
from mmboundary.confidence.fusion import FusionConfig, Levels, Normalizer, SignalRange, level_probability
from mmboundary.config import GenerationConfig
from mmboundary.errors import ConfigError
from mmboundary.evaluation.expressed import confidence_report
from mmboundary.generation import chain_record
from mmboundary.models.factory import build_tiny
from mmboundary.statements.chain_format import write_chain
from mmboundary.statements.mapping import NumericMapper, StatementMapper

SPEC = tiny_spec()
SHORT = GenerationConfig(max_new_tokens=24, batch_size=8)

# `examples` (three benchmark examples) is a fixture of conftest.py.


@pytest.fixture(scope="module")
def tiny(examples):
    return build_tiny(tiny_tokenizer(examples), SPEC, seed=0)


@pytest.fixture(scope="module")
def fitted():
    """A normaliser, levels and fusion over the two cheap signals (no CLIP, no sentence encoder)."""
    normalizer = Normalizer(ranges={"lnlp": SignalRange(lo=1.0, hi=2000.0, count=10),
                                    "mte": SignalRange(lo=0.0, hi=7.0, count=10)})
    levels = Levels(kind="meanstd", thresholds=(0.2, 0.4, 0.6, 0.8), mean=0.5, std=0.2, count=10)
    return normalizer, levels, FusionConfig(ablate=["token_sar", "clip_score"])


# --- a fake model with canned responses -------------------------------------------------------------

class WordTokenizer:
    """Token = whitespace-separated word; decoding joins words with single spaces."""

    def __init__(self):
        self.vocab: list[str] = []
        self.ids: dict[str, int] = {}

    def encode(self, text: str) -> list[int]:
        out = []
        for w in text.split():
            if w not in self.ids:
                self.ids[w] = len(self.vocab)
                self.vocab.append(w)
            out.append(self.ids[w])
        return out

    def batch_decode(self, ids, skip_special_tokens=True, clean_up_tokenization_spaces=False):
        return [" ".join(self.vocab[i] for i in x) for x in ids]


class CannedVLM:
    """`generate_ids` answers a question (keyed by the first line of the prompt's user text) with
    `greedy[key]`, or with the next of `sampled[key]` when sampling. Records the questions."""

    def __init__(self, greedy, sampled=None, kind="pretrained", **attrs):
        self.greedy, self.sampled, self.kind = greedy, sampled or {}, kind
        self.tokenizer = WordTokenizer()
        self.questions: list[str] = []
        self.used = {k: 0 for k in self.sampled}
        for k, v in attrs.items():
            setattr(self, k, v)

    def generate_ids(self, questions, choices_list, images, max_new_tokens=128, do_sample=False, temperature=1.0):
        out = []
        for q in questions:
            self.questions.append(q)
            key = q.split("\n")[0]
            if do_sample:
                text = self.sampled[key][self.used[key]]
                self.used[key] += 1
            else:
                text = self.greedy[key]
            out.append(self.tokenizer.encode(text))
        return out


def assert_unit_confidences(result: BaselineResult, n_examples: int):
    assert result.applicable and len(result.examples) == n_examples
    for ex in result.examples:
        assert len(ex.step_confidences) == len(ex.chain.steps) == len(ex.step_fallback)
        assert all(0.0 <= p <= 1.0 for p in ex.step_confidences)
        assert 0.0 <= ex.answer_confidence <= 1.0


# --- each baseline on the tiny model ----------------------------------------------------------------

def test_internal_on_the_tiny_model(tiny, examples, fitted):
    from mmboundary.confidence.estimator import estimate_signals
    from mmboundary.confidence.fusion import is_answer_step

    normalizer, levels, fusion = fitted
    kw = dict(normalizer=normalizer, levels=levels, fusion=fusion)
    by_level = run_internal(tiny, examples, InternalConfig(generation=SHORT), **kw)
    fused = run_internal(tiny, examples, InternalConfig(generation=SHORT, readout="continuous"), **kw)
    alone = run_internal(tiny, examples, InternalConfig(generation=SHORT, source="lnlp"), **kw)
    for r in (by_level, fused, alone):
        assert_unit_confidences(r, 3)
        assert r.cost.sequences == 3 and 0 < r.cost.tokens <= 3 * 24
    assert (by_level.variant, fused.variant, alone.variant) == ("fused-level", "fused", "lnlp")
    assert by_level.steps > 0 and by_level.fallback_steps == 0
    # the level readout is p(level of the fused confidence), the same chains every time (greedy)
    for a, b in zip(by_level.examples, fused.examples):
        assert a.chain == b.chain
        assert list(a.step_confidences) == [level_probability(levels.level(c)) for c in b.step_confidences]
        assert a.answer_confidence == a.step_confidences[-1]
    # one signal alone: its normalised confidence on every step that does not state the answer
    chains = [e.chain for e in alone.examples]
    signals = estimate_signals(tiny, None, None, examples, chains, signals=("lnlp",), progress=False)
    steps = [(p, s) for e in alone.examples for p, s in zip(e.step_confidences, e.chain.steps)]
    checked = 0
    for (p, step), sig in zip(steps, signals):
        if not is_answer_step(step.text):
            assert p == pytest.approx(normalizer.confidence("lnlp", sig.lnlp))
            checked += 1
    assert checked > 0


def test_internal_needs_fitted_signals(tiny, examples, fitted):
    normalizer, levels, fusion = fitted
    with pytest.raises(ValueError, match="no range for"):
        run_internal(tiny, examples, InternalConfig(source="token_sar"), normalizer=normalizer, levels=levels,
                     fusion=fusion)
    with pytest.raises(ValidationError, match="needs source 'fused'"):
        InternalConfig(source="mte", readout="level")


def test_sc_on_the_tiny_model_is_seeded(tiny, examples):
    cfg = SCConfig(generation=SHORT, n_samples=2, seed=3)
    a = run_sc(tiny, examples, cfg, similarity=ExactSimilarity())
    b = run_sc(tiny, examples, cfg, similarity=ExactSimilarity())
    assert_unit_confidences(a, 3)
    assert a == b  # same seed: same samples, same confidences
    for ex in a.examples:
        assert len(ex.samples) == 2 and ex.cost.sequences == 3
        assert set(ex.step_confidences) <= {0.0, 0.5, 1.0} and ex.answer_confidence in (0.0, 0.5, 1.0)
    other = run_sc(tiny, examples, cfg.model_copy(update={"seed": 4}), similarity=ExactSimilarity())
    assert [s.text for e in other.examples for s in e.samples] != [s.text for e in a.examples for s in e.samples]


def test_multisample_on_the_tiny_model_counts_its_fallbacks(tiny, examples):
    r = run_multisample(tiny, examples, MultisampleConfig(generation=SHORT, n_samples=2),
                        mapper=NumericMapper(), similarity=ExactSimilarity())
    assert_unit_confidences(r, 3)
    assert r.parse.chains == 9
    assert r.parse.steps == sum(len(e.chain.steps) + sum(len(s.steps) for s in e.samples) for e in r.examples)
    for ex in r.examples:
        for p, fb, step in zip(ex.step_confidences, ex.step_fallback, ex.chain.steps):
            if fb:
                assert p == 0.5
            else:  # a mean of level probabilities
                assert 0.1 <= p <= 0.9
    report = baseline_report(r)
    assert report.fallback_steps == r.fallback_steps == sum(sum(e.step_fallback) for e in r.examples)
    assert report.confidence.parsed_share == pytest.approx(1 - r.fallback_steps / r.steps)


def test_dpv_and_dps_do_not_apply_to_the_tiny_model(tiny, examples):
    for result in (run_dpv(tiny, examples), run_dps(tiny, examples, mapper=None)):
        assert not result.applicable and result.examples == ()
        assert "instructions" in result.reason and "tiny" in result.reason
        report = baseline_report(result)
        assert not report.applicable and report.confidence is None
        assert report.row()["reason"] == result.reason and report.row()["ece"] is None
    fake = CannedVLM({}, kind="tiny")
    assert not run_dpv(fake, examples).applicable and fake.questions == []  # nothing generated


# --- self-consistency by hand -----------------------------------------------------------------------

GREEDY = "There is 1 red circle. There are 2 blue squares. So the answer is 3."
SAMPLES = [
    GREEDY,
    "There is 1 red circle. There are 3 blue squares. So the answer is 3.",
    "There are 2 blue squares. So the answer is 3.",
    "So the answer is 3, maybe.",
    "There is one red circle. So the answer is three.",
    "",
]


def test_sc_agreement_by_hand(examples):
    ex = examples[0]
    fake = CannedVLM({ex.question: GREEDY}, {ex.question: SAMPLES})
    sim = ExactSimilarity()  # as the encoder: the given similarity at the threshold
    r = run_sc(fake, [ex], SCConfig(n_samples=6, threshold=0.5, equivalence="encoder"), similarity=sim)
    (got,) = r.examples
    assert [s.text for s in got.chain.steps] == ["There is 1 red circle.", "There are 2 blue squares.",
                                                 "So the answer is 3."]
    # step 1 in samples 1, 2, 5 ("one" reads as 1); step 2 in 1, 3; step 3 in 1, 2, 3, 5 (not "3, maybe.")
    assert got.step_confidences == pytest.approx((3 / 6, 2 / 6, 4 / 6))
    # answers: 3, 3, 3, 3, 3 ("three"), none -> 5 of 6
    assert got.answer_confidence == pytest.approx(5 / 6)
    assert got.step_fallback == (False,) * 3 and not got.answer_fallback
    assert got.cost.sequences == 7
    assert got.cost.tokens == sum(len(t.split()) for t in [GREEDY, *SAMPLES])
    assert sim.calls == 1


class Lenient:
    """A similarity that rates every pair of sentences 0.9, as MiniLM rates "There are 2 blue
    squares." and "There are 3 blue squares." (0.885)."""

    def __init__(self):
        self.calls = 0

    def pairwise(self, pairs):
        import numpy as np

        self.calls += 1
        return np.full(len(pairs), 0.9)


def test_sc_exact_equivalence_by_hand(examples):
    """On the built-in benchmark SC's samples agree by the dataset's exact equivalence ("2" and
    "two" agree, "2" and "3" do not), whatever a sentence encoder says; the encoder stays a named
    option, and the result records which equivalence was used."""
    ex = examples[0]
    greedy = "There are 2 blue squares. So the answer is 2."
    samples = ["There are two blue squares. So the answer is two.", "There are 3 blue squares. So the answer is 3."]
    assert ex.scene is not None and sc_equivalence(SCConfig(), [ex]) == "exact"
    assert sc_equivalence(SCConfig(), [ex.model_copy(update={"scene": None})]) == "encoder"
    assert sc_equivalence(SCConfig(equivalence="exact"), [ex.model_copy(update={"scene": None})]) == "exact"
    lenient = Lenient()
    r = run_sc(CannedVLM({ex.question: greedy}, {ex.question: samples}), [ex], SCConfig(n_samples=2),
               similarity=lenient)
    (got,) = r.examples
    assert got.step_confidences == (0.5, 0.5) and got.answer_confidence == 0.5  # "two" agrees, "3" does not
    assert r.config["equivalence"] == "exact" and lenient.calls == 0
    # without a similarity: the exact equivalence needs none
    assert run_sc(CannedVLM({ex.question: greedy}, {ex.question: samples}), [ex], SCConfig(n_samples=2)) == r
    # the encoder: every sample's step "agrees" at 0.9 >= 0.65; answers are still compared exactly
    enc = run_sc(CannedVLM({ex.question: greedy}, {ex.question: samples}), [ex],
                 SCConfig(n_samples=2, equivalence="encoder"), similarity=lenient)
    assert enc.examples[0].step_confidences == (1.0, 1.0) and enc.examples[0].answer_confidence == 0.5
    assert enc.config["equivalence"] == "encoder" and lenient.calls == 1
    with pytest.raises(ConfigError, match="encoder equivalence needs a sentence similarity"):
        run_sc(CannedVLM({ex.question: greedy}, {ex.question: samples}), [ex],
               SCConfig(n_samples=2, equivalence="encoder"))
    with pytest.raises(ValidationError, match="equivalence"):
        SCConfig(equivalence="minilm")


class TableSimilarity:
    def __init__(self, table):
        self.table = table

    def pairwise(self, pairs):
        import numpy as np

        return np.array([self.table.get((a, b), 0.0) for a, b in pairs])


def test_sc_threshold_is_inclusive_and_no_answer_agrees_with_nothing(examples):
    ex = examples[0]
    greedy = chain_record(ex, "Alpha holds. Beta holds.")
    samples = [chain_record(ex, "Gamma holds."), chain_record(ex, "Delta holds.")]
    sim = TableSimilarity({("Alpha holds.", "Gamma holds."): 0.65, ("Beta holds.", "Delta holds."): 0.6499})
    (got,) = sc_confidences([greedy], [samples], sim, threshold=0.65)
    assert got.step_confidences == (0.5, 0.0)
    assert greedy.answer is None and got.answer_confidence == 0.0
    with pytest.raises(ValueError, match="no samples"):
        sc_confidences([greedy], [[]], sim, threshold=0.65)


# --- multisample by hand ----------------------------------------------------------------------------

MS_GREEDY = ("There is 1 red circle, confidence 5/5. There are 2 blue squares, who knows. "
             "So the answer is 3, confidence 4/5.")
MS_SAMPLES = [
    "There is 1 red circle, confidence 3/5. There are 2 blue squares, who knows. So the answer is 3, confidence 5/5.",
    "There is 1 red circle, confidence 4/5. So the answer is 4, confidence 2/5.",
    "There are 2 blue squares. So the answer is 3.",
]


def test_multisample_averaging_by_hand(examples):
    ex = examples[0]
    fake = CannedVLM({ex.question: MS_GREEDY}, {ex.question: MS_SAMPLES})
    cfg = MultisampleConfig(n_samples=3, threshold=0.5)
    r = run_multisample(fake, [ex], cfg, mapper=NumericMapper(), similarity=ExactSimilarity())
    (got,) = r.examples
    assert [s.level for s in got.chain.steps] == [5, None, 4]
    # step 1: own 0.9, samples 0.5 and 0.7; step 2: no parsed vote -> fallback; step 3: own 0.7,
    # sample 1's 0.9 (sample 2 says 4, sample 3's match is unparsed)
    assert got.step_confidences == pytest.approx(((0.9 + 0.5 + 0.7) / 3, 0.5, (0.7 + 0.9) / 2))
    assert got.step_fallback == (False, True, False)
    # Avg-Conf: answer 3 with 0.7 (own) and 0.9, answer 4 with 0.3; sample 3's last step unparsed
    assert got.answer_confidence == pytest.approx(1.6 / 1.9) and not got.answer_fallback
    assert (r.parse.chains, r.parse.steps, r.parse.parsed, r.parse.no_comma, r.parse.unmapped) == (4, 10, 6, 2, 2)
    assert r.fallback_steps == 1
    # without the judged chain's own votes
    (alone,) = multisample_confidences([got.chain], [got.samples], ExactSimilarity(),
                                       cfg.model_copy(update={"include_judged": False}))
    assert alone.step_confidences == pytest.approx(((0.5 + 0.7) / 2, 0.5, 0.9))
    assert alone.answer_confidence == pytest.approx(0.9 / 1.2)


def test_multisample_fallback_value_is_configurable(examples):
    ex = examples[0]
    fake = CannedVLM({ex.question: "No statement here."}, {ex.question: ["Nothing either."]})
    r = run_multisample(fake, [ex], MultisampleConfig(n_samples=1, fallback=0.3), mapper=NumericMapper(),
                        similarity=ExactSimilarity())
    (got,) = r.examples
    assert got.step_confidences == (0.3,) and got.step_fallback == (True,)
    assert got.answer_confidence == 0.0 and not got.answer_fallback  # no answer stated: 0, not a fallback


# --- DPV / DPS on canned instruction-following outputs ----------------------------------------------

def cycled(items, n):
    return [items[i % len(items)] for i in range(n)]


def reference_response(example, statements):
    """The example's reference chain, step i followed by `statements[i]` (cycled)."""
    return write_chain([s.text for s in example.chain], cycled(statements, len(example.chain)))


def test_dpv_parses_canned_numeric_confidences(examples):
    numeric = ["confidence: 4/5", "Confidence: 2 / 5", "not sure", "confidence: 5/5", "confidence: 1/5"]
    canned = {ex.question: reference_response(ex, numeric) for ex in examples}
    fake = CannedVLM(canned)
    r = run_dpv(fake, examples)
    assert_unit_confidences(r, 3)
    expected_levels = {"confidence: 4/5": 4, "Confidence: 2 / 5": 2, "not sure": None, "confidence: 5/5": 5,
                       "confidence: 1/5": 1}
    for ex, got in zip(examples, r.examples):
        levels = [expected_levels[s] for s in cycled(numeric, len(ex.chain))]
        assert [s.level for s in got.chain.steps] == levels
        assert list(got.step_confidences) == [0.5 if lv is None else level_probability(lv) for lv in levels]
        assert list(got.step_fallback) == [lv is None for lv in levels]
        for step, ref, lv in zip(got.chain.steps, ex.chain, levels):
            if lv is not None:  # the reference step, its statement removed: checked true
                assert step.text == ref.text and step.correct
            else:  # unparsed: the whole sentence is the step (chain_format's rule), outside the checker's language
                assert step.text.endswith(", not sure.") and step.correct is False
        assert got.answer_confidence == got.step_confidences[-1]
    assert r.parse.parsed == r.parse.steps - r.fallback_steps
    # the prompt: the question, then the instruction asking for "confidence: N/5"
    assert len(fake.questions) == 3
    assert fake.questions[0].startswith(examples[0].question) and '"confidence: N/5"' in fake.questions[0]


def test_dps_parses_canned_statements_with_the_pool_mapper(examples):
    ex = examples[0]
    statements = ["with total certainty", "but I am not sure", "and I believe this is right", None, None, None]
    canned = {ex.question: reference_response(ex, statements)}
    fake = CannedVLM(canned, kind="smol", instruction_following=True)  # the model's own attribute decides
    mapper = StatementMapper()
    r = run_dps(fake, [ex], mapper=mapper)
    (got,) = r.examples
    levels = [5, 2, 4, None, None, None][:len(ex.chain)]
    assert [s.level for s in got.chain.steps] == levels
    assert list(got.step_confidences) == [0.5 if lv is None else level_probability(lv) for lv in levels]
    assert mapper._encoder is None  # exact pool statements: no sentence encoder was needed
    assert '"with total certainty"' in fake.questions[0]


def test_applicability_is_explicit(examples):
    ex = examples[0]
    canned = {ex.question: reference_response(ex, ["confidence: 3/5"])}
    assert run_dpv(CannedVLM(canned, kind="tiny"), [ex], DPVConfig(instruction_following=True)).applicable
    off = run_dpv(CannedVLM(canned), [ex], DPVConfig(instruction_following=False))
    assert not off.applicable and "instruction_following=False" in off.reason
    with pytest.raises(ConfigError, match="instruction_following"):
        run_dpv(CannedVLM(canned, kind="mystery"), [ex])
    assert run_dps(CannedVLM(canned, kind="mystery"), [ex], DPSConfig(instruction_following=False),
                   mapper=None).reason


# --- report, records, dispatch ----------------------------------------------------------------------

def test_report_without_fallbacks_equals_the_evaluate_columns(examples):
    numeric = ["confidence: 4/5", "no idea", "confidence: 2/5", "confidence: 5/5", "confidence: 1/5"]
    # wrong steps too: the first step of each response is replaced by a false claim
    canned = {}
    for ex in examples:
        steps = ["There are 9 green squares."] + [s.text for s in ex.chain[1:]]
        canned[ex.question] = write_chain(steps, cycled(numeric, len(steps)))
    r = run_dpv(CannedVLM(canned), examples)
    chains = [e.chain for e in r.examples]
    assert any(s.correct is False for c in chains for s in c.steps) and any(s.correct for c in chains for s in c.steps)
    expected = confidence_report(chains, [[s.level for s in c.steps] for c in chains], f1=0.25)
    assert confidence_columns(r, include_fallback=False, f1=0.25) == expected
    full = confidence_columns(r, include_fallback=True)
    assert full.steps_scored == expected.steps_scored + r.fallback_steps
    assert full.parsed_share == expected.parsed_share


def test_saved_result_gives_the_same_report(examples, tmp_path):
    ex = examples[0]
    r = run_sc(CannedVLM({ex.question: GREEDY}, {ex.question: SAMPLES}), [ex], SCConfig(n_samples=6),
               similarity=ExactSimilarity())
    loaded = BaselineResult.load(r.save(tmp_path / "sc.json"))
    assert loaded == r and baseline_report(loaded) == baseline_report(r)
    (tmp_path / "bad.json").write_text('{"method": "sc", "examples": [1]}')
    with pytest.raises(ValueError, match="bad.json"):
        BaselineResult.load(tmp_path / "bad.json")


def test_records_refuse_inconsistent_values(examples):
    chain = chain_record(examples[0], GREEDY)
    with pytest.raises(ValidationError, match="in \\[0, 1\\]"):
        ExampleConfidence(example_id=chain.example_id, chain=chain, step_confidences=(0.5, 1.2, 0.5),
                          step_fallback=(False,) * 3, answer_confidence=0.5)
    with pytest.raises(ValidationError, match="3 steps but 2 step confidences"):
        ExampleConfidence(example_id=chain.example_id, chain=chain, step_confidences=(0.5, 0.5),
                          step_fallback=(False,) * 2, answer_confidence=0.5)
    with pytest.raises(ValidationError, match="must say why"):
        BaselineResult(method="dpv", applicable=False)


def test_run_baseline_names_what_is_missing(tiny, examples, fitted):
    with pytest.raises(ConfigError, match="needs similarity"):
        run_baseline("sc", tiny, examples, {"equivalence": "encoder"})
    with pytest.raises(ConfigError, match="unknown baseline"):
        run_baseline("sayself", tiny, examples)
    with pytest.raises(ConfigError, match="n_samples"):
        run_baseline("sc", tiny, examples, {"n_samples": 0}, BaselineInputs(similarity=ExactSimilarity()))
    assert not run_baseline("dps", tiny, examples).applicable  # the mapper is not needed then
    normalizer, levels, fusion = fitted
    r = run_baseline("internal", tiny, examples[:1], {"generation": {"max_new_tokens": 16}},
                     BaselineInputs(normalizer=normalizer, levels=levels, fusion=fusion))
    assert_unit_confidences(r, 1)

"""Statements (method.md sections 1 and 3): the pool, forward and backward mapping, the numeric
ablation, and the response format writer/parser."""

from __future__ import annotations

import numpy as np
import pytest

from mmboundary.statements.chain_format import (
    ParsedChain,
    parse_chain,
    parse_chains,
    summarize,
    write_chain,
    write_chain_with_levels,
    write_step,
)
from mmboundary.statements.mapping import DEFAULT_MIN_SIMILARITY, NumericMapper, StatementMapper, make_mapper
from mmboundary.statements.pool import LEVELS, all_statements, default_pool, normalise

# Confidence statements that are NOT in the pool, written for this test before the mapper and the
# pool were tuned (the tuning used a separate set of paraphrases). Levels as a reader would judge
# them; several sit on a boundary between two levels, which is what the within-one rate allows for.
PARAPHRASES: dict[int, list[str]] = {
    1: [
        'with low confidence',
        'with no confidence at all',
        'this is a wild guess',
        'but I really have no idea',
        'though I am just guessing here',
        'but I am very unsure',
        'but I doubt this is right',
        "but don't trust this",
        'but I am highly uncertain',
        'with very little certainty',
        'but I have no clue',
        'and I am not confident at all',
        'but this is far from certain',
    ],
    2: [
        'but I am not completely certain',
        "but I'm a little unsure",
        'though there is some doubt',
        'but this should be verified',
        'but I might be mistaken',
        'though I am not fully convinced',
        'but I have some reservations',
        'with some hesitation',
        'but this is open to question',
        'though I am slightly doubtful',
        "but I'm not totally sure",
        'with limited confidence',
    ],
    3: [
        'and this is probably right',
        "and I'm fairly confident",
        'and it seems likely',
        'with moderate confidence',
        'and I think so',
        'and this sounds reasonable',
        'and it is likely true',
        'and I would say this is right',
        'and this looks plausible',
        'with reasonable confidence',
        'and I suspect this is correct',
        'and it is probably so',
    ],
    4: [
        "and I'm confident about this",
        'and I am quite sure',
        'with high confidence',
        'and this is most likely correct',
        'and I have few doubts',
        'and I trust this',
        "and I'm pretty certain",
        'and this is very probably true',
        'and I feel sure about this',
        'and I am mostly certain',
        'and I firmly believe this is right',
        'with strong confidence',
    ],
    5: [
        'I am absolutely sure',
        'with absolute certainty',
        'and there is no question about it',
        'and this is undoubtedly true',
        'and I am entirely certain',
        'with full confidence',
        'and I have zero doubt',
        'and this is without a doubt correct',
        "and I'm a hundred percent certain",
        'and I am totally sure',
        'and this is unquestionably right',
        'with complete certainty',
    ],
}

# Tails of ordinary sentences after a comma: no confidence statement, must stay unparsed.
NOT_STATEMENTS = [
    "so the answer is 30",
    "which is on the left",
    "including two cars and a bus",
    "so there are 4 in total",
    "because the sign says stop",
    "while a man holds an umbrella",
    "and it is brown",
]


@pytest.fixture(scope="module")
def encoder():
    from mmboundary.confidence.similarity import SentenceSimilarity

    return SentenceSimilarity(device="cpu")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """Pool embeddings shared by the mappers of this module (each would embed the pool again)."""
    return tmp_path_factory.mktemp("statement-cache")


@pytest.fixture(scope="module")
def mapper(encoder, cache_dir):
    return StatementMapper(encoder=encoder, cache_dir=cache_dir)


class CountingMapper:
    """Wraps a mapper and counts its `levels_of` calls."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = 0

    def statement(self, level, rng=None):
        return self.inner.statement(level, rng)

    def statements(self, levels, rng=None):
        return self.inner.statements(levels, rng)

    def level_of(self, text):
        return self.levels_of([text])[0]

    def levels_of(self, texts):
        self.calls += 1
        return self.inner.levels_of(texts)


# --- pool -----------------------------------------------------------------------------------------

def test_pool_shape():
    pool = default_pool()
    assert sorted(pool) == list(LEVELS)
    for level, statements in pool.items():
        assert len(statements) >= 12
        assert len(set(statements)) == len(statements)
        for s in statements:
            assert "," not in s and s == s.strip() and s[-1] not in ".!?;:"
    keys = [normalise(s) for s in all_statements()]
    assert len(set(keys)) == len(keys)


# --- forward mapping ------------------------------------------------------------------------------

def test_forward_is_seeded_and_in_pool():
    m = StatementMapper()  # forward mapping never loads the encoder
    levels = [1, 2, 3, 4, 5] * 20
    a = m.statements(levels, 7)
    b = m.statements(levels, np.random.default_rng(7))
    c = m.statements(levels, 8)
    assert a == b and a != c
    assert m._encoder is None
    for level, s in zip(levels, a):
        assert s in default_pool()[level]
    gen = np.random.default_rng(3)
    first = [m.statement(4, gen) for _ in range(5)]
    gen = np.random.default_rng(3)
    assert first == [m.statement(4, gen) for _ in range(5)]
    assert len(set(m.statements([5] * 200, 0))) > 10  # draws cover the pool of the level
    for bad in (0, 6, 2.5, True):
        with pytest.raises(ValueError):
            m.statement(bad, 0)


# --- backward mapping -----------------------------------------------------------------------------

def test_pool_round_trip(mapper, encoder, cache_dir):
    texts = all_statements()
    expected = [lv for lv in LEVELS for _ in default_pool()[lv]]
    assert mapper.levels_of(texts) == expected
    # Without the exact-match shortcut the fitted classifier alone still gets every pool statement.
    no_shortcut = StatementMapper(encoder=encoder, exact_match=False, cache_dir=cache_dir)
    assert no_shortcut.levels_of(texts) == expected
    # Case, spacing and final punctuation do not matter.
    assert mapper.level_of("  With total certainty. ") == 5


def test_paraphrases_not_in_pool():
    keys = {normalise(s) for s in all_statements()}
    for level, texts in PARAPHRASES.items():
        assert len(texts) >= 8
        for t in texts:
            assert normalise(t) not in keys, t
    assert sum(len(v) for v in PARAPHRASES.values()) >= 40


def _rates(m, paraphrases):
    texts = [t for lv in LEVELS for t in paraphrases[lv]]
    truth = np.array([lv for lv in LEVELS for _ in paraphrases[lv]])
    got = m.levels_of(texts)
    pred = np.array([0 if g is None else g for g in got])  # unparsed counts as wrong
    exact = float(np.mean(pred == truth))
    within = float(np.mean(np.abs(pred - truth) <= 1))
    misses = [(t, y, g) for t, y, g in zip(texts, truth, got) if g != y]
    return exact, within, misses


def test_backward_mapping_on_unseen_paraphrases(mapper):
    exact, within, misses = _rates(mapper, PARAPHRASES)
    print(f"\nparaphrases: exact {exact:.3f}, within one {within:.3f}; misses: {misses}")
    assert within >= 0.9
    assert exact >= 0.7
    # The must-map examples of method.md section 3.
    assert mapper.level_of("I am absolutely sure") == 5
    assert mapper.level_of("this is a wild guess") == 1
    assert mapper.level_of("with low confidence") in (1, 2)
    assert mapper.level_of("with no confidence at all") in (1, 2)


def test_nearest_neighbour_option(encoder, cache_dir):
    nearest = StatementMapper(encoder=encoder, method="nearest", cache_dir=cache_dir)
    knn = StatementMapper(encoder=encoder, method="knn", cache_dir=cache_dir)
    for m in (nearest, knn):
        assert m.levels_of(all_statements()[:5]) == [1] * 5
        exact, within, _ = _rates(m, PARAPHRASES)
        print(f"\n{m.method}: exact {exact:.3f}, within one {within:.3f}")
        assert within >= 0.8  # a weaker, but sensible, mapping


def test_non_statements_unparsed(mapper, cache_dir):
    assert mapper.levels_of(NOT_STATEMENTS) == [None] * len(NOT_STATEMENTS)
    assert mapper.levels_of(["", "   "]) == [None, None]
    assert mapper.levels_of([]) == []
    strict = StatementMapper(encoder=mapper.encoder, min_similarity=0.99, cache_dir=cache_dir)
    assert strict.level_of("and I am entirely certain") is None
    assert strict.level_of("with total certainty") == 5  # exact matches need no similarity


def test_batched_one_encoder_call(mapper, encoder):
    mapper.pool_embeddings()
    before = encoder.calls
    texts = [t for lv in LEVELS for t in PARAPHRASES[lv]] + NOT_STATEMENTS
    batched = mapper.levels_of(texts)
    assert encoder.calls == before + 1
    assert batched == [mapper.level_of(t) for t in texts]
    before = encoder.calls
    mapper.levels_of(all_statements())  # exact matches are not embedded
    assert encoder.calls == before


def test_pool_embeddings_disk_cache(encoder, tmp_path):
    first = StatementMapper(encoder=encoder, cache_dir=tmp_path)
    emb = first.pool_embeddings()
    assert len(list(tmp_path.glob("pool-emb-*.npy"))) == 1
    before = encoder.calls
    second = StatementMapper(encoder=encoder, cache_dir=tmp_path)
    np.testing.assert_allclose(second.pool_embeddings(), emb)
    assert encoder.calls == before
    other_pool = {lv: default_pool()[lv][:3] for lv in LEVELS}
    StatementMapper(other_pool, encoder=encoder, cache_dir=tmp_path).pool_embeddings()
    assert len(list(tmp_path.glob("pool-emb-*.npy"))) == 2


# --- numeric variant ------------------------------------------------------------------------------

def test_numeric_mapper():
    m = NumericMapper()
    assert m.statement(4) == "confidence 4/5"
    assert m.statements([1, 5], rng=3) == ["confidence 1/5", "confidence 5/5"]
    assert m.levels_of(["confidence 4/5", "Confidence 2 / 5", "confidence 3/5.", " confidence 1/5 "]) == [4, 2, 3, 1]
    assert m.levels_of(["confidence 0/5", "confidence 6/5", "confidence 4/10", "confidence: 4/5",
                        "and I am sure", "my confidence 4/5", "confidence 4/5 indeed", ""]) == [None] * 8
    with pytest.raises(ValueError):
        m.statement(7)
    chain = write_chain_with_levels(["There are 3 circles.", "So the answer is 3."], [2, 5], m)
    assert chain == "There are 3 circles, confidence 2/5. So the answer is 3, confidence 5/5."
    parsed = parse_chain(chain, m)
    assert parsed.levels == [2, 5]
    assert parsed.step_texts == ["There are 3 circles.", "So the answer is 3."]


def test_make_mapper():
    assert isinstance(make_mapper("statement"), StatementMapper)
    assert make_mapper("statement", min_similarity=None).min_similarity == DEFAULT_MIN_SIMILARITY
    assert make_mapper("statement", min_similarity=0.6, method="nearest").method == "nearest"
    numeric = make_mapper("numeric", min_similarity=0.6)  # statement options are ignored
    assert isinstance(numeric, NumericMapper)
    assert make_mapper("numeric", template="conf {level}/5").statement(3) == "conf 3/5"
    with pytest.raises(ValueError):
        make_mapper("words")
    with pytest.raises(TypeError):
        make_mapper("numeric", bogus=1)


# --- response format ------------------------------------------------------------------------------

def test_write_step():
    assert write_step("There are 3 red circles.", "and I believe this is right") == \
        "There are 3 red circles, and I believe this is right."
    assert write_step("Is it red?", "but I am not sure") == "Is it red, but I am not sure?"
    assert write_step("No period here", "with total certainty") == "No period here, with total certainty."
    assert write_step("A plain step", None) == "A plain step."
    with pytest.raises(ValueError):
        write_step("Step.", "and, sure")
    with pytest.raises(ValueError):
        write_step("Step.", "and sure.")
    with pytest.raises(ValueError):
        write_chain(["a."], [])


def test_chain_round_trip(mapper):
    steps = [
        "The bar is 3.5 cm long.",
        "The cake, which has candles on it, shows the number 30.",
        "The man wears a hat.",
        "So the answer is thirty.",
    ]
    statements = ["and I believe this is right", "with total certainty", None, "but I am not sure"]
    response = write_chain(steps, statements)
    assert response == ("The bar is 3.5 cm long, and I believe this is right. The cake, which has "
                        "candles on it, shows the number 30, with total certainty. The man wears a "
                        "hat. So the answer is thirty, but I am not sure.")
    chain = parse_chain(response, mapper)
    assert isinstance(chain, ParsedChain)
    assert chain.step_texts == steps
    assert chain.levels == [4, 5, None, 2]
    assert [s.statement for s in chain.steps] == statements
    assert [s.failure for s in chain.steps] == [None, None, "no_comma", None]
    assert (chain.n_parsed, chain.n_failures, chain.n_no_comma, chain.n_unmapped) == (3, 1, 1, 0)
    for step in chain.steps:
        s, e = step.span
        if step.statement is not None:
            a, b = step.statement_span
            assert response[a:b] == step.statement
            assert response[step.body_span[0]:step.body_span[1]] + response[b:e] == step.text
        else:
            assert response[s:e] == step.text and step.statement_span is None


def test_forward_then_parse(mapper):
    steps = [f"Step number {i} holds 2.5 items." for i in range(10)]
    levels = [1, 2, 3, 4, 5, 5, 4, 3, 2, 1]
    response = write_chain_with_levels(steps, levels, mapper, rng=11)
    assert response == write_chain_with_levels(steps, levels, mapper, rng=np.random.default_rng(11))
    chain = parse_chain(response, mapper)
    assert chain.levels == levels and chain.step_texts == steps


def test_parse_failures_and_empty(mapper):
    response = ("There is a dog on the grass, so the answer is 30. I see a cat, and I am fairly sure of it! "
                "Nothing here")
    chain = parse_chain(response, mapper)
    assert [s.failure for s in chain.steps] == ["unmapped", None, "no_comma"]
    bad = chain.steps[0]
    assert bad.level is None and bad.statement == "so the answer is 30"
    assert bad.text == "There is a dog on the grass, so the answer is 30."  # never filled in
    assert chain.steps[1].text == "I see a cat!" and chain.steps[1].level == 3
    assert chain.steps[2].text == "Nothing here"
    empty = parse_chain("", mapper)
    assert empty.empty and empty.steps == () and empty.n_failures == 0
    assert parse_chain("   ", mapper).empty


def test_parse_many_one_call(mapper):
    counting = CountingMapper(mapper)
    responses = [
        "A red ball is on the left, with total certainty. So the answer is A, but I am not sure.",
        "",
        "The sign reads 3.5 km, and it is brown. So the answer is B.",
        "There are two cats, and I am absolutely sure.",
    ]
    chains = parse_chains(responses, counting)
    assert counting.calls == 1
    assert [c.levels for c in chains] == [[5, 2], [], [None, None], [5]]
    summary = summarize(chains)
    assert (summary.chains, summary.empty_chains, summary.steps, summary.parsed) == (4, 1, 5, 3)
    assert (summary.no_comma, summary.unmapped, summary.failures) == (1, 1, 2)
    assert summary.parsed_share == pytest.approx(0.6)
    assert summarize([]).parsed_share is None
    assert parse_chains([], counting) == []

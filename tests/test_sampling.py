"""`training.sampling.StatementSampling`: greedy outside statements, unchanged inside (the opener rule)."""

from __future__ import annotations

import gc

import pytest
import torch

from mmboundary.statements.pool import default_pool
from mmboundary.steps import split_steps
from mmboundary.training import sampling
from mmboundary.training.sampling import StatementSampling, TokenFlags, pool_openers, token_flags

# vocabulary: 0 "There", 1 ",", 2 ".", 3 " sure", 4 ", fine." (comma, then sentence end),
# 5 " and" (an opener), 6 " " (blank), 7 ".'," (sentence end, then comma), 8 " But" (an opener)
TABLE = ["There", ",", ".", " sure", ", fine.", " and", " ", ".',", " But"]
COMMA = torch.tensor([False, True, False, False, False, False, False, True, False])
END = torch.tensor([False, False, True, False, True, False, False, True, False])
OPENER = torch.tensor([False, False, False, False, False, True, False, False, True])
BLANK = torch.tensor([False, False, False, False, False, False, True, False, False])


class Tok:
    """A fake tokenizer: token id i decodes to `table[i]`; counts its `batch_decode` calls."""

    def __init__(self, table=TABLE):
        self.table = list(table)
        self.decodes = 0

    def batch_decode(self, seqs, **_):
        self.decodes += 1
        return ["".join(self.table[i] for i in s) for s in seqs]


def _greedy(scores):
    out = torch.full_like(scores, float("-inf"))
    idx = scores.argmax(-1)
    out[torch.arange(len(scores)), idx] = scores[torch.arange(len(scores)), idx]
    return out


def _scores(best, vocab=len(TABLE), seed=0):
    """Random scores per row whose argmax is `best[row]`."""
    g = torch.Generator().manual_seed(seed)
    s = torch.rand((len(best), vocab), generator=g)
    s[torch.arange(len(best)), torch.tensor(best)] = 2.0
    return s


def _sampled(out, scores):
    """Per row: True if the scores passed unchanged, False if greedy (a one-hot at the argmax)."""
    rows = []
    for o, s in zip(out, scores):
        if torch.equal(o, s):
            rows.append(True)
        else:
            assert torch.equal(o, _greedy(s[None])[0]), "neither unchanged nor greedy"
            rows.append(False)
    return rows


def _drive(proc, steps, prompt_len=3):
    """Feed `steps`, a list of (tokens drawn at this position per row, greedy token per row): each
    position's scores have the greedy token as argmax, the drawn token is appended after. Returns
    per position the rows' sampled flags."""
    batch = len(steps[0][1])
    ids = torch.zeros((batch, prompt_len), dtype=torch.long)
    flags = []
    for j, (drawn, best) in enumerate(steps):
        scores = _scores(best, seed=j)
        flags.append(_sampled(proc(ids, scores.clone()), scores))
        ids = torch.cat([ids, torch.tensor(drawn)[:, None]], 1)
    return flags


def _teacher(rows):
    """Teacher-forced (greedy) steps from token sequences of equal length."""
    return [([r[j] for r in rows], [r[j] for r in rows]) for j in range(len(rows[0]))]


def test_a_comma_opens_a_statement_only_before_an_opener():
    proc = StatementSampling(COMMA, END, OPENER, BLANK)
    rows = [
        # "There, sure, and sure." : the first comma is followed by " sure" (greedy), the second by " and"
        [0, 1, 3, 1, 5, 3, 2],
        # "There, and sure. There," : sampled from " and" to "."; greedy again after the sentence end
        [0, 1, 5, 3, 2, 0, 1],
        # "There, fine. There, But." : no statement after ", fine."; " But" opens (case ignored)
        [0, 4, 0, 1, 8, 2, 0],
    ]
    flags = _drive(proc, _teacher(rows))
    # position j: the scores from which token j is drawn
    assert [f[0] for f in flags] == [False, False, False, False, True, True, True]
    assert [f[1] for f in flags] == [False, False, True, True, True, False, False]
    assert [f[2] for f in flags] == [False, False, False, False, True, True, False]


def test_blank_tokens_keep_the_check_pending_and_comma_after_end():
    proc = StatementSampling(COMMA, END, OPENER, BLANK)
    rows = [
        # "There, " then " and": the blank token defers the check to the next word
        [0, 1, 6, 5, 3, 2],
        # "There.', and sure." : a sentence end then a comma in one token checks a new comma
        [0, 7, 5, 3, 2, 0],
        # "There, sure and sure." : " and" after a non-opener is no statement
        [0, 1, 3, 5, 3, 2],
    ]
    flags = _drive(proc, _teacher(rows))
    assert [f[0] for f in flags] == [False, False, False, True, True, True]
    assert [f[1] for f in flags] == [False, False, True, True, True, False]
    assert [f[2] for f in flags] == [False] * 6


def test_statement_mode_lasts_to_the_sentence_end_whatever_is_drawn():
    proc = StatementSampling(COMMA, END, OPENER)  # blank omitted: no blank tokens
    # after ",", the greedy token is " and" but " sure" is drawn: the row stays sampled (the
    # connective was the action), also across a further comma, until "."
    steps = [([0], [0]), ([1], [1]), ([3], [5]), ([1], [3]), ([3], [3]), ([2], [2]), ([0], [0])]
    assert [f[0] for f in _drive(proc, steps)] == [False, False, True, True, True, True, False]


def test_rows_are_greedy_on_the_first_call_and_keep_their_own_state():
    proc = StatementSampling(COMMA, END, OPENER, BLANK)
    scores = _scores([5, 5])
    prompt = torch.tensor([[0, 1], [0, 1]])  # the prompt's last comma is not a statement's
    assert _sampled(proc(prompt, scores.clone()), scores) == [False, False]
    ids = torch.cat([prompt, torch.tensor([[1], [0]])], 1)
    assert _sampled(proc(ids, scores.clone()), scores) == [True, False]


def test_flags_of_different_sizes_are_refused():
    with pytest.raises(ValueError, match="one size"):
        StatementSampling(COMMA, END, OPENER[:-1])


# --- a reference-style chain through a real tokenizer ----------------------------------------------

CHAIN = "In the image, there are two cats, and I am fairly sure of it. So, the answer is two, but I am not sure."
STATEMENTS = ("and I am fairly sure of it", "but I am not sure")


@pytest.fixture(scope="module", params=["written", "bare"])
def bpe(request):
    """A byte-level BPE tokenizer trained on the pool's statements: "written" as they are written
    after a step (", and I am sure."), so that " and" is one token as in the real models'
    tokenizers; "bare" (each statement alone), so that " and" is " " + "and" (a blank token first)."""
    from mmboundary.models.tokenizer import train_tokenizer

    statements = [s for v in default_pool().values() for s in v]
    if request.param == "written":
        statements = [f"It is so, {s}." for s in statements]
    texts = [CHAIN, "There are cats, and dogs.", "In the picture, a cat sits."]
    tok = train_tokenizer(texts + statements * 3, 600)
    tok.layout = request.param
    return tok


def test_reference_chain_samples_only_the_statements_after_the_last_comma(bpe):
    enc = bpe(CHAIN, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    for word in (" and", " but"):  # " and": one token, or a blank token then "and"
        pieces = bpe.convert_ids_to_tokens(bpe(word, add_special_tokens=False)["input_ids"])
        assert pieces == (["\u0120" + word[1:]] if bpe.layout == "written" else ["\u0120", word[1:]])
    # expected: a token is sampled iff it starts after its sentence's last comma (the clause the
    # parser reads as the statement, with the sentence's final mark), except a whitespace-only
    # token between the comma and the opener ("bare"), which stays greedy (the parser strips it)
    expected = []
    for s0, e0 in offsets:
        text = CHAIN[s0:e0]
        first = s0 + len(text) - len(text.lstrip())  # leading spaces belong to what follows
        start, end = next((s, e) for s, e in split_steps(CHAIN) if s <= min(first, len(CHAIN) - 1) < e)
        expected.append(bool(text.strip()) and s0 > CHAIN.rfind(",", start, end))
    sampled_text = ["".join(CHAIN[a:b] for (a, b), x in zip(offsets, expected) if x and s <= a < e)
                    for s, e in split_steps(CHAIN)]
    assert [t.strip() for t in sampled_text] == [s + "." for s in STATEMENTS]

    flags = token_flags(bpe, len(bpe))
    proc = StatementSampling(*flags)  # as training.samples calls it
    got = []
    prompt = torch.tensor([[bpe.bos_token_id]])
    for j, tok in enumerate(ids):  # teacher-forced: the chain is the greedy continuation
        scores = torch.rand((1, len(bpe)), generator=torch.Generator().manual_seed(j))
        scores[0, tok] = 3.0
        seen = torch.cat([prompt, torch.tensor([ids[:j]], dtype=torch.long)], 1)
        got.append(_sampled(proc(seen, scores.clone()), scores)[0])
    assert got == expected
    # explicitly: greedy through "In the image," and "So," and the reasoning after them
    assert not any(g for g, (s0, _) in zip(got, offsets) if s0 < CHAIN.index(", and"))
    assert not any(g for g, (s0, _) in zip(got, offsets) if CHAIN.index("So") <= s0 < CHAIN.index(", but"))


def test_old_rule_would_sample_reasoning(bpe):
    """Every token an opener is the old rule: the chain's reasoning after "In the image," is sampled."""
    enc = bpe(CHAIN, add_special_tokens=False, return_offsets_mapping=True)
    flags = token_flags(bpe, len(bpe))
    proc = StatementSampling(flags.comma, flags.end, torch.ones_like(flags.opener))
    prompt = torch.tensor([[bpe.bos_token_id]])
    ids = enc["input_ids"]
    there = next(j for j, (s0, _) in enumerate(enc["offset_mapping"]) if CHAIN[s0:].lstrip().startswith("there"))
    got = []
    for j in range(there + 1):
        scores = torch.rand((1, len(bpe)), generator=torch.Generator().manual_seed(j))
        scores[0, ids[j]] = 3.0
        got.append(_sampled(proc(torch.cat([prompt, torch.tensor([ids[:j]], dtype=torch.long)], 1), scores), scores)[0])
    assert got[there]


# --- openers and the token-flag cache --------------------------------------------------------------

def test_pool_openers_are_the_pools_first_words():
    expected = {s.split()[0].lower() for v in default_pool().values() for s in v}
    assert pool_openers() == expected and {"and", "but", "though", "with"} <= expected
    assert pool_openers({1: ("Maybe so",), 2: ("but not quite",)}) == {"maybe", "but"}


def test_token_flags_read_the_decoded_text():
    flags = token_flags(Tok(), len(TABLE), openers=("and", "but"))
    assert isinstance(flags, TokenFlags)
    for got, want in zip(flags, (COMMA, END, OPENER, BLANK)):
        assert torch.equal(got, want)
    # default openers: the pool's ("and", "but", ...)
    assert torch.equal(token_flags(Tok(), len(TABLE)).opener, OPENER)


def test_token_flag_cache_is_per_tokenizer_and_opener_set():
    a, b = Tok(), Tok(["and", ",", ".", " maybe", ", fine.", " x", " ", ".',", " y"])
    first = token_flags(a, len(TABLE))
    again = token_flags(a, len(TABLE))
    assert all(x is y for x, y in zip(first, again)) and a.decodes == 1
    other = token_flags(a, len(TABLE), openers=["Maybe"])  # another opener set: no new decode
    assert a.decodes == 1 and other.comma is first.comma and other.opener is not first.opener
    assert other.opener.nonzero().flatten().tolist() == []  # " sure" etc.: no "maybe" in a's vocabulary
    # another tokenizer has its own flags
    fb = token_flags(b, len(TABLE), openers=["maybe"])
    assert b.decodes == 1 and fb.opener.nonzero().flatten().tolist() == [3]
    assert token_flags(b, len(TABLE)).opener.nonzero().flatten().tolist() == [0]
    # a freed tokenizer takes its entry with it
    gc.collect()
    n = len(sampling._FLAGS)
    del a
    gc.collect()
    assert len(sampling._FLAGS) == n - 1


def test_openers_must_be_single_words():
    with pytest.raises(ValueError, match="single words"):
        token_flags(Tok(), len(TABLE), openers=["I am"])

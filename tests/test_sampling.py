"""`training.sampling.StatementSampling`: greedy outside statements, unchanged inside."""

from __future__ import annotations

import torch

from mmboundary.training.sampling import StatementSampling, token_flags

# vocabulary: 0 "There", 1 ",", 2 ".", 3 " sure", 4 ", fine." (comma and sentence end)
COMMA = torch.tensor([False, True, False, False, True])
END = torch.tensor([False, False, True, False, True])


def _greedy(scores):
    out = torch.full_like(scores, float("-inf"))
    idx = scores.argmax(-1)
    out[torch.arange(len(scores)), idx] = scores[torch.arange(len(scores)), idx]
    return out


def test_rows_switch_at_commas_and_sentence_ends():
    proc = StatementSampling(COMMA, END)
    scores = torch.tensor([[0.1, 2.0, 0.3, 0.5, 0.0], [1.0, 0.2, 0.3, 0.4, 0.5]])
    prompt = torch.zeros((2, 3), dtype=torch.long)
    # first call: nothing generated yet, both rows greedy
    assert torch.equal(proc(prompt, scores.clone()), _greedy(scores))
    # row 0 generated ",": inside a statement, its scores pass unchanged; row 1 ("There") stays greedy
    ids = torch.cat([prompt, torch.tensor([[1], [0]])], 1)
    out = proc(ids, scores.clone())
    assert torch.equal(out[0], scores[0]) and torch.equal(out[1], _greedy(scores)[1])
    # row 0 " sure": still inside; row 1 ", fine.": comma and end in one token, so outside
    ids = torch.cat([ids, torch.tensor([[3], [4]])], 1)
    out = proc(ids, scores.clone())
    assert torch.equal(out[0], scores[0]) and torch.equal(out[1], _greedy(scores)[1])
    # row 0 ".": the sentence ended, greedy again
    ids = torch.cat([ids, torch.tensor([[2], [1]])], 1)
    out = proc(ids, scores.clone())
    assert torch.equal(out[0], _greedy(scores)[0]) and torch.equal(out[1], scores[1])


def test_token_flags_read_the_decoded_text():
    class Tok:
        table = ["There", ",", ".", " sure", ", fine."]

        def batch_decode(self, seqs, **_):
            return ["".join(self.table[i] for i in s) for s in seqs]

    comma, end = token_flags(Tok(), 5)
    assert torch.equal(comma, COMMA) and torch.equal(end, END)

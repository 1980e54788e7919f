"""Map steps (character spans of a response) to their tokens, through the tokenizer's offsets.

Every signal of method.md section 2 is computed over the tokens y_1..y_L of one step. The steps
come from `mmboundary.steps.split_steps` as character spans of the response text; the tokens come
from one tokenization of the whole response with `return_offsets_mapping=True` (a fast
tokenizer), exactly the tokens the VLM is teacher-forced on. Prefixes are never decoded.

Assignment rule:
- a token belongs to the step whose character span it overlaps most (ties: the earlier step);
- a token that overlaps no step and is whitespace only (byte-level BPE's lone "Ġ", a newline
  between sentences) belongs to the following step, so a step's leading-space tokens are its own
  ("Ġ2" overlaps the next step anyway: its space is outside every step, its "2" inside);
  whitespace after the last step belongs to no step;
- any other token that overlaps no step (text the caller left out of every span, special tokens
  with empty offsets) belongs to no step.
For a stripped response split by `split_steps`, the steps' token spans therefore partition the
response tokens: contiguous, in order, no gap and no overlap.
"""

from __future__ import annotations

from collections.abc import Sequence

Span = tuple[int, int]


def token_offsets(tokenizer, text: str) -> tuple[list[int], list[Span]]:
    """Token ids and character offsets of `text` tokenized as a response (no special tokens),
    the way `VLM.encode` tokenizes it. Needs a fast tokenizer."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("token offsets need a fast tokenizer (return_offsets_mapping)")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [(int(a), int(b)) for a, b in enc["offset_mapping"]]


def step_token_spans(response_text: str, steps_char_spans: Sequence[Span],
                     offsets: Sequence[Span]) -> list[Span]:
    """Token span `(tok_start, tok_end)` (end exclusive) of each step, in the order given.

    - `response_text`: the response the offsets refer to.
    - `steps_char_spans`: `(start, end)` character spans of the steps, in text order, not
      overlapping (as `split_steps` returns them).
    - `offsets`: `(start, end)` character offsets of each response token (the tokenizer's
      offset mapping).
    A step that receives no token (it lies inside a token of a neighbour, or outside the text)
    gets the empty span `(k, k)` at the position where its tokens would start. Raises
    `ValueError` if a step's tokens are not contiguous (steps out of order or overlapping).
    """
    steps = [(int(s), int(e)) for s, e in steps_char_spans]
    for i, (s, e) in enumerate(steps):
        if not 0 <= s <= e <= len(response_text):
            raise ValueError(f"step {i}: span ({s}, {e}) outside the text of length {len(response_text)}")
        if i and s < steps[i - 1][1]:
            raise ValueError(f"step {i}: span ({s}, {e}) overlaps or precedes step {i - 1} {steps[i - 1]}")
    owner: list[int | None] = []
    j = 0  # first step that ends after the current token's start (tokens and steps are in order)
    for a, b in offsets:
        while j < len(steps) and steps[j][1] <= a:
            j += 1
        best, best_overlap = None, 0
        k = j
        while k < len(steps) and steps[k][0] < b:
            overlap = min(b, steps[k][1]) - max(a, steps[k][0])
            if overlap > best_overlap:
                best, best_overlap = k, overlap
            k += 1
        if (best is None and b > a and response_text[a:b].isspace() and j < len(steps)
                and b <= steps[j][0] and not response_text[b:steps[j][0]].strip()):
            best = j  # whitespace right before a step (nothing but spaces between): its leading space
        owner.append(best)

    spans: list[Span] = []
    position = 0
    for i in range(len(steps)):
        idx = [t for t, o in enumerate(owner) if o == i]
        if not idx:
            spans.append((position, position))
            continue
        start, end = idx[0], idx[-1] + 1
        if end - start != len(idx):
            raise ValueError(f"step {i}: its tokens are not contiguous")
        spans.append((start, end))
        position = end
    return spans

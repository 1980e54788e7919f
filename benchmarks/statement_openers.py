"""How often would `training.sampling.StatementSampling` sample reasoning on real reference chains?

Reads the authors' reference chains (/work/shared/reference/annotated/aokvqa_val_mmb.json and
culturalvqa_mmb.json; steps: each record's `keys_filtered` -> `Image_level` then `Reasoning_level`)
and counts, per file and in total:

- `steps`; `steps_with_comma`: steps whose own text (without its final mark) contains a comma;
- `steps_comma_opener`: steps where a comma is followed (after closing quotes or brackets and
  spaces) by an opener word of the
  statement pool (`training.sampling.pool_openers()`), in total and per opener.

Each step becomes the sentence "{step}, {statement}." when it is written with a statement (the
SFT targets, `statements.chain_format.write_step`). Then, simulated on the text (a sentence ends at
'.', '!', '?' or a newline, as the processor's token flags):
- old rule (any comma opens a statement, until a sentence end): the step's reasoning is partly
  sampled iff a word follows one of its commas before a sentence end;
- opener rule: iff a comma of the step is followed by an opener word;
reported as the number and share of steps, the share of the steps' own words that would be
sampled, and the number of answer steps ("... the answer is ...") whose own words are sampled.

`processor` cross-checks the simulation with the processor itself: a byte-level BPE tokenizer
(`models.tokenizer.train_tokenizer`, 4,000 tokens, trained on these chains and the pool, so that
words such as " and" are single tokens as in the real models' tokenizers) encodes each written
sentence; the sentence is fed teacher-forced through `StatementSampling` (the scores of each
position a one-hot at the true next token, so the greedy token is the text's), under the old rule
(every token an opener) and the opener rule; the counts are the steps with a sampled position
inside the step's own tokens, and the share of those tokens that are sampled.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/statement_openers.py

Writes `benchmarks/results/statement_openers.json` and prints the counts.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
from collections import Counter  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from mmboundary.statements.chain_format import write_step  # noqa: E402
from mmboundary.statements.pool import all_statements  # noqa: E402
from mmboundary.training.sampling import StatementSampling, pool_openers, token_flags  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path("/work/shared/reference/annotated")
FILES = {"aokvqa_val": "aokvqa_val_mmb.json", "culturalvqa": "culturalvqa_mmb.json"}

_FINAL = re.compile(r"[.!?]+\s*$")
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")
_ENDS = ".!?\n"
_ANSWER = re.compile(r"\bthe answer is\b", re.IGNORECASE)
_COMMA = re.compile("," + r"[\"')\]\u201d\u2019]*[ \t]*")  # a comma, closing quotes/brackets, spaces


def reference_steps(path: Path) -> list[str]:
    """The steps of every record, `keys_filtered` Image_level then Reasoning_level."""
    steps = []
    for record in json.loads(path.read_text("utf-8")):
        keys = record.get("keys_filtered") or {}
        for part in ("Image_level", "Reasoning_level"):
            steps += [s for s in keys.get(part) or [] if isinstance(s, str) and s.strip()]
    return steps


def body(step: str) -> str:
    """The step as the writer puts it before ", {statement}": spaces collapsed, final mark removed."""
    step = " ".join(step.split())
    return _FINAL.sub("", step).rstrip()


def words_after_commas(text: str) -> list[tuple[int, str]]:
    """(index of the comma, the lower-cased word after it) for each comma of `text` that a word follows."""
    out = []
    for m in _COMMA.finditer(text):
        w = _WORD.match(text, m.end())
        if w:
            out.append((m.start(), w.group().lower()))
    return out


def sampled_words(text: str, openers: frozenset[str] | None) -> int:
    """How many words of `text` (a step's body) the processor would sample, simulated left to
    right: a comma (followed by an opener word; `openers` None: the old rule, any comma) starts a
    statement, a sentence end ('.', '!', '?', newline) ends it; a word is sampled if it starts
    inside a statement."""
    inside = [False] * len(text)
    after = dict(words_after_commas(text))
    state = False
    for i, ch in enumerate(text):
        if ch in _ENDS:
            state = False
        elif ch == "," and not state and (openers is None or after.get(i) in openers):
            state = True
        inside[i] = state
    return sum(inside[m.start()] for m in _WORD.finditer(text))


def text_counts(steps: list[str], openers: frozenset[str]) -> dict:
    n = len(steps)
    per_opener = Counter()
    with_comma = comma_opener = 0
    old_steps = new_steps = 0
    words_total = old_words = new_words = 0
    answer_steps = old_answer = new_answer = 0
    for step in steps:
        text = body(step)
        following = [w for _, w in words_after_commas(text)]
        with_comma += "," in text
        hit = {w for w in following if w in openers}
        comma_opener += bool(hit)
        per_opener.update(hit)
        n_words = len(_WORD.findall(text))
        words_total += n_words
        old, new = sampled_words(text, None), sampled_words(text, openers)
        if _ANSWER.search(text):
            answer_steps += 1
            old_answer, new_answer = old_answer + bool(old), new_answer + bool(new)
        old_steps, old_words = old_steps + bool(old), old_words + old
        new_steps, new_words = new_steps + bool(new), new_words + new

    def share(a, b):
        return round(a / b, 4) if b else None

    return {
        "steps": n, "steps_with_comma": with_comma, "steps_comma_opener": comma_opener,
        "steps_comma_opener_per_opener": {w: per_opener[w] for w in sorted(openers)},
        "old_rule": {"steps_reasoning_sampled": old_steps, "share_of_steps": share(old_steps, n),
                     "share_of_step_words_sampled": share(old_words, words_total),
                     "answer_steps_reasoning_sampled": old_answer},
        "opener_rule": {"steps_reasoning_sampled": new_steps, "share_of_steps": share(new_steps, n),
                        "share_of_step_words_sampled": share(new_words, words_total),
                        "answer_steps_reasoning_sampled": new_answer},
        "step_words": words_total,
        "answer_steps": answer_steps,
    }


def processor_counts(steps_by_file: dict[str, list[str]], openers: frozenset[str], batch: int = 512) -> dict:
    from mmboundary.models.tokenizer import train_tokenizer

    statements = all_statements()
    texts = [write_step(s, statements[i % len(statements)]) for steps in steps_by_file.values()
             for i, s in enumerate(steps)]
    tokenizer = train_tokenizer(texts + statements * 5, 4000)
    vocab = len(tokenizer)
    flags = token_flags(tokenizer, vocab, openers)
    everything = flags._replace(opener=torch.ones_like(flags.opener))  # the old rule
    single = {w: len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) == 1 for w in sorted(openers)}
    out = {"tokenizer_vocab": vocab, "opener_single_token": single}
    totals = {rule: [0, 0, 0] for rule in ("old_rule", "opener_rule")}
    for name, steps in steps_by_file.items():
        rows = [write_step(s, statements[i % len(statements)]) for i, s in enumerate(steps)]
        res = {"steps": len(rows)}
        for rule, fl in (("old_rule", everything), ("opener_rule", flags)):
            n_steps = n_tok = n_body = 0
            for b in range(0, len(rows), batch):
                chunk = rows[b:b + batch]
                enc = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True)
                ids = [torch.tensor(x) for x in enc["input_ids"]]
                length = max(len(x) for x in ids)
                padded = torch.full((len(ids), length), tokenizer.pad_token_id, dtype=torch.long)
                for r, x in enumerate(ids):
                    padded[r, :len(x)] = x
                # the step's own tokens: those that start before the comma the writer added
                cut = [len(body(s)) for s in steps[b:b + batch]]
                own = torch.zeros((len(ids), length), dtype=torch.bool)
                for r, offs in enumerate(enc["offset_mapping"]):
                    for j, (s0, _) in enumerate(offs):
                        own[r, j] = s0 < cut[r]
                proc = StatementSampling(*fl)
                prompt = torch.full((len(ids), 1), tokenizer.bos_token_id, dtype=torch.long)
                sampled = torch.zeros((len(ids), length), dtype=torch.bool)
                for j in range(length):
                    scores = torch.zeros((len(ids), vocab))
                    scores[torch.arange(len(ids)), padded[:, j]] = 1.0
                    seen = torch.cat([prompt, padded[:, :j]], 1)
                    result = proc(seen, scores)
                    sampled[:, j] = torch.isfinite(result).all(1)
                hit = sampled & own
                n_steps += int(hit.any(1).sum())
                n_tok += int(hit.sum())
                n_body += int(own.sum())
            res[rule] = {"steps_reasoning_sampled": n_steps, "share_of_steps": round(n_steps / len(rows), 4),
                         "share_of_step_tokens_sampled": round(n_tok / n_body, 4)}
            totals[rule] = [a + b for a, b in zip(totals[rule], (n_steps, n_tok, n_body))]
        out[name] = res
    n = sum(len(v) for v in steps_by_file.values())
    out["total"] = {"steps": n, **{rule: {"steps_reasoning_sampled": s, "share_of_steps": round(s / n, 4),
                                          "share_of_step_tokens_sampled": round(t / b, 4)}
                                   for rule, (s, t, b) in totals.items()}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", default=str(REFERENCE))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "statement_openers.json"))
    ap.add_argument("--no-processor", action="store_true", help="skip the tokenizer cross-check")
    args = ap.parse_args()
    openers = pool_openers()
    steps_by_file = {name: reference_steps(Path(args.reference) / f) for name, f in FILES.items()}
    result = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "reference": {name: str(Path(args.reference) / f) for name, f in FILES.items()},
        "openers": sorted(openers),
        "text": {name: text_counts(steps, openers) for name, steps in steps_by_file.items()},
    }
    result["text"]["total"] = text_counts([s for v in steps_by_file.values() for s in v], openers)
    if not args.no_processor:
        result["processor"] = processor_counts(steps_by_file, openers)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

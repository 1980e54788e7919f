"""Side-by-side with lm-polygraph: Perplexity and MeanTokenEntropy against our U_LNLP and U_MTE.

What it does. On SmolLM2-135M-Instruct as a text-only `LlamaForCausalLM` (the safetensors copy
made by `mmboundary.models.smol`), for the first N test questions of a run's built-in benchmark
rendered with SmolLM2's chat template (the questions are about images the text model cannot see;
that is irrelevant to a comparison of two implementations of the same signals):

1. theirs: lm-polygraph 0.7's own stat calculators and estimators, in batches of B prompts:
   `GreedyProbsCalculator` (greedy generation with the raw scores kept; attentions and hidden
   states off, the cheapest set-up that gives these two signals), `EntropyCalculator`, then the
   `Perplexity` and `MeanTokenEntropy` estimators. Its greedy tokens are THE generations.
2. ours: plain greedy generation (`model.generate`, no scores kept; the counterpart of
   `mmboundary.generation.generate_chains` for a text model), then ONE teacher-forced pass over
   prompt + lm-polygraph's generated tokens (right padding) and `mmboundary.confidence.forward.
   token_scores` (float64 log-probabilities and full-vocabulary entropies of the raw logits), then
   `mmboundary.confidence.lnlp.lnlp` and `mmboundary.confidence.mte.mte` over all generated tokens.
   Our greedy tokens are checked to equal lm-polygraph's (reported as `same_generations`).

Like with like. lm-polygraph's `Perplexity` is the mean NLL over the whole generation,
-(1/L) sum_l log p_l, while our U_LNLP is a perplexity exp(-(1/L) sum_l log p_l). Over the same
tokens (the whole generated sequence, the final eos included as lm-polygraph includes it):
    Perplexity_polygraph = ln(U_LNLP_ours),       MeanTokenEntropy_polygraph = U_MTE_ours.
The script compares ln(our lnlp) with their Perplexity, and our mte with their MeanTokenEntropy,
and reports the largest absolute difference of each (goal: <= 1e-4).

Timing (best of R interleaved repeats each, same batches, one torch thread by default: on a
CPU shared with other jobs, two threads make greedy decoding up to 15x slower through OpenMP
barrier waits (measured here: 9 s with 1 thread, 140 s with 2, same generation), which would
measure the neighbours rather than the code):
- `generation_seconds`: plain greedy generation alone;
- `ours_signal_seconds`: the teacher-forced pass + token_scores + lnlp + mte (our signal work);
- `theirs_seconds`: lm-polygraph's calculators + estimators (their generation is inseparable
  from their signal extraction: scores are kept during decoding);
- `end_to_end_speedup` = theirs / (generation + ours): the same job, "generate greedily and give
  the two signals", done each way;
- `signal_overhead_speedup` = (theirs - generation) / ours: each tool's work beyond plain
  generation (null when theirs is not slower than plain generation: lm-polygraph reads both
  signals from the scores its decoding computes anyway, so its extra work can vanish in the
  noise of the generation time). The goal (ours at least 3x faster) is judged on the end-to-end ratio, both are written.

Departures, stated:
- Our side runs on the text-only model, so `token_scores` is called directly on the LM's logits
  (the VLM wrapper `teacher_forced` needs an image); the arithmetic is the same function the
  estimator uses.
- lm-polygraph's `GreedyProbsCalculator` always passes `min_new_tokens=2`, so during its first
  two decoding steps eos is masked to -inf before its scores are kept: its first two
  distributions are renormalised without eos. Ours are the raw distributions. The effect is
  P(eos) at those positions (reported in the differences, not corrected for).
- Their log-softmax is float32 (the model's dtype); ours float64.

Install (lm-polygraph is NOT a project dependency; it goes into a separate venv under runs/,
which is gitignored; that venv reuses the project venv's packages, torch==2.13.0 included,
through a .pth file, so nothing heavy is downloaded and both sides run the same torch and
transformers; `--no-deps` because lm-polygraph's full requirement list pulls GPU-only packages,
then only what `import lm_polygraph` needs, constrained to the project venv's versions):

    python3.11 -m venv runs/.venv-polygraph
    echo "import site; site.addsitedir('$PWD/.venv/lib/python3.11/site-packages')" \\
        > runs/.venv-polygraph/lib/python3.11/site-packages/zz_mmboundary_venv.pth
    .venv/bin/pip freeze --exclude-editable > runs/polygraph-constraints.txt
    echo "torch==2.13.0" >> runs/polygraph-constraints.txt
    runs/.venv-polygraph/bin/pip install --no-deps lm-polygraph==0.7.0
    runs/.venv-polygraph/bin/pip install -c runs/polygraph-constraints.txt \\
        openai nltk diskcache spacy boostedprob rouge-score sacrebleu bert-score omegaconf

Run (needs a run directory with the data stage done, and the SmolLM2 set-up of the README):

    HF_HUB_OFFLINE=1 runs/.venv-polygraph/bin/python benchmarks/polygraph_compare.py \\
        --run-dir runs/default [--n 16] [--batch-size 8] [--max-new-tokens 64] [--repeats 3] [--threads 1]

Writes `benchmarks/results/polygraph_compare.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MMBOUNDARY_PROGRESS", "0")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

INSTALL = ("see this script's docstring: python3.11 -m venv runs/.venv-polygraph, a .pth to the project "
           "venv, pip install --no-deps lm-polygraph==0.7.0, then its import-time requirements")


def import_polygraph():
    """lm-polygraph's calculators and estimators, or exit with a clear message."""
    try:
        import lm_polygraph  # noqa: F401
        from lm_polygraph.estimators import MeanTokenEntropy, Perplexity
        from lm_polygraph.stat_calculators.entropy import EntropyCalculator
        from lm_polygraph.stat_calculators.greedy_probs import GreedyProbsCalculator
        from lm_polygraph.utils.generation_parameters import GenerationParameters
        from lm_polygraph.utils.model import WhiteboxModel
    except ImportError as exc:
        sys.exit(f"polygraph_compare: lm-polygraph is not importable in {sys.executable} ({exc}).\n"
                 f"It is installed only for this benchmark, in a separate venv: {INSTALL}.")
    return dict(MeanTokenEntropy=MeanTokenEntropy, Perplexity=Perplexity, EntropyCalculator=EntropyCalculator,
                GreedyProbsCalculator=GreedyProbsCalculator, GenerationParameters=GenerationParameters,
                WhiteboxModel=WhiteboxModel)


def best_of(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "default"),
                    help="a run with its data stage done (read only): the test questions")
    ap.add_argument("--n", type=int, default=16, help="number of test questions")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: stable on a shared machine, see the docstring)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "polygraph_compare.json"))
    args = ap.parse_args()

    pg = import_polygraph()
    import numpy as np
    import torch

    from mmboundary.artifacts import load_split
    from mmboundary.confidence.forward import token_scores
    from mmboundary.confidence.lnlp import lnlp
    from mmboundary.confidence.mte import mte
    from mmboundary.models.smol import smol_cache_dir, smol_text_model
    from mmboundary.models.vlm import IGNORE_INDEX, question_text
    from mmboundary.runs import Run

    torch.set_num_threads(args.threads)
    model, tokenizer = smol_text_model()  # LlamaForCausalLM, float32, eval mode
    tokenizer.padding_side = "left"  # batched generation (lm-polygraph's tokenize keeps the tokenizer's side)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id

    examples = load_split(Run.open(args.run_dir), "test", args.n)
    chats = [[{"role": "user", "content": question_text(ex.question, ex.choices)}] for ex in examples]
    batches = [chats[i:i + args.batch_size] for i in range(0, len(chats), args.batch_size)]

    # ---- theirs: lm-polygraph's calculators and estimators ------------------------------------
    wb = pg["WhiteboxModel"](model, tokenizer, model_path=str(smol_cache_dir()), model_type="CausalLM",
                             generation_parameters=pg["GenerationParameters"](), instruct=True)
    greedy = pg["GreedyProbsCalculator"](output_attentions=False, output_hidden_states=False)
    entropy = pg["EntropyCalculator"]()
    perplexity, mean_entropy = pg["Perplexity"](), pg["MeanTokenEntropy"]()

    def theirs():
        out = {"tokens": [], "perplexity": [], "mte": []}
        for chat in batches:
            stats = greedy({}, chat, wb, max_new_tokens=args.max_new_tokens)
            stats.update(entropy(stats, chat, wb, max_new_tokens=args.max_new_tokens))
            out["perplexity"] += [float(v) for v in perplexity(stats)]
            out["mte"] += [float(v) for v in mean_entropy(stats)]
            out["tokens"] += [list(map(int, t)) for t in stats["greedy_tokens"]]
        return out

    # ---- ours: plain greedy generation, then one teacher-forced pass -----------------------
    def prompt_batch(chat):
        return wb.tokenize(chat)  # the same prompt tokens as lm-polygraph's (chat template, left padding)

    # each prompt's tokens without the padding (the same tokenisation, outside the timed parts)
    prompt_ids = []
    for chat in batches:
        enc = prompt_batch(chat)
        prompt_ids += [[t for t, m in zip(ids, mask) if m]
                       for ids, mask in zip(enc["input_ids"].tolist(), enc["attention_mask"].tolist())]

    @torch.no_grad()
    def generate():
        toks = []
        for chat in batches:
            batch = prompt_batch(chat)
            seqs = model.generate(**batch, max_new_tokens=args.max_new_tokens, do_sample=False,
                                  pad_token_id=pad, eos_token_id=eos)
            for ids in seqs[:, batch["input_ids"].shape[1]:].tolist():
                toks.append(ids[: ids.index(eos) + 1] if eos in ids else ids)
        return toks

    @torch.no_grad()
    def ours_signals(prompt_ids, gen_ids):
        """U_LNLP and U_MTE over each whole generated sequence, from one teacher-forced pass per batch."""
        lnlps, mtes = [], []
        for b in range(0, len(prompt_ids), args.batch_size):
            ps, gs = prompt_ids[b:b + args.batch_size], gen_ids[b:b + args.batch_size]
            width = max(len(p) + len(g) for p, g in zip(ps, gs))
            ids = torch.full((len(ps), width), pad, dtype=torch.long)
            mask = torch.zeros((len(ps), width), dtype=torch.long)
            labels = torch.full((len(ps), width), IGNORE_INDEX, dtype=torch.long)
            for i, (p, g) in enumerate(zip(ps, gs)):  # right padding: padding only follows the tokens
                ids[i, :len(p) + len(g)] = torch.tensor(p + g)
                mask[i, :len(p) + len(g)] = 1
                labels[i, len(p):len(p) + len(g)] = torch.tensor(g)
            first = min(len(p) for p in ps)  # logits only from the first scored position on
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False,
                           logits_to_keep=width - (first - 1)).logits
            for _, logp, ent in token_scores(logits, labels[:, first - 1:]):
                lnlps.append(lnlp(logp))
                mtes.append(mte(ent))
        return lnlps, mtes

    # interleaved repeats, so that both sides see the same machine load; best of each
    t_theirs, t_gen, t_ours = [], [], []
    for _ in range(args.repeats):
        t, th = best_of(theirs, 1)
        t_theirs.append(t)
        t, our_tokens = best_of(generate, 1)
        t_gen.append(t)
        t, (our_lnlp, our_mte) = best_of(lambda: ours_signals(prompt_ids, th["tokens"]), 1)
        t_ours.append(t)
    theirs_s, gen_s, ours_s = min(t_theirs), min(t_gen), min(t_ours)

    same = sum(a == b for a, b in zip(our_tokens, th["tokens"]))
    ppl_diff = np.abs(np.log(np.asarray(our_lnlp)) - np.asarray(th["perplexity"]))
    mte_diff = np.abs(np.asarray(our_mte) - np.asarray(th["mte"]))
    max_diff = float(max(ppl_diff.max(), mte_diff.max()))
    ours_total = gen_s + ours_s
    result = {
        "model": "SmolLM2-135M-Instruct (text-only LlamaForCausalLM, float32)",
        "lm_polygraph_version": _version("lm-polygraph"),
        "prompts": len(chats), "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
        "generated_tokens": int(sum(len(t) for t in th["tokens"])),
        "ended_with_eos": int(sum(1 for t in th["tokens"] if t and t[-1] == eos)),
        "same_generations": f"{same}/{len(chats)}",
        "max_abs_diff_perplexity_vs_ln_lnlp": float(ppl_diff.max()),
        "max_abs_diff_mean_token_entropy_vs_mte": float(mte_diff.max()),
        "max_abs_diff": max_diff,
        "diff_goal": 1e-4, "diff_goal_met": max_diff <= 1e-4,
        "generation_seconds": round(gen_s, 3),
        "ours_signal_seconds": round(ours_s, 3),
        "ours_end_to_end_seconds": round(ours_total, 3),
        "theirs_seconds": round(theirs_s, 3),
        "end_to_end_speedup": round(theirs_s / ours_total, 2),
        "theirs_over_generation_seconds": round(theirs_s - gen_s, 3),
        # None when lm-polygraph's extra work is within the noise of the generation time
        "signal_overhead_speedup": round((theirs_s - gen_s) / ours_s, 2) if theirs_s > gen_s else None,
        "speedup_goal": 3.0, "speedup_goal_met": theirs_s / ours_total >= 3.0,
        "repeats": args.repeats, "threads": args.threads,
        "all_theirs_seconds": [round(t, 3) for t in t_theirs],
        "all_generation_seconds": [round(t, 3) for t in t_gen],
        "all_ours_signal_seconds": [round(t, 3) for t in t_ours],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": _cpu_name()},
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _cpu_name() -> str:
    from _machine import cpu_name  # benchmarks/_machine.py, beside this script

    return cpu_name()


if __name__ == "__main__":
    main()

"""Could a statement policy read from the model's own hidden states meet the issue-5 goal? A probe.

RL can only change which level the model states after a step; whatever it learns, it computes
from the model's state at that point. This script asks how much a state at the end of a step
says about whether the step is right, with the simplest learner: a logistic-regression probe on
the hidden states of one finished run's SFT model (where RL starts), fitted on the SFT model's
own greedy chains of *training* questions (the questions RL rolls out on), and scored on the
saved greedy chains of the test and OOD splits by the MECE of the level nearest to its
prediction (the same five probabilities as the stated levels). It is neither an upper nor a lower
bound for RL, which has fewer labels (rewards on sampled rollouts) but can change the features:
it says whether the information is there at all.

Features of a step: the last layer's and a middle layer's hidden state at the step's last
token, teacher-forced over prompt + image + the chain as generated (the statement tokens after
the step are not seen, causal mask). Probe: standardised features, L2 logistic regression (L-BFGS
in torch), the penalty chosen by 5-fold cross-validation on the training steps (log loss).
Also reported: the MECE when the probe may not say level 5 (nearest of levels 1-4: the SFT
model almost never says 5, and RL here never learnt to), the probe with the step's kind
(`statement_policy_bound.step_kind`) added, and the stated levels' MECE on the same chains.

    python benchmarks/hidden_state_bound.py --run-dir runs/compare-default/runs/seed0/full [--train 2000] [--fresh]

Writes `benchmarks/results/hidden_state_bound.json` (rows are merged by run directory).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from mmboundary.evaluation.calibration import auroc  # noqa: E402
from statement_policy_bound import mece, nearest_level, step_kind  # noqa: E402

KINDS = ("answer", "arithmetic", "total", "none", "count", "attribute", "other")


def fresh_questions(run, n: int, folder: Path):
    """`n` new questions of the built-in benchmark, as `rl.questions: fresh` draws them."""
    from mmboundary.data.benchmark.generate import generate_examples

    spec = run.config.data.benchmark.model_copy(update={"seed": 10_000 + run.config.data.benchmark.seed, "n_train": n})
    return generate_examples(spec, "train", folder)


def sft_chains(run, vlm, split: str, limit: int | None, fresh_dir: Path | None = None):
    """The SFT model's (`vlm`) greedy chains of `split`: saved by `evaluate` for test/OOD,
    generated here (as `evaluate` would) for train (fresh questions when `fresh_dir` is given)."""
    from mmboundary.artifacts import load_split, make_statement_mapper, read_chains
    from mmboundary.generation import expressed_chain_record, generate_texts
    from mmboundary.statements.chain_format import parse_chains

    if split == "train" and fresh_dir is not None:
        examples = fresh_questions(run, limit, fresh_dir)
    else:
        examples = load_split(run, split, limit)
    saved = run.stage_dir("evaluate") / f"chains_sft_{split}.jsonl"
    if saved.exists() and split != "train":
        chains = read_chains(saved)
        by_id = {ex.id: ex for ex in examples}
        return [(by_id[c.example_id], c) for c in chains if c.example_id in by_id]
    texts = generate_texts(vlm, examples, run.config.generation, description=f"sft {split}")
    parsed = parse_chains(texts, make_statement_mapper(run.config))
    chains = [expressed_chain_record(ex, t, p, run.config.statements.granularity)
              for ex, t, p in zip(examples, texts, parsed)]
    return list(zip(examples, chains))


@torch.no_grad()
def step_features(vlm, pairs, batch_size: int = 8):
    """(features, correct, stated level, kind, example id) of every step with a truth and a statement."""
    from mmboundary.confidence.forward import _as_items
    from mmboundary.confidence.spans import step_token_spans, token_offsets
    from mmboundary.models.vlm import IGNORE_INDEX

    feats, ys, levels, kinds, ids = [], [], [], [], []
    model = vlm.model.eval()
    for i in range(0, len(pairs), batch_size):
        batch = pairs[i:i + batch_size]
        prompts, images, responses = _as_items(vlm, [(ex, c.text) for ex, c in batch])
        enc = vlm.encode(prompts, images, responses, padding_side="right")
        labels = enc.pop("labels")
        out = model(**enc, output_hidden_states=True, use_cache=False)
        hs = out.hidden_states
        layers = torch.cat([hs[-1], hs[len(hs) // 2]], dim=-1).float()
        for row, (ex, c) in enumerate(batch):
            first = int((labels[row] != IGNORE_INDEX).int().argmax())
            _, offsets = token_offsets(vlm.tokenizer, c.text)
            spans = step_token_spans(c.text, [(s.start, s.end) for s in c.steps], offsets)
            for s, (a, b) in zip(c.steps, spans):
                if s.correct is None or s.level is None or b <= a or first + b - 1 >= layers.shape[1]:
                    continue
                feats.append(layers[row, first + b - 1].cpu().numpy())
                ys.append(int(s.correct))
                levels.append(int(s.level))
                kinds.append(step_kind(s.text))
                ids.append(c.example_id)
    return np.stack(feats), np.array(ys), levels, kinds, ids


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, iters: int = 1000) -> tuple[np.ndarray, float]:
    """Weights and bias of an L2-penalised logistic regression (mean log loss + l2/2 |w|^2)."""
    xt = torch.as_tensor(x, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.float64)
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, tolerance_grad=1e-10, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt) + 0.5 * l2 * (w @ w)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), float(b.detach())


def predict(x, wb):
    w, b = wb
    return 1.0 / (1.0 + np.exp(-(x @ w + b)))


def log_loss(p, y):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def choose_l2(x, y, groups, grid=(1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0), folds: int = 5, seed: int = 0) -> float:
    """The penalty with the lowest cross-validated log loss (folds split by question)."""
    rng = np.random.default_rng(seed)
    uniq = np.array(sorted(set(groups)))
    fold_of = dict(zip(uniq, rng.permutation(len(uniq)) % folds))
    f = np.array([fold_of[g] for g in groups])
    best = None
    for l2 in grid:
        losses = []
        for k in range(folds):
            tr, te = f != k, f == k
            losses.append(log_loss(predict(x[te], fit_logistic(x[tr], y[tr], l2)), y[te]))
        score = float(np.mean(losses))
        if best is None or score < best[1]:
            best = (l2, score)
    return best[0]


def one_hot(kinds):
    return np.array([[k == kk for kk in KINDS] for k in kinds], dtype=np.float64)


def main() -> None:
    from mmboundary.models.factory import load_vlm
    from mmboundary.runs import Run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", required=True, help="a run whose sft and evaluate stages are complete")
    ap.add_argument("--train", type=int, default=600, help="training questions to generate chains on")
    ap.add_argument("--fresh", action="store_true",
                    help="fit on new benchmark questions (as rl.questions: fresh) instead of the train split")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "hidden_state_bound.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    t0 = time.time()
    run = Run.open(args.run_dir)
    with tempfile.TemporaryDirectory(prefix="probe-") as tmp:  # the fresh questions' images
        vlm = load_vlm(run.stage_dir("sft") / "model", run.config.model)
        data = {split: sft_chains(run, vlm, split, args.train if split == "train" else None,
                                  Path(tmp) if args.fresh else None)
                for split in ("train", "test", "ood")}
        feats = {split: step_features(vlm, pairs) for split, pairs in data.items()}
    xtr, ytr, _, ktr, gtr = feats["train"]
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    results = {"run": args.run_dir, "fit_on": "fresh" if args.fresh else "train", "train_questions": args.train,
               "train_steps": int(len(ytr)), "train_accuracy": float(ytr.mean()), "splits": {}}
    variants = {"hidden": lambda x, k: (x - mu) / sd,
                "hidden+kind": lambda x, k: np.concatenate([(x - mu) / sd, one_hot(k)], axis=1),
                "kind": lambda x, k: one_hot(k)}
    fitted = {}
    for name, fx in variants.items():
        xs = fx(xtr, ktr)
        l2 = choose_l2(xs, ytr, gtr)
        fitted[name] = (fx, fit_logistic(xs, ytr, l2), l2)
    for split in ("train", "test", "ood"):
        x, y, levels, kinds, _ = feats[split]
        row = {"steps": int(len(y)), "accuracy": float(y.mean()), "stated_mece": mece(levels, list(y))}
        for name, (fx, wb, l2) in fitted.items():
            p = predict(fx(x, kinds), wb)
            row[name] = {"mece": mece([nearest_level(q) for q in p], list(y)),
                         "mece_without_level_5": mece([min(4, nearest_level(q)) for q in p], list(y)),
                         "auroc": auroc(p, y),
                         "log_loss": log_loss(p, y), "l2": l2,
                         "level_shares": [float(np.mean([nearest_level(q) == lv for q in p])) for lv in range(1, 6)]}
        results["splits"][split] = row
        print(f"{split}: steps {len(y)} acc {y.mean():.3f} stated MECE {row['stated_mece']:.3f} | "
              + " | ".join(f"{n} MECE {row[n]['mece']:.3f} AUROC {row[n]['auroc']:.3f}" for n in fitted))
    results["seconds"] = round(time.time() - t0, 1)
    out = Path(args.out)
    old = json.loads(out.read_text("utf-8")) if out.exists() else {"rows": []}
    rows = [r for r in old["rows"] if (r["run"], r.get("fit_on")) != (args.run_dir, results["fit_on"])] + [results]
    out.write_text(json.dumps({"rows": rows}, indent=1) + "\n", "utf-8")
    print(f"written to {out} ({results['seconds']} s)")


if __name__ == "__main__":
    main()

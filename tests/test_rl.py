"""The RL stage (`training.rl` and the modules it runs) on a tiny random VLM: token spans of a
hand-made rollout, the reward that reaches the optimiser, one iteration (and lr = 0), the
statement-only loss mask, resume, and 2 processes vs 1."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmboundary.confidence.fusion import FusionConfig, Levels, Normalizer, SignalRange
from mmboundary.confidence.scorer import ScoringContext, token_char_ends
from mmboundary.distributed import make_accelerator
from mmboundary.models.factory import build_tiny
from mmboundary.models.spec import ModelSpec
from mmboundary.models.tokenizer import train_tokenizer
from mmboundary.statements.chain_format import parse_chain, write_chain
from mmboundary.statements.mapping import NumericMapper
from mmboundary.training.ppo import ppo_loss, prepare_batch
from mmboundary.training.rewards import RewardConfig, r_cs, r_ec, r_ka
from mmboundary.training.rl import train_rl
from mmboundary.training.rl_config import RLConfig
from mmboundary.training.samples import build_rollout, char_spans_to_token_spans, samples_from_ids
from mmboundary.training.scoring import score_samples
from mmboundary.training.value_head import PolicyWithValue, ValueHead, hidden_size_of

SPEC = ModelSpec(text_num_layers=1, text_hidden_size=32, text_intermediate_size=64, vision_hidden_size=32,
                 vision_num_layers=1, vision_intermediate_size=64, max_length=160)


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    from mmboundary.data.benchmark import BenchmarkSpec, generate_examples

    spec = BenchmarkSpec.version("v1", n_train=4, n_test=0, n_ood=0)
    return generate_examples(spec, "train", tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def tokenizer(examples):
    from mmboundary.training.base import tokenizer_corpus

    numeric = [f"confidence {k}/5" for k in range(1, 6)]
    return train_tokenizer(tokenizer_corpus(examples) + numeric * 5, 500)


def tiny(tokenizer):
    return build_tiny(tokenizer, SPEC, seed=0)


@pytest.fixture(scope="module")
def ctx():
    normalizer = Normalizer(ranges={"lnlp": SignalRange(lo=1.0, hi=500.0, count=10),
                                    "mte": SignalRange(lo=0.0, hi=7.0, count=10)})
    levels = Levels(kind="meanstd", thresholds=(0.2, 0.4, 0.6, 0.8), mean=0.5, std=0.2, count=10)
    return ScoringContext(mapper=NumericMapper(), normalizer=normalizer, levels=levels,
                          fusion=FusionConfig(ablate=["token_sar", "clip_score"]), signals=("lnlp", "mte"))


def response_of(example, levels):
    """The example's reference chain with a numeric statement per step (None: a statement that
    maps to no level)."""
    statements = [f"confidence {lv}/5" if lv is not None else "who knows" for lv in levels]
    return write_chain([s.text for s in example.chain], statements)


# --- token spans ------------------------------------------------------------------------------------

def test_char_spans_to_token_spans_by_hand():
    # tokens produce "ab", "c", "", "de" -> ends 2, 3, 3, 5
    ends = [2, 3, 3, 5]
    assert char_spans_to_token_spans(ends, [(0, 3), (3, 5), (1, 2), (4, 4)]) == [(0, 2), (3, 4), (0, 1), (3, 3)]
    # a span ending right after the empty token's position still stops at the token of its last char
    assert char_spans_to_token_spans(ends, [(2, 3)]) == [(1, 2)]


def test_rollout_spans_of_a_hand_made_response(examples, tokenizer):
    ex = examples[0]
    n = len(ex.chain)
    levels = [4] * (n - 1) + [None]
    text = response_of(ex, levels)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    decoded, ends = token_char_ends(tokenizer, ids)
    assert decoded == text and ends[-1] == len(text) and ends[-2] == len(text)  # eos produces nothing
    parsed = parse_chain(decoded, NumericMapper())
    rollout, dropped = build_rollout(ex.id, 7, ids, ends, parsed, [1] * n, [3] * n, 1)
    assert dropped == 0 and len(rollout.steps) == n and len(rollout) == len(ids)

    def dec(a, b):
        return tokenizer.decode(ids[a:b], clean_up_tokenization_spaces=False)

    for t, (step, ref) in enumerate(zip(rollout.steps, ex.chain)):
        body = ref.text.rstrip(".")
        if t < n - 1:
            assert dec(step.start, step.end).strip() == f"{body}, confidence 4/5."
            assert dec(step.statement_start, step.statement_end).strip() == "confidence 4/5"
            assert dec(step.statement_end - 1, step.statement_end).strip() == "5"  # the reward's token
            assert step.expressed_level == 4
        else:  # unmapped statement: span kept, no level
            assert dec(step.start, step.end).strip() == f"{body}, who knows."
            assert dec(step.statement_start, step.statement_end).strip() == "who knows"
            assert step.expressed_level is None
    assert rollout.steps[-1].end == len(ids) - 1  # the eos is in no step
    # consecutive steps: contiguous (the leading space token belongs to the following sentence)
    for a, b in zip(rollout.steps, rollout.steps[1:]):
        assert b.start == a.end


def test_rollout_spans_of_non_canonical_tokens(examples, tokenizer):
    """Sampled ids need not be the tokenizer's own tokenization: one token per character here,
    so each token span is the character span (plus the one space before a sentence)."""
    ex = examples[1]
    text = response_of(ex, [2] * len(ex.chain))
    ids = []
    for ch in text:
        piece = tokenizer(ch, add_special_tokens=False)["input_ids"]
        assert len(piece) == 1
        ids += piece
    decoded, ends = token_char_ends(tokenizer, ids)
    assert decoded == text and ends == list(range(1, len(text) + 1))
    parsed = parse_chain(decoded, NumericMapper())
    rollout, _ = build_rollout(ex.id, 0, ids, ends, parsed, [0] * len(parsed.steps), [1] * len(parsed.steps), 0)
    for t, (step, p) in enumerate(zip(rollout.steps, parsed.steps)):
        assert (step.start, step.end) == (p.span[0] - (t > 0), p.span[1])
        assert (step.statement_start, step.statement_end) == p.statement_span


# --- rewards -----------------------------------------------------------------------------------------

def _scored_batch(examples, tokenizer, ctx, cfg, kl_coef):
    policy = tiny(tokenizer)
    reference = tiny(tokenizer)
    with torch.no_grad():
        w = reference.model.lm_head.weight
        w.add_(0.05 * torch.randn(w.shape, generator=torch.Generator().manual_seed(1)))
    items, ids = [], []
    for g, ex in enumerate(examples[:2]):
        n = len(ex.chain)
        levels = [[5] * n, [1 + (t % 5) for t in range(n - 1)] + [None]][g]
        text = response_of(ex, levels)
        if g == 1:
            text = text.replace(ex.chain[0].text.rstrip("."), "There are 7 purple squares", 1)  # a false step
        items.append((g, ex))
        ids.append(tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
    samples = samples_from_ids(policy, items, ids, ctx, cfg)
    head = ValueHead(hidden_size_of(policy.model), 0.01, seed=0)
    pv = PolicyWithValue(policy.model, head)
    scored = score_samples(pv, policy, reference.model, samples, batch_size=4)
    return prepare_batch(scored, cfg, kl_coef), pv, policy


def test_reward_reaching_the_optimiser_is_the_configured_sum(examples, tokenizer, ctx):
    weights = RewardConfig(alpha=0.5, beta=2.0, gamma=0.25)
    cfg = RLConfig(reward=weights, gae_gamma=1.0, gae_lambda=1.0, whiten_advantages=False)
    kl_coef = 0.1
    batch, _, _ = _scored_batch(examples, tokenizer, ctx, cfg, kl_coef)
    checked_false = 0
    for i, s in enumerate(batch.samples):
        r = s.rollout
        assert s.active and len(r.steps) == len(examples[i].chain)
        expected_steps = 0.0
        for t, st in enumerate(r.steps):
            last = t == len(r.steps) - 1
            y = r.answer_correct if last else st.correct
            expected_steps += (0.5 * r_ka(y) + 2.0 * r_ec(st.expressed_level, y) + 0.25 * r_cs(st.expressed_level,
                                                                                                st.internal_level))
            checked_false += st.correct == 0
            # the step's total sits on the last token of its statement
            pos = st.statement_end - 1
            assert batch.score[i, pos].item() == pytest.approx(r.rewards[t].total)
        kl = (r.logprobs - r.ref_logprobs).sum().item()
        assert abs(kl) > 1e-4  # the reference differs, so the KL term is exercised
        n = len(r)
        assert batch.rewards[i, :n].sum().item() == pytest.approx(expected_steps - kl_coef * kl, abs=1e-5)
        assert torch.all(batch.rewards[i, n:] == 0)
        # gamma = lambda = 1, no whitening: the first token's return is the whole reward
        assert batch.returns[i, 0].item() == pytest.approx(expected_steps - kl_coef * kl, abs=1e-4)
    assert checked_false >= 1  # the planted false step was judged false by the checker
    assert batch.samples[1].rollout.steps[-1].expressed_level is None  # unparsed: -1, -1
    assert batch.samples[1].rollout.rewards[-1].r_ec == -1.0


class _HashSimilarity:
    """A deterministic stand-in for a sentence encoder: each pair scores in [0.7, 1.0)."""

    def pairwise(self, pairs):
        import zlib

        return [0.7 + 0.3 * (zlib.crc32(f"{a}|{b}".encode()) % 1000) / 1000 for a, b in pairs]


def test_annotated_data_rewards_each_step_by_its_matching_degree(examples, tokenizer, ctx):
    """On data without exact truth (no scene: the authors' annotated format), the run's step judge
    matches each step to the reference chain: R_KA = 2 m_t - 1 with m_t the step's own matching
    degree, different between the steps of one chain, and that is what reaches the optimiser."""
    from mmboundary.evaluation.consistency import arithmetic_truth
    from mmboundary.evaluation.judges import ConsistentJudge

    annotated = [ex.model_copy(update={"scene": None}) for ex in examples]
    judged_ctx = dataclasses.replace(ctx, judge=ConsistentJudge(_HashSimilarity(), 0.5))
    weights = RewardConfig(alpha=1.0, beta=0.0, gamma=0.0)  # R_KA alone
    cfg = RLConfig(reward=weights, gae_gamma=1.0, gae_lambda=1.0, whiten_advantages=False)
    batch, _, _ = _scored_batch(annotated, tokenizer, judged_ctx, cfg, kl_coef=0.0)
    s = batch.samples[0]
    r = s.rollout
    degrees = [st.knowledge for st in r.steps[:-1]]
    closed = [arithmetic_truth(step.text) is not None for step in annotated[0].chain[:-1]]
    # every step matched its own reference step, but a sum or comparison, decided by arithmetic
    assert all((d is None) if c else (d is not None and 0.7 <= d < 1.0) for d, c in zip(degrees, closed))
    matched = [d for d in degrees if d is not None]
    assert len(set(matched)) == len(matched) >= 2  # R_KA differs between the steps of one chain
    expected = [2 * d - 1 if d is not None else 2 * st.correct - 1 for d, st in zip(degrees, r.steps)] \
        + [2 * r.answer_correct - 1]
    assert [x.r_ka for x in r.rewards] == pytest.approx(expected)
    for t, st in enumerate(r.steps):
        assert batch.score[0, st.statement_end - 1].item() == pytest.approx(expected[t])
    assert batch.rewards[0, :len(r)].sum().item() == pytest.approx(sum(expected), abs=1e-5)
    # the planted false step of sample 1 ("There are 7 purple squares") contradicts every reference step
    false_step = batch.samples[1].rollout.steps[0]
    assert false_step.correct == 0 and false_step.knowledge in (None, 0.0)


def test_statement_advantage_by_hand(examples, tokenizer, ctx):
    """'statement' advantages: on statement tokens only, the step's calibration reward minus the
    mean of the other steps of its (correctness, internal level) cell, over the batch's RMS."""
    weights = RewardConfig(alpha=0.5, beta=2.0, gamma=0.25)
    cfg = RLConfig(reward=weights, advantage="statement", loss_on="statements")
    batch, _, _ = _scored_batch(examples, tokenizer, ctx, cfg, 0.05)
    items = [(i, st, rw) for i, s in enumerate(batch.samples) for st, rw in zip(s.rollout.steps, s.rollout.rewards)
             if st.statement_start is not None]
    calib = [2.0 * rw.r_ec + 0.25 * rw.r_cs for _, _, rw in items]
    cells = [(st.correct, st.internal_level) for _, st, _ in items]
    loo = []
    for k, (v, c) in enumerate(zip(calib, cells)):
        others = [w for j, (w, d) in enumerate(zip(calib, cells)) if d == c and j != k]
        loo.append(v - sum(others) / len(others) if others else 0.0)
    rms = (sum(a * a for a in loo) / len(loo)) ** 0.5
    assert rms > 0
    expected = torch.zeros_like(batch.advantages)
    for (i, st, _), a in zip(items, loo):
        expected[i, st.statement_start:st.statement_end] = a / rms
    assert torch.allclose(batch.advantages, expected, atol=1e-6)
    assert not batch.advantages[~batch.policy_mask].any()
    with pytest.raises(ValueError, match="loss_on"):
        RLConfig(advantage="statement", loss_on="all", sampling="all")
    with pytest.raises(ValueError, match="loss_on"):
        RLConfig(sampling="statements", loss_on="all")
    # a config that only says loss_on: all (e.g. saved before `sampling` existed) samples everything
    assert RLConfig(loss_on="all").sampling == "all" and RLConfig().sampling == "statements"


def test_statement_loss_masks_every_other_token(examples, tokenizer, ctx):
    from mmboundary.training.ppo_math import statement_token_mask

    cfg = RLConfig(loss_on="statements", anchor_coef=0.0)
    batch, _, _ = _scored_batch(examples, tokenizer, ctx, cfg, 0.05)
    for i, s in enumerate(batch.samples):
        n = len(s.rollout)
        assert torch.equal(batch.policy_mask[i, :n], statement_token_mask(s.rollout))
        assert not batch.policy_mask[i, n:].any()
    logp = batch.old_logprobs.clone().requires_grad_(True)
    ent = torch.rand_like(logp).requires_grad_(True)
    mb = batch.minibatch(list(range(len(batch))), batch.value_mask.shape[1])
    cfg_e = cfg.model_copy(update={"ent_coef": 0.1})
    loss, _ = ppo_loss(logp, None, ent, mb, cfg_e, 0.05, float(batch.policy_mask.sum()),
                       float(batch.value_mask.sum()))
    loss.backward()
    reached = (logp.grad != 0) | (ent.grad != 0)
    assert not reached[~batch.policy_mask].any()
    assert reached[batch.policy_mask].all()
    # the anchor: every other generated token gets exactly the gradient of
    # anchor_coef * mean_j k3(ref_j - logp_j), i.e. anchor_coef * (1 - exp(ref_j - logp_j)) / n_other
    other = batch.value_mask & ~batch.policy_mask
    cfg_a = cfg.model_copy(update={"anchor_coef": 2.0})
    logp_a = (batch.old_logprobs + 0.3 * other).clone().requires_grad_(True)
    loss, stats = ppo_loss(logp_a, None, None, mb, cfg_a, 0.05, float(batch.policy_mask.sum()),
                           float(batch.value_mask.sum()), 1, float(other.sum()))
    loss.backward()
    expected = 2.0 * (1 - torch.exp(batch.ref_logprobs - logp_a.detach())) / other.sum()
    assert torch.allclose(logp_a.grad[other], expected[other], atol=1e-6)
    assert stats["anchor_tokens"] == float(other.sum()) and stats["kl_anchor"] > 0
    # with loss_on="all", tokens outside the statements get gradient too
    cfg_all = RLConfig(loss_on="all", sampling="all")
    mb = dataclasses.replace(mb, policy_mask=batch.value_mask)
    logp2 = batch.old_logprobs.clone().requires_grad_(True)
    loss, _ = ppo_loss(logp2, None, None, mb, cfg_all, 0.05, float(batch.value_mask.sum()), 1.0)
    loss.backward()
    assert ((logp2.grad != 0) & ~batch.policy_mask).any()


# --- the loop ----------------------------------------------------------------------------------------

LOOP = dict(rollout_batch_size=2, samples_per_question=2, max_new_tokens=12, iterations=1, ppo_epochs=1,
            minibatch_size=2, forward_batch_size=4)


def _run(examples, tokenizer, ctx, cfg, out_dir=None, callback=None):
    policy, reference = tiny(tokenizer), tiny(tokenizer)
    summary, pv = train_rl(policy, reference, examples, ctx, cfg, seed=0, accelerator=make_accelerator("cpu"),
                           out_dir=out_dir, callback=callback)
    return summary, pv


def _weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_one_iteration_changes_the_weights_and_lr0_does_not(examples, tokenizer, ctx, tmp_path):
    before = _weights(PolicyWithValue(tiny(tokenizer).model, ValueHead(hidden_size_of(tiny(tokenizer).model),
                                                                       1e-3, seed=0)))
    # the whole-response path: every token sampled and trained, the value loss through the trunk
    full = dict(loss_on="all", sampling="all", value_grad_to_policy=True)
    summary, pv = _run(examples, tokenizer, ctx, RLConfig(**LOOP, **full, lr=1e-3), out_dir=tmp_path / "a")
    after = _weights(pv)
    assert set(before) == set(after)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert "value_head.linear.weight" in changed and any(k.startswith("model.model.language_model") for k in changed)
    final = summary["final"]
    assert final["responses"] == 4 and final["optimizer_steps"] == 2
    for key in ("reward/r_ka", "reward/r_ec", "reward/r_cs", "reward/total", "kl/per_response", "entropy",
                "loss/value_loss", "loss/policy_loss", "clip_fraction", "parse_rate", "levels/expressed_unparsed"):
        assert key in final
    lines = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [1]
    _, pv0 = _run(examples, tokenizer, ctx, RLConfig(**LOOP, **full, lr=0.0))
    for k, v in _weights(pv0).items():
        assert torch.equal(v, before[k]), k


class _Stop(Exception):
    pass


def test_resume_gives_the_weights_of_an_uninterrupted_run(examples, tokenizer, ctx, tmp_path):
    cfg = RLConfig(**{**LOOP, "iterations": 2}, lr=1e-3, save_every=1, kl_adaptive=True, kl_target=0.01,
                   kl_horizon=4)
    _, ref_pv = _run(examples, tokenizer, ctx, cfg)

    def stop(iteration, metrics):
        if iteration == 1:
            raise _Stop

    out = tmp_path / "rl"
    with pytest.raises(_Stop):
        _run(examples, tokenizer, ctx, cfg, out_dir=out, callback=stop)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["iter-1"]
    summary, pv = _run(examples, tokenizer, ctx, cfg, out_dir=out)
    assert summary["resumed_from"] == "iter-1"
    for (k, a), (_, b) in zip(_weights(ref_pv).items(), _weights(pv).items()):
        assert torch.equal(a, b), k
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == [1, 2]
    assert lines[1]["kl_coef"] != cfg.kl_coef  # the adaptive controller's state came back and moved


# --- 2 processes ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_processes_equal_one_with_twice_the_batch(tmp_path):
    """The same 4 rollouts: 2 processes x 2 (gloo, DDP) vs 1 process x 4; 2 PPO epochs with
    SGD. Tolerance 1e-6 on every weight (measured difference: about 5e-8)."""
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate CLI not installed")
    worker = Path(__file__).with_name("_rl_ddp_worker.py")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MMBOUNDARY_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    subprocess.run([sys.executable, str(worker), str(one)], check=True, env=env, cwd=tmp_path, timeout=300)
    subprocess.run(["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                    "--mixed_precision", "no", "--dynamo_backend", "no", str(worker), str(two)],
                   check=True, env=env, cwd=tmp_path, timeout=300)
    from safetensors.torch import load_file

    a, b = load_file(str(one)), load_file(str(two))
    assert set(a) == set(b)
    moved = max((a[k] - b[k]).abs().max().item() for k in a)
    assert moved < 1e-6
    sa, sb = json.loads(Path(str(one) + ".json").read_text()), json.loads(Path(str(two) + ".json").read_text())
    for k in ("policy_loss", "value_loss", "entropy", "clip_fraction", "kl_ref"):
        assert sa[k] == pytest.approx(sb[k], rel=1e-5, abs=1e-7), k
    assert sa["clip_fraction"] > 0  # the second epoch moved the ratios: the update did something


def test_response_scores_are_those_of_the_tempered_policy():
    """Token j of a row is scored by the logits one position earlier, divided by the temperature."""
    from mmboundary.training.scoring import response_scores

    torch.manual_seed(0)
    logits = torch.randn(1, 5, 7)
    tokens = [[3, 6]]  # prompt of 2 tokens: token 0 predicted at position 1, token 1 at position 2
    for t in (1.0, 2.0, 0.5):
        logp, _, ent, mask = response_scores(logits, None, [2], tokens, with_entropy=True, temperature=t)
        ref = torch.log_softmax(logits[0, 1:3] / t, dim=-1)
        assert torch.allclose(logp[0], torch.stack([ref[0, 3], ref[1, 6]]))
        assert torch.allclose(ent[0], -(ref.exp() * ref).sum(-1))
        assert mask.tolist() == [[True, True]]


def test_sampling_never_emits_the_image_token(examples, tokenizer):
    """At a very high temperature every token is likely; the image placeholder, bos and pad are
    still never generated (a sampled image token broke the teacher-forced pass)."""
    from mmboundary.data.images import load_image

    vlm = tiny(tokenizer)
    banned = vlm.never_generated_ids()
    assert vlm.model.config.image_token_id in banned and vlm.eos_token_id not in banned
    ex = examples[0]
    torch.manual_seed(0)
    ids = vlm.generate_ids([ex.question] * 8, [ex.choices] * 8, [load_image(ex.image)] * 8,
                           max_new_tokens=60, do_sample=True, temperature=50.0)
    assert sum(len(x) for x in ids) > 300
    assert not any(t in banned for x in ids for t in x)


# --- algorithm 'expected' (the expected reward over levels) -------------------------------------

def _level_setup(examples, tokenizer, ctx, cfg):
    from mmboundary.training.rl_levels import prepare_level_batch

    batch, pv, policy = _scored_batch(examples, tokenizer, ctx, cfg, 0.05)
    reference = tiny(tokenizer)
    with torch.no_grad():
        w = reference.model.lm_head.weight
        w.add_(0.05 * torch.randn(w.shape, generator=torch.Generator().manual_seed(1)))
    chains = prepare_level_batch(batch.samples, policy, reference.model, ctx, cfg)
    return batch, pv, policy, reference, chains


def test_level_alternatives_score_the_statement_tokens(examples, tokenizer, ctx):
    cfg = RLConfig(algorithm="expected")
    batch, _, policy, reference, chains = _level_setup(examples, tokenizer, ctx, cfg)
    # example 1's last statement maps to no level ("who knows") but has a comma: it gets alternatives too
    assert [c.steps for c in chains] == [len(examples[0].chain), len(examples[1].chain)]
    c = chains[0]
    own = c.tokens[4]  # step 0, level 5: the sentence the response itself wrote ("confidence 5/5.")
    original = [int(x) for x in c.sample.rollout.tokens]
    assert original[:len(own)] == own
    # the five levels' statements are disjoint continuations of one prefix: probabilities sum to <= 1
    probs = c.ref_level_logp.exp()
    assert torch.all(probs.sum(1) <= 1 + 1e-5) and torch.all(probs > 0)
    assert len(set(round(float(x), 6) for x in c.ref_level_logp[0])) == 5
    # cross-check one level's log-prob through the SFT path (`VLM.encode` with a response + labels)
    text = tokenizer.decode(c.tokens[2])  # step 0, level 3
    enc = policy.encode([c.sample.prompt], [c.sample.image], responses=[text])
    with torch.no_grad():
        logits = reference.model(**{k: v for k, v in enc.items() if k != "labels"}).logits
    labels = enc["labels"][0]
    logp = torch.log_softmax(logits[0, :-1].float(), -1).gather(1, labels[1:].clamp_min(0).unsqueeze(1)).squeeze(1)
    response_positions = (labels[1:] != -100).nonzero().squeeze(1)
    start = c.starts[2]
    region = response_positions[start:len(c.tokens[2])]  # eos excluded
    assert float(logp[region].sum()) == pytest.approx(float(c.ref_level_logp[0, 2]), abs=1e-4)


def test_level_update_raises_the_expected_reward(examples, tokenizer, ctx):
    from mmboundary.training.rl_levels import level_update, prepare_level_batch

    cfg = RLConfig(algorithm="expected", kl_coef=0.0, anchor_coef=0.0, ppo_epochs=1, minibatch_size=2, lr=3e-3)
    batch, pv, policy, _, chains = _level_setup(examples, tokenizer, ctx, cfg)

    def expected(model):
        mine = prepare_level_batch(batch.samples, policy, model, ctx, cfg)
        q = torch.cat([torch.softmax(m.ref_level_logp, -1) for m in mine])
        return float((q * torch.cat([m.rewards for m in mine])).sum(1).mean())

    before = expected(policy.model)
    opt = torch.optim.Adam(pv.parameters(), lr=cfg.lr)
    out = level_update(pv, policy, batch, chains, cfg, None, opt)
    assert out["optimizer_steps"] == 1
    assert out["expected_reward"] == pytest.approx(before, abs=1e-5)  # measured before the step
    after = expected(policy.model)
    assert after > before + 1e-4
    # lr = 0: nothing moves
    opt0 = torch.optim.SGD(pv.parameters(), lr=0.0)
    level_update(pv, policy, batch, chains, cfg, None, opt0)
    assert expected(policy.model) == pytest.approx(after, abs=1e-6)


def test_every_configurable_advantage_is_registered():
    """`rl.advantage` names an estimator of the registry (one signature); only GAE uses the critic."""
    import typing

    from mmboundary.training.estimators import ADVANTAGE_ESTIMATORS, advantage_estimator

    names = typing.get_args(RLConfig.model_fields["advantage"].annotation)
    assert set(names) == set(ADVANTAGE_ESTIMATORS)
    assert {n: advantage_estimator(n).critic for n in names} == {"gae": True, "group": False, "statement": False}
    with pytest.raises(ValueError, match="registered"):
        advantage_estimator("vtrace")


def test_expected_needs_the_statement_loss():
    with pytest.raises(ValueError, match="loss_on: statements"):
        RLConfig(algorithm="expected", loss_on="all")


def test_fresh_questions_are_new_benchmark_questions(tmp_path):
    from mmboundary.artifacts import load_split
    from mmboundary.config import load_config
    from mmboundary.errors import ConfigError
    from mmboundary.pipeline import run_stage
    from mmboundary.runs import Run
    from mmboundary.stages.rl import rl_questions

    cfg = load_config(None, ["data.benchmark.n_train=12", "data.benchmark.n_test=2", "data.benchmark.n_ood=2"])
    run = Run.open(tmp_path / "run", cfg)
    run_stage(run, "data")
    run.stage_dir("rl").mkdir(parents=True, exist_ok=True)
    train = load_split(run, "train")
    rl = RLConfig(questions="fresh", iterations=3, rollout_batch_size=4)
    fresh = rl_questions(run, rl)
    assert len(fresh) == 12 and all(ex.id.startswith("fresh-") for ex in fresh)
    assert all(Path(ex.image).is_file() and "questions" in Path(ex.image).parts for ex in fresh)
    seen = {(ex.question, tuple(ex.answers)) for ex in train}
    assert sum((ex.question, tuple(ex.answers)) in seen for ex in fresh) < len(fresh)  # another draw
    assert [ex.model_dump() for ex in rl_questions(run, rl)] == [ex.model_dump() for ex in fresh]  # deterministic
    assert [ex.id for ex in rl_questions(run, RLConfig(train_examples=5))] == [ex.id for ex in train[:5]]
    other = Run.open(tmp_path / "jsonl",
                     load_config(None, ["data.source=jsonl", "data.train=x.jsonl", "data.test=y.jsonl"]))
    with pytest.raises(ConfigError, match="built-in benchmark"):
        rl_questions(other, rl)


def test_answer_granularity_scores_one_answer_statement(examples, tokenizer, ctx):
    """The SaySelf-style row (`statements.granularity: answer`, alpha = gamma = 0): a response with
    one statement, after the final step, gets one reward, R_EC of the answer, on that statement's
    last token; the optimiser receives it minus the KL penalty."""
    import dataclasses

    cfg = RLConfig(reward=RewardConfig(alpha=0.0, beta=1.0, gamma=0.0), gae_gamma=1.0, gae_lambda=1.0,
                   whiten_advantages=False)
    actx = dataclasses.replace(ctx, granularity="answer")
    policy, reference = tiny(tokenizer), tiny(tokenizer)
    ex = examples[0]
    n = len(ex.chain)
    text = write_chain([s.text for s in ex.chain], [None] * (n - 1) + ["confidence 4/5"])
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]]
    (sample,) = samples_from_ids(policy, [(0, ex)], ids, actx, cfg)
    r = sample.rollout
    assert len(r.steps) == 1 and r.steps[0].expressed_level == 4 and r.steps[0].correct == r.answer_correct == 1
    head = ValueHead(hidden_size_of(policy.model), 0.01, seed=0)
    scored = score_samples(PolicyWithValue(policy.model, head), policy, reference.model, [sample], batch_size=4)
    batch = prepare_batch(scored, cfg, 0.1)
    r = batch.samples[0].rollout
    assert r.rewards[0].total == pytest.approx(1 - 2 * (0.7 - 1) ** 2)  # 0.82
    kl = (r.logprobs - r.ref_logprobs).sum().item()
    assert batch.score[0, r.steps[0].statement_end - 1].item() == pytest.approx(0.82)
    assert batch.rewards[0, :len(r)].sum().item() == pytest.approx(0.82 - 0.1 * kl, abs=1e-5)

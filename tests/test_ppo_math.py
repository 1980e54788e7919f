"""Clipped policy loss, value loss, entropy and token masks (mmboundary.training.ppo_math).

Expected values are written out by hand in each test (clip eps = 0.2 throughout).
"""

from __future__ import annotations

import math

import pytest
import torch

from mmboundary.training.ppo_math import (
    approx_kl,
    batch_token_mask,
    clip_fraction,
    entropy_from_logits,
    masked_entropy,
    policy_loss,
    statement_token_mask,
    step_token_mask,
    value_loss,
)
from mmboundary.training.rollout import Rollout, RolloutStep

F64 = torch.float64
# Six tokens: (ratio, advantage) covering inside/outside the clip range, both signs.
RATIOS = [1.1, 1.5, 0.5, 0.5, 1.5, 0.9]
ADVANTAGES = [2.0, 1.0, 1.0, -1.0, -2.0, -1.0]
# Per-token max(-A * r, -A * clip(r, 0.8, 1.2)):
#   r=1.1, A=+2: max(-2.2, -2.2) = -2.2  (inside the range)
#   r=1.5, A=+1: max(-1.5, -1.2) = -1.2  (clipped: no incentive beyond 1.2)
#   r=0.5, A=+1: max(-0.5, -0.8) = -0.5  (unclipped: the pessimistic term)
#   r=0.5, A=-1: max( 0.5,  0.8) =  0.8  (clipped)
#   r=1.5, A=-2: max( 3.0,  2.4) =  3.0  (unclipped)
#   r=0.9, A=-1: max( 0.9,  0.9) =  0.9  (inside)
PER_TOKEN = [-2.2, -1.2, -0.5, 0.8, 3.0, 0.9]


def batch(pad: bool = False):
    """The six tokens as a [2, 3] batch (logp_old = -1), optionally with a padded column of
    garbage (inf, NaN) appended."""
    logp_old = torch.full((2, 3), -1.0, dtype=F64)
    logp_new = logp_old + torch.log(torch.tensor(RATIOS, dtype=F64)).view(2, 3)
    adv = torch.tensor(ADVANTAGES, dtype=F64).view(2, 3)
    mask = torch.ones((2, 3), dtype=torch.bool)
    if pad:
        logp_new = torch.cat([logp_new, torch.tensor([[math.inf], [5.0]], dtype=F64)], dim=1)
        logp_old = torch.cat([logp_old, torch.tensor([[-3.0], [math.nan]], dtype=F64)], dim=1)
        adv = torch.cat([adv, torch.tensor([[1e9], [-1e9]], dtype=F64)], dim=1)
        mask = torch.cat([mask, torch.zeros((2, 1), dtype=torch.bool)], dim=1)
    return logp_new.requires_grad_(True), logp_old, adv, mask


def test_policy_loss_by_hand():
    logp_new, logp_old, adv, mask = batch()
    out = policy_loss(logp_new, logp_old, adv, mask, clip_eps=0.2)
    # (-2.2 - 1.2 - 0.5 + 0.8 + 3.0 + 0.9) / 6 = 0.8 / 6
    assert sum(PER_TOKEN) == pytest.approx(0.8)
    assert out.loss.item() == pytest.approx(0.8 / 6)
    # |r - 1| > 0.2 for r = 1.5, 0.5, 0.5, 1.5: 4 of 6 tokens
    assert out.clip_fraction.item() == pytest.approx(4 / 6)
    # k3: mean of (r - 1) - log r
    expected_kl = sum((r - 1) - math.log(r) for r in RATIOS) / 6
    assert out.approx_kl.item() == pytest.approx(expected_kl)
    # Gradient: d/dlogp of -A * r = -A * r where the unclipped term is the max, 0 where the
    # clipped (constant) term is; divided by the 6 counted tokens.
    out.loss.backward()
    expected_grad = [-2.0 * 1.1, 0.0, -1.0 * 0.5, 0.0, 2.0 * 1.5, 1.0 * 0.9]
    torch.testing.assert_close(logp_new.grad.view(-1),
                               torch.tensor(expected_grad, dtype=F64) / 6)


def test_policy_loss_padding_invariance():
    plain = policy_loss(*batch())
    padded_new, padded_old, padded_adv, padded_mask = batch(pad=True)
    padded = policy_loss(padded_new, padded_old, padded_adv, padded_mask)
    assert padded.loss.item() == pytest.approx(plain.loss.item())
    assert padded.clip_fraction.item() == pytest.approx(plain.clip_fraction.item())
    assert padded.approx_kl.item() == pytest.approx(plain.approx_kl.item())
    padded.loss.backward()
    assert torch.isfinite(padded_new.grad).all()
    assert padded_new.grad[:, 3].abs().sum().item() == 0.0


def test_policy_loss_mask_selects_tokens():
    logp_new, logp_old, adv, _ = batch()
    mask = torch.tensor([[True, False, False], [False, True, False]])
    # tokens 0 and 4: (-2.2 + 3.0) / 2 = 0.4
    assert policy_loss(logp_new, logp_old, adv, mask).loss.item() == pytest.approx(0.4)


def test_policy_loss_at_ratio_one_is_minus_mean_advantage():
    logp = torch.tensor([[-0.3, -2.0]], dtype=F64)
    adv = torch.tensor([[1.5, -0.5]], dtype=F64)
    out = policy_loss(logp, logp, adv, torch.ones_like(adv, dtype=torch.bool))
    assert out.loss.item() == pytest.approx(-(1.5 - 0.5) / 2)
    assert out.clip_fraction.item() == 0.0
    assert out.approx_kl.item() == 0.0


def test_clip_fraction_and_approx_kl_helpers():
    ratio = torch.tensor([1.0, 1.19, 1.21, 0.79], dtype=F64)
    mask = torch.tensor([True, True, True, False])
    # outside (|r - 1| > 0.2) among the three counted: only 1.21
    assert clip_fraction(ratio, mask, 0.2).item() == pytest.approx(1 / 3)
    log_ratio = torch.log(torch.tensor([2.0, 0.5], dtype=F64))
    # (2 - 1 - ln 2) and (0.5 - 1 + ln 2), averaged
    expected = ((1 - math.log(2)) + (-0.5 + math.log(2))) / 2
    assert approx_kl(log_ratio, torch.ones(2, dtype=torch.bool)).item() == pytest.approx(expected)


def test_value_loss_by_hand():
    v_old = torch.tensor([1.0, 1.0, 1.0, 7.0], dtype=F64)
    v_new = torch.tensor([1.5, 1.1, 0.5, -7.0], dtype=F64, requires_grad=True)
    returns = torch.tensor([2.0, 0.0, 0.0, 100.0], dtype=F64)
    mask = torch.tensor([True, True, True, False])
    out = value_loss(v_new, v_old, returns, mask, clip_range=0.2)
    # token 0: (1.5 - 2)^2 = 0.25; clipped v = 1 + 0.2 = 1.2: (1.2 - 2)^2 = 0.64 -> 0.64
    # token 1: (1.1 - 0)^2 = 1.21; clipped v = 1.1 (inside):            1.21 -> 1.21
    # token 2: (0.5 - 0)^2 = 0.25; clipped v = 1 - 0.2 = 0.8: 0.64      -> 0.64
    assert out.loss.item() == pytest.approx(0.5 * (0.64 + 1.21 + 0.64) / 3)
    assert out.clip_fraction.item() == pytest.approx(2 / 3)
    out.loss.backward()
    # Only token 1 (unclipped term the max) has a gradient: 0.5 * 2 * (1.1 - 0) / 3
    torch.testing.assert_close(v_new.grad, torch.tensor([0.0, 1.1 / 3, 0.0, 0.0], dtype=F64))
    plain = value_loss(v_new.detach(), v_old, returns, mask, clip_range=None)
    assert plain.loss.item() == pytest.approx(0.5 * (0.25 + 1.21 + 0.25) / 3)


def test_entropy_by_hand():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0],
                            [math.log(0.5), math.log(0.25), math.log(0.25), -math.inf],
                            [100.0, 0.0, 0.0, 0.0]]], dtype=F64)
    ent = entropy_from_logits(logits)
    # uniform over 4: ln 4; (0.5, 0.25, 0.25, 0): -(0.5 ln 0.5 + 2 * 0.25 ln 0.25) = 1.5 ln 2;
    # a near one-hot distribution: ~0
    assert ent[0, 0].item() == pytest.approx(math.log(4))
    assert ent[0, 1].item() == pytest.approx(1.5 * math.log(2))
    assert ent[0, 2].item() == pytest.approx(0.0, abs=1e-30)
    mask = torch.tensor([[True, True, False]])
    expected = (math.log(4) + 1.5 * math.log(2)) / 2
    assert masked_entropy(logits, mask).item() == pytest.approx(expected)
    grad_logits = logits.clone().requires_grad_(True)
    masked_entropy(grad_logits, torch.ones((1, 3), dtype=torch.bool)).backward()
    assert torch.isfinite(grad_logits.grad).all()
    half = entropy_from_logits(logits[:, :2].to(torch.bfloat16))
    assert half.dtype == torch.float32


def mask_rollout() -> Rollout:
    steps = (
        RolloutStep(0, 4, 2, 4, expressed_level=4, internal_level=4, correct=1),
        RolloutStep(5, 8, None, None, expressed_level=None, internal_level=2, correct=0),
        RolloutStep(8, 10, 9, 10, expressed_level=None, internal_level=3, correct=1),
    )
    return Rollout("m", 3, tuple(range(11)), steps, answer_correct=1)


def test_statement_and_step_token_masks():
    r = mask_rollout()
    # statements: [2, 4) and [9, 10); step 1 has none
    assert statement_token_mask(r).nonzero().view(-1).tolist() == [2, 3, 9]
    # steps: [0, 4), [5, 8), [8, 10); token 4 between steps and token 10 after them are out
    assert step_token_mask(r).nonzero().view(-1).tolist() == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    short = Rollout("s", 0, (1, 2), (RolloutStep(0, 2, 1, 2, expressed_level=3,
                                                 internal_level=3, correct=1),), answer_correct=1)
    m = batch_token_mask([r, short], which="statements")
    assert m.shape == (2, 11)
    assert m[1].tolist() == [False, True] + [False] * 9
    assert batch_token_mask([r, short]).sum(dim=1).tolist() == [11, 2]
    assert batch_token_mask([r, short], length=12, which="steps").sum(dim=1).tolist() == [9, 2]
    with pytest.raises(ValueError):
        batch_token_mask([r], which="tokens")


def test_statement_mask_restricts_policy_loss():
    r = mask_rollout()
    n = len(r)
    logp_old = torch.zeros(1, n, dtype=F64)
    logp_new = torch.zeros(1, n, dtype=F64)  # ratio 1 everywhere: loss = -mean(A)
    adv = torch.arange(n, dtype=F64).view(1, n)
    mask = statement_token_mask(r).view(1, n)
    # statement tokens 2, 3, 9: -(2 + 3 + 9) / 3
    assert policy_loss(logp_new, logp_old, adv, mask).loss.item() == pytest.approx(-14 / 3)

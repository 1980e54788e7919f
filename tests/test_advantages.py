"""GAE, whitening and group-normalised step advantages (mmboundary.training.advantages).

Expected values are written out by hand in each test.
"""

from __future__ import annotations

import math

import pytest
import torch

from mmboundary.training.advantages import (
    broadcast_step_values,
    gae,
    group_normalized_step_advantages,
    group_token_advantages,
    masked_mean,
    masked_var,
    step_returns,
    whiten,
)
from mmboundary.training.rewards import RewardConfig, assign_rewards
from mmboundary.training.rollout import Rollout, RolloutStep

F64 = torch.float64
# A 5-token sequence: step rewards on tokens 2 and 4, values chosen by hand.
REWARDS = torch.tensor([0.0, 0.0, 1.0, 0.0, 2.0], dtype=F64)
VALUES = torch.tensor([0.5, 0.4, 0.3, 0.2, 0.1], dtype=F64)


def close(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype))


def test_gae_by_hand():
    gamma, lam = 0.9, 0.8
    # delta_i = r_i + gamma * V_{i+1} - V_i, with V_5 = 0 (terminal):
    d4 = 2.0 + 0.9 * 0.0 - 0.1  # 1.9
    d3 = 0.0 + 0.9 * 0.1 - 0.2  # -0.11
    d2 = 1.0 + 0.9 * 0.2 - 0.3  # 0.88
    d1 = 0.0 + 0.9 * 0.3 - 0.4  # -0.13
    d0 = 0.0 + 0.9 * 0.4 - 0.5  # -0.14
    # A_i = delta_i + gamma * lambda * A_{i+1}, gamma * lambda = 0.72:
    a4 = d4  # 1.9
    a3 = d3 + 0.72 * a4  # 1.258
    a2 = d2 + 0.72 * a3  # 1.78576
    a1 = d1 + 0.72 * a2  # 1.1557472
    a0 = d0 + 0.72 * a1  # 0.692137984
    assert [a0, a1, a2, a3, a4] == pytest.approx([0.692137984, 1.1557472, 1.78576, 1.258, 1.9])
    advantages, returns = gae(REWARDS, VALUES, gamma=gamma, lam=lam)
    close(advantages, [a0, a1, a2, a3, a4])
    close(returns, [a0 + 0.5, a1 + 0.4, a2 + 0.3, a3 + 0.2, a4 + 0.1])


def test_gae_lambda_one_is_reward_to_go_minus_value():
    advantages, returns = gae(REWARDS, VALUES, gamma=1.0, lam=1.0)
    # reward-to-go: [0+0+1+0+2, 0+1+0+2, 1+0+2, 0+2, 2] = [3, 3, 3, 2, 2]
    close(advantages, [3 - 0.5, 3 - 0.4, 3 - 0.3, 2 - 0.2, 2 - 0.1])
    close(returns, [3.0, 3.0, 3.0, 2.0, 2.0])


def test_gae_lambda_zero_is_td_errors():
    advantages, _ = gae(REWARDS, VALUES, gamma=1.0, lam=0.0)
    # delta_i = r_i + V_{i+1} - V_i
    close(advantages, [0 + 0.4 - 0.5, 0 + 0.3 - 0.4, 1 + 0.2 - 0.3, 0 + 0.1 - 0.2, 2 + 0 - 0.1])


def test_gae_padding_does_not_leak():
    gamma, lam = 0.9, 0.8
    alone, alone_returns = gae(REWARDS, VALUES, gamma=gamma, lam=lam)
    short_r = torch.tensor([1.0, -1.0, 0.5], dtype=F64)
    short_v = torch.tensor([0.2, 0.0, -0.3], dtype=F64)
    short, short_returns = gae(short_r, short_v, gamma=gamma, lam=lam)
    # Right padding with garbage rewards and values in padded slots.
    rewards = torch.tensor([[*REWARDS.tolist(), 50.0], [*short_r.tolist(), 7.0, -8.0, 9.0]],
                           dtype=F64)
    values = torch.tensor([[*VALUES.tolist(), 100.0], [*short_v.tolist(), 3.0, 4.0, 5.0]],
                          dtype=F64)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    advantages, returns = gae(rewards, values, mask, gamma=gamma, lam=lam)
    torch.testing.assert_close(advantages[0, :5], alone)
    torch.testing.assert_close(returns[0, :5], alone_returns)
    torch.testing.assert_close(advantages[1, :3], short)
    torch.testing.assert_close(returns[1, :3], short_returns)
    assert advantages[~mask].abs().sum().item() == 0.0
    assert returns[~mask].abs().sum().item() == 0.0
    # Left padding gives the same numbers at the real positions.
    left_r = torch.tensor([[-5.0, -5.0, *short_r.tolist()]], dtype=F64)
    left_v = torch.tensor([[9.0, 9.0, *short_v.tolist()]], dtype=F64)
    left_m = torch.tensor([[0, 0, 1, 1, 1]], dtype=torch.bool)
    left, _ = gae(left_r, left_v, left_m, gamma=gamma, lam=lam)
    torch.testing.assert_close(left[0, 2:], short)
    assert left[0, :2].tolist() == [0.0, 0.0]


def test_masked_mean_and_var():
    x = torch.tensor([1.0, 2.0, 3.0, 6.0, 100.0], dtype=F64)
    mask = torch.tensor([True, True, True, True, False])
    # mean (1 + 2 + 3 + 6) / 4 = 3; population variance (4 + 1 + 0 + 9) / 4 = 3.5
    assert masked_mean(x, mask).item() == pytest.approx(3.0)
    assert masked_var(x, mask).item() == pytest.approx(3.5)
    with pytest.raises(ValueError, match="empty"):
        masked_mean(x, torch.zeros(5, dtype=torch.bool))


def test_whiten_by_hand_and_with_padding():
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0, 100.0]], dtype=F64)
    mask = torch.tensor([[True, True, True, True, False]])
    std = math.sqrt(3.5)
    out = whiten(x, mask, eps=0.0)
    close(out, [[-2 / std, -1 / std, 0.0, 3 / std, 0.0]])
    kept = whiten(x, mask, shift_mean=False, eps=0.0)
    close(kept, [[-2 / std + 3, -1 / std + 3, 3.0, 3 / std + 3, 0.0]])
    # Whitened real positions have mean 0 and (population) variance 1.
    assert masked_mean(out, mask).item() == pytest.approx(0.0, abs=1e-12)
    assert masked_var(out, mask).item() == pytest.approx(1.0)
    # The padded value does not matter.
    x2 = x.clone()
    x2[0, 4] = -1e6
    torch.testing.assert_close(whiten(x2, mask, eps=0.0), out)
    # eps keeps a constant input finite (all zeros).
    assert whiten(torch.ones(3, dtype=F64), torch.ones(3, dtype=torch.bool)).tolist() == [0.0] * 3


def test_step_returns():
    assert step_returns([1.0, -1.0, 2.0]) == pytest.approx([2.0, 1.0, 2.0])
    # discount 0.5: G_2 = 2; G_1 = -1 + 0.5 * 2 = 0; G_0 = 1 + 0.5 * 0 = 1
    assert step_returns([1.0, -1.0, 2.0], discount=0.5) == pytest.approx([1.0, 0.0, 2.0])
    assert step_returns([]) == []


def test_group_normalized_step_advantages_by_hand():
    group = [[1.0, -1.0, 2.0], [0.5]]
    # returns: sample 0 -> [2, 1, 2]; sample 1 -> [0.5]. Pooled [2, 1, 2, 0.5]:
    mean = (2 + 1 + 2 + 0.5) / 4  # 1.375
    var = ((2 - mean) ** 2 + (1 - mean) ** 2 + (2 - mean) ** 2 + (0.5 - mean) ** 2) / 4
    assert var == pytest.approx(0.421875)
    std = math.sqrt(var)
    out = group_normalized_step_advantages(group, eps=0.0)
    assert out[0] == pytest.approx([(2 - mean) / std, (1 - mean) / std, (2 - mean) / std])
    assert out[1] == pytest.approx([(0.5 - mean) / std])
    eps_out = group_normalized_step_advantages(group, eps=1e-6)
    assert eps_out[1] == pytest.approx([(0.5 - mean) / (std + 1e-6)])
    # All returns equal (returns [1] and [0 + 1, 1] = [1, 1]): no signal, all zeros;
    # empty samples stay empty.
    assert group_normalized_step_advantages([[1.0], [0.0, 1.0]]) == [[0.0], [0.0, 0.0]]
    assert group_normalized_step_advantages([[], [2.0]]) == [[], [0.0]]
    assert group_normalized_step_advantages([[], []]) == [[], []]


def gap_rollout() -> Rollout:
    """10 tokens: token 0 before any step, steps [1, 3), [4, 7), [7, 9), token 3 between steps,
    token 9 after the last step."""
    steps = (
        RolloutStep(1, 3, 2, 3, expressed_level=5, internal_level=5, correct=1),
        RolloutStep(4, 7, 6, 7, expressed_level=2, internal_level=3, correct=0),
        RolloutStep(7, 9, 8, 9, expressed_level=4, internal_level=4, correct=1),
    )
    return Rollout("g", 4, tuple(range(10)), steps, answer_correct=1)


def test_broadcast_step_values():
    out = broadcast_step_values(gap_rollout(), [1.0, 2.0, 3.0])
    # token:          0    1    2    3    4    5    6    7    8    9
    assert out.tolist() == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 3.0, 3.0, 0.0]
    with pytest.raises(ValueError):
        broadcast_step_values(gap_rollout(), [1.0])


def test_group_token_advantages_from_rollouts():
    config = RewardConfig()
    a = assign_rewards(gap_rollout(), config)
    # Totals of a's steps (final step scored against a = 1):
    # step 0: 1 + (1 - 2*0.1^2 = 0.98) + 1 = 2.98
    # step 1: -1 + (1 - 2*0.3^2 = 0.82) + (1 - 2*1/4 = 0.5) = 0.32
    # step 2: 1 + (1 - 2*0.3^2 = 0.82) + 1 = 2.82
    assert [s.total for s in a.rewards] == pytest.approx([2.98, 0.32, 2.82])
    b = assign_rewards(Rollout("g", 4, (5, 6, 7), (
        RolloutStep(0, 3, 1, 3, expressed_level=None, internal_level=2, correct=0),),
        answer_correct=0), config)
    # b's single (final) step: -1 - 1 - 1 = -3
    assert b.rewards[0].total == pytest.approx(-3.0)
    # Returns: a -> [2.98 + 0.32 + 2.82 = 6.12, 0.32 + 2.82 = 3.14, 2.82]; b -> [-3]
    pooled = [6.12, 3.14, 2.82, -3.0]
    mean = sum(pooled) / 4
    std = math.sqrt(sum((g - mean) ** 2 for g in pooled) / 4)
    adv = [(g - mean) / (std + 1e-6) for g in pooled]
    ta, tb = group_token_advantages([a, b])
    assert ta.tolist() == pytest.approx([adv[0]] * 3 + [adv[1]] * 4 + [adv[2]] * 2 + [0.0])
    assert tb.tolist() == pytest.approx([adv[3]] * 3)
    with pytest.raises(ValueError, match="assign_rewards"):
        group_token_advantages([gap_rollout()])


# --- leave-one-out baseline within cells (the 'statement' estimator) -------------------------------

def test_leave_one_out_advantages_by_hand():
    from mmboundary.training.advantages import cell_sums, leave_one_out_advantages

    values, cells = [1.0, 3.0, 5.0, 2.0], [0, 0, 0, 1]
    sums, counts = cell_sums(values, cells, 3)
    assert sums.tolist() == [9.0, 2.0, 0.0] and counts.tolist() == [3.0, 1.0, 0.0]
    # 1 - (3+5)/2 = -3; 3 - (1+5)/2 = 0; 5 - (1+3)/2 = 3; alone in its cell: 0
    assert leave_one_out_advantages(values, cells, sums, counts) == [-3.0, 0.0, 3.0, 0.0]


def test_leave_one_out_uses_the_totals_of_every_process():
    from mmboundary.training.advantages import cell_sums, leave_one_out_advantages

    a_vals, a_cells = [1.0, 3.0], [0, 0]
    b_vals, b_cells = [5.0, 2.0], [0, 1]
    sa, ca = cell_sums(a_vals, a_cells, 2)
    sb, cb = cell_sums(b_vals, b_cells, 2)
    whole = leave_one_out_advantages(a_vals + b_vals, a_cells + b_cells, sa + sb, ca + cb)
    split = (leave_one_out_advantages(a_vals, a_cells, sa + sb, ca + cb)
             + leave_one_out_advantages(b_vals, b_cells, sa + sb, ca + cb))
    assert whole == split == [-3.0, 0.0, 3.0, 0.0]
    with pytest.raises(ValueError, match="outside"):
        cell_sums([1.0], [2], 2)
    with pytest.raises(ValueError, match="do not include"):
        leave_one_out_advantages([1.0], [1], sa, ca)

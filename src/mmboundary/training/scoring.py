"""Teacher-forced passes over exactly the sampled tokens (no gradient here; `ppo.ppo_update` and
`rl_levels.level_update` run the same functions with it).

    response_scores      per response token: log-prob, value, entropy and the validity mask,
                         from a pass over `confidence.scorer.response_inputs`
    reference_logits     the frozen reference (SFT) model's logits (or the policy with its LoRA
                         adapters disabled)
    score_samples        fill each sample's rollout with the policy's old log-probs and values
                         and the reference's log-probs
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mmboundary.confidence.scorer import response_inputs
from mmboundary.training.ppo_math import entropy_from_logits
from mmboundary.training.samples import Sample

__all__ = ["reference_logits", "response_scores", "score_samples"]


def response_scores(logits: torch.Tensor, values: torch.Tensor | None, prompt_lengths: Sequence[int],
                    token_lists: Sequence[Sequence[int]], with_entropy: bool = False, temperature: float = 1.0):
    """Per response token: log-prob [B, L], value [B, L] (None without values), entropy [B, L]
    (None unless asked) and the validity mask [B, L] (right padded, L = longest response).

    Token j of row b sits at position p_b + j; it is predicted by the logits at p_b + j - 1, and
    its state's value V(s_j) is the value at that same position. `temperature`: the scores are
    those of the tempered distribution softmax(logits / temperature), the one rollouts sample from,
    so PPO's ratios and the KL are those of the policy that acted."""
    batch = len(token_lists)
    length = max(1, max(len(t) for t in token_lists))
    device = logits.device
    pos = torch.zeros((batch, length), dtype=torch.long, device=device)
    toks = torch.zeros((batch, length), dtype=torch.long, device=device)
    mask = torch.zeros((batch, length), dtype=torch.bool, device=device)
    for b, (p, t) in enumerate(zip(prompt_lengths, token_lists)):
        n = len(t)
        pos[b, :n] = torch.arange(p - 1, p - 1 + n, device=device)
        toks[b, :n] = torch.tensor(list(t), dtype=torch.long, device=device)
        mask[b, :n] = True
    sel = logits.gather(1, pos.unsqueeze(-1).expand(-1, -1, logits.shape[-1])).float()
    if temperature != 1.0:
        sel = sel / temperature
    logp = torch.log_softmax(sel, dim=-1).gather(-1, toks.unsqueeze(-1)).squeeze(-1)
    logp = torch.where(mask, logp, torch.zeros_like(logp))
    vals = None
    if values is not None:
        vals = torch.where(mask, values.gather(1, pos).float(), torch.zeros_like(logp))
    ent = entropy_from_logits(sel) if with_entropy else None
    return logp, vals, ent, mask


def reference_logits(model, reference_model, inputs: Mapping[str, Any], adapter_off: bool = False) -> torch.Tensor:
    """Logits of the frozen reference (the SFT model) on `inputs`: `reference_model` in eval mode,
    or, with LoRA (`adapter_off`), the policy `model` with its adapters disabled."""
    if adapter_off:
        with model.disable_adapter():
            return model(**inputs, use_cache=False).logits
    reference_model.eval()
    return reference_model(**inputs, use_cache=False).logits


@torch.no_grad()
def score_samples(policy_value, vlm, reference_model, samples: Sequence[Sample], batch_size: int,
                  reference_is_adapter_off: bool = False, temperature: float = 1.0) -> list[Sample]:
    """Fill each sample's rollout with the policy's log-probs and values and the reference's
    log-probs (teacher-forced over exactly the sampled tokens, in eval mode)."""
    out = []
    model = policy_value.model
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        tokens = [s.rollout.tokens for s in chunk]
        inputs, n_prompt = response_inputs(vlm, [s.prompt for s in chunk], [s.image for s in chunk], tokens)
        was_training = policy_value.training
        policy_value.eval()
        try:
            logits, values = policy_value(**inputs)
            logp, vals, _, _ = response_scores(logits, values, n_prompt, tokens, temperature=temperature)
            ref_logits = reference_logits(model, reference_model, inputs, reference_is_adapter_off)
            ref_logp, _, _, _ = response_scores(ref_logits, None, n_prompt, tokens, temperature=temperature)
        finally:
            policy_value.train(was_training)
        for b, s in enumerate(chunk):
            n = len(s.rollout)
            out.append(dataclasses.replace(s, rollout=s.rollout.with_(
                logprobs=logp[b, :n].cpu(), values=vals[b, :n].cpu(), ref_logprobs=ref_logp[b, :n].cpu(),
                prompt_length=int(n_prompt[b]))))
    return out

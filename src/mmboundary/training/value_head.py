"""The value head of the PPO stage and the policy+value module the optimiser trains.

- `ValueHead`: a `Linear(hidden, 1)` on the policy's last hidden states, V(s_i) per position.
  **[choice]** Initialised small (weights ~ N(0, init_std^2) from a generator seeded by `seed`,
  the same on every process and every run; bias 0) so that the first values are near 0 and the
  first advantages are close to the returns. It runs in float32 whatever the model's dtype.
  Saved and loaded as safetensors (`save` / `load`).
- `PolicyWithValue`: one `nn.Module` holding the VLM's model and the value head, so that
  accelerate prepares (and DDP synchronises) both together; its forward returns the logits and
  the values of every position from ONE forward pass.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["PolicyWithValue", "ValueHead", "hidden_size_of"]


def hidden_size_of(model) -> int:
    """Width of the last hidden states of a causal (vision-)language model: the input width of
    its output embedding (lm_head)."""
    head = model.get_output_embeddings()
    if head is None or not hasattr(head, "weight"):
        raise ValueError("the model has no output embedding to read the hidden size from")
    return int(head.weight.shape[1])


class ValueHead(nn.Module):
    """V(s) = w . h + b on hidden states h [..., hidden] -> [...] (float32)."""

    def __init__(self, hidden_size: int, init_std: float = 1e-3, seed: int = 0) -> None:
        super().__init__()
        if hidden_size <= 0 or init_std < 0:
            raise ValueError(f"need hidden_size > 0 and init_std >= 0, got {hidden_size}, {init_std}")
        self.linear = nn.Linear(hidden_size, 1, dtype=torch.float32)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(self.linear.weight.shape,
                                                 generator=torch.Generator().manual_seed(seed)) * init_std)
            self.linear.bias.zero_()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.to(self.linear.weight.dtype)).squeeze(-1)

    def save(self, path: str | Path) -> Path:
        """Write the weights as safetensors (to a temporary name, then renamed)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(tmp))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str | None = None) -> ValueHead:
        """A value head with the weights of a file written by `save`."""
        from safetensors.torch import load_file

        state = load_file(str(path))
        head = cls(int(state["linear.weight"].shape[1]), init_std=0.0)
        head.load_state_dict(state)
        return head.to(device) if device is not None else head


class PolicyWithValue(nn.Module):
    """The VLM's model and its value head as one module.

    `forward(**inputs)` runs the model once with `output_hidden_states=True` and returns
    `(logits [B, T, V], values [B, T])`, where values[b, t] = V(prefix up to and including
    position t), i.e. the state in which token t + 1 is generated (aligned with the logits).
    With `detach_value_input`, the value loss trains only the head, not the shared trunk.
    """

    def __init__(self, model: nn.Module, value_head: ValueHead, detach_value_input: bool = False) -> None:
        super().__init__()
        self.model = model
        self.value_head = value_head
        self.detach_value_input = detach_value_input

    def forward(self, **inputs):
        out = self.model(**inputs, output_hidden_states=True, use_cache=False)
        hidden = out.hidden_states[-1]
        if self.detach_value_input:
            hidden = hidden.detach()
        return out.logits, self.value_head(hidden)

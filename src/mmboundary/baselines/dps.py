"""Baseline `dps`: direct prompting for a confidence statement after each step.

Method (method.md section 7, "DPS"): the vanilla model is asked, in its prompt, to state its
confidence in words (linguistic confidence, as in Lin et al., TMLR 2022, "Teaching Models to
Express Their Uncertainty in Words", and Xiong et al., ICLR 2024). Here it is asked to end every
step with a short phrase saying how sure it is, shown five example phrases, one per level; the
phrase after each step's last comma is mapped back to a level by the statement mapper the caller
passes (the pipeline's `statements.mapping.StatementMapper`: exact match, stated numbers, negation
rewrites, else MiniLM and a logistic read-out, unparsed when its statement detector or similarity
floor says the phrase is no statement), and level L stands for
p(L) = (L - 0.5) / 5.

Where it departs from the paper: the paper's DPS prompt is not given; **[choice]** the example
phrases are the first statement of each level of the packaged pool (`statements/pool.yaml`),
from most to least confident, so that the model's phrases land near the pool the mapper knows
(a model that copies them is mapped exactly); the request is made after every step, not only
after the answer. Shared behaviour is in `baselines.prompted`.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field, field_validator

from mmboundary.baselines.base import BaselineResult
from mmboundary.baselines.prompted import STEP_INSTRUCTION, PromptedConfig, run_prompted
from mmboundary.records import Example
from mmboundary.statements.pool import default_pool

__all__ = ["DPSConfig", "default_example_statements", "dps_instruction", "run_dps"]


def default_example_statements() -> tuple[str, ...]:
    """The first statement of each level of the packaged pool, level 5 first."""
    pool = default_pool()
    return tuple(pool[level][0] for level in sorted(pool, reverse=True))


class DPSConfig(PromptedConfig):
    """`PromptedConfig` and the example phrases shown in the prompt (`example_statements`; None:
    `default_example_statements()`). Each must be a statement the chain format can carry: no
    comma, no final punctuation."""

    example_statements: tuple[str, ...] | None = Field(None, min_length=1)

    @field_validator("example_statements")
    @classmethod
    def _statement_shaped(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for s in v or ():
            if not s.strip() or "," in s or s.rstrip()[-1] in ".!?":
                raise ValueError(f"example statement {s!r}: must be non-empty, without a comma or final "
                                 "punctuation")
        return v


def dps_instruction(statements: Sequence[str] | None = None) -> str:
    """The default DPS instruction, quoting `statements` (default: `default_example_statements()`)."""
    statements = list(statements or default_example_statements())
    quoted = [f'"{s}"' for s in statements]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    return (STEP_INSTRUCTION + f"a short phrase saying how sure you are that the step is correct, such as "
            f'{listed}. For example: "There are 2 red circles, {statements[0]}."')


def run_dps(vlm, examples: Sequence[Example], cfg: DPSConfig | None = None, *, mapper) -> BaselineResult:
    """DPS on `vlm`, statements mapped back by `mapper` (see the module docstring); "not
    applicable" for a model that does not follow instructions (the mapper is then not used)."""
    cfg = cfg or DPSConfig()
    instruction = cfg.instruction or dps_instruction(cfg.example_statements)
    return run_prompted("dps", vlm, examples, cfg, instruction, mapper)

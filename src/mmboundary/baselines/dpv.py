"""Baseline `dpv`: direct prompting for a verbalised numeric confidence after each step.

Method (method.md section 7, "DPV"): the vanilla model is asked, in its prompt, to state how
confident it is as a number. Verbalised numeric confidence elicitation follows Tian et al., EMNLP
2023 ("Just Ask for Calibration") and Xiong et al., ICLR 2024 ("Can LLMs Express Their
Uncertainty?"). Here the model is asked to end every step with `", confidence: N/5"`
(`DPVConfig.template`), N from 1 (very unsure) to 5 (certain); the tail after each step's last
comma is read exactly by a `statements.mapping.NumericMapper` with the same template (anything
else is unparsed), and level N stands for p(N) = (N - 0.5) / 5, as every level of this project.

Where it departs from the paper: the paper's DPV prompt and scale are not given; **[choice]** a
1-5 scale, so that a stated number is one of the five levels the whole project uses (a 0-100
scale would need its own binning), asked after every step, not only after the answer. Shared
behaviour (prompt layout, unparsed steps, "not applicable" for a model that cannot follow
instructions) is in `baselines.prompted`.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field, field_validator

from mmboundary.baselines.base import BaselineResult
from mmboundary.baselines.prompted import STEP_INSTRUCTION, PromptedConfig, run_prompted
from mmboundary.records import Example
from mmboundary.statements.mapping import NumericMapper

__all__ = ["DPVConfig", "dpv_instruction", "run_dpv"]


class DPVConfig(PromptedConfig):
    """`PromptedConfig` and the numeric statement's `template` (**[choice]** "confidence: {level}/5":
    no comma, `{level}` where the number goes; the parser accepts any case and spaces around "/")."""

    template: str = Field("confidence: {level}/5")

    @field_validator("template")
    @classmethod
    def _valid_template(cls, v: str) -> str:
        NumericMapper(v)  # raises ValueError naming the problem
        return v


def dpv_instruction(template: str = "confidence: {level}/5") -> str:
    """The default DPV instruction for a numeric `template`."""
    return (STEP_INSTRUCTION + f'your confidence that the step is correct as "{template.format(level="N")}", '
            'where N is a whole number from 1 (very unsure) to 5 (certain). For example: '
            f'"There are 2 red circles, {template.format(level=4)}."')


def run_dpv(vlm, examples: Sequence[Example], cfg: DPVConfig | None = None) -> BaselineResult:
    """DPV on `vlm` (see the module docstring); "not applicable" for a model that does not follow
    instructions."""
    cfg = cfg or DPVConfig()
    instruction = cfg.instruction or dpv_instruction(cfg.template)
    return run_prompted("dpv", vlm, examples, cfg, instruction, NumericMapper(cfg.template))

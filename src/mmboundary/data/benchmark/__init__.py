"""The built-in benchmark: procedurally drawn scenes, questions needing 2-6 steps, and a checker
that decides exactly whether a generated step sentence is true of the scene.

It stands in for A-OKVQA: small enough for a VLM of a few million parameters trained on CPU,
with exact step truth. Modules:

- `spec`: `BenchmarkSpec`, every choice of the generator as a documented field;
- `scenes`: sampling and drawing scenes (3x3 grid, circles/squares/triangles, two sizes);
- `language`: the claim records, their canonical sentences (`render_claim`), the parser
  (`parse_claim`) and the accepted paraphrases;
- `questions`: the eight question types and their reference chains;
- `checker`: `check_step`, `evaluate_claim` (`extract_answer` and `normalize_answer` are
  re-exported from `mmboundary.answers`, the one home of answer handling);
- `generate`: `generate_examples`, `generate_benchmark` (JSONL + PNG);
- `annotated`: `export_annotated`, the reference chains in the authors' annotated format.
"""

from mmboundary.answers import extract_answer
from mmboundary.data.benchmark.annotated import export_annotated, to_annotated
from mmboundary.data.benchmark.captions import CAPTION_QUESTION, caption_sentences
from mmboundary.data.benchmark.checker import check_step, claim_type, evaluate_claim
from mmboundary.data.benchmark.generate import generate_benchmark, generate_examples
from mmboundary.data.benchmark.language import (
    COLOR_RGB,
    ArithmeticClaim,
    AttributeClaim,
    Claim,
    ComparisonClaim,
    CountClaim,
    FinalClaim,
    ObjectRef,
    SpatialClaim,
    normalize_answer,
    parse_claim,
    render_claim,
)
from mmboundary.data.benchmark.questions import question_type
from mmboundary.data.benchmark.scenes import draw_scene, sample_scene
from mmboundary.data.benchmark.spec import QUESTION_TYPES, SPLITS, BenchmarkSpec

__all__ = [
    "CAPTION_QUESTION", "caption_sentences",
    "COLOR_RGB", "QUESTION_TYPES", "SPLITS", "ArithmeticClaim", "AttributeClaim",
    "BenchmarkSpec", "Claim", "ComparisonClaim", "CountClaim", "FinalClaim", "ObjectRef",
    "SpatialClaim", "check_step", "claim_type", "draw_scene", "evaluate_claim", "export_annotated",
    "extract_answer", "generate_benchmark", "generate_examples", "normalize_answer",
    "parse_claim", "question_type", "render_claim", "sample_scene", "to_annotated",
]

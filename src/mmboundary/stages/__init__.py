"""The pipeline's stages: one record each (`Stage`: name, config sections, distributed or not,
its function), in pipeline order, and forking a run from another's finished stages.

    data      data/{train,test,ood}.jsonl                                   `stages/data.py`
    base      base/model/, base/clip/                                       `stages/base.py`
    estimate  estimate/chains_*, steps_*, normalizer.json, levels.json      `stages/estimate.py`
    sft_data  sft_data/dataset/, summary.json                               `stages/sft.py`
    sft       sft/model/ (sft/checkpoints/ while training)                  `stages/sft.py`
    rl        rl/model/, value_head.safetensors, metrics.jsonl              `stages/rl.py`
    evaluate  evaluate/chains_<model>_<split>.jsonl, metrics.json           `stages/evaluate.py`

`pipeline.py` runs them (markers, locks, resume); `artifacts.py` reads what they wrote.
"""

from mmboundary.stages.fork import fork_run, reusable_stages
from mmboundary.stages.table import BY_NAME, STAGES, Stage

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)

__all__ = ["BY_NAME", "STAGES", "STAGE_NAMES", "Stage", "fork_run", "reusable_stages"]

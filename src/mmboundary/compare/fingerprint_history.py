"""Config history for fingerprints: how a result saved by an earlier version of the config is still
recognised as current. Not a feature: back-compatibility shims, kept in this one module.

A saved `RowResult` is reused only while its `fingerprint` matches the part of the run config its
row depends on (`freshness._model_dump`). Adding a field to the config changes that text, so every
result saved before would look stale and be recomputed (hours of CPU training per seed) although
the new field, at its default, reproduces the earlier behaviour. So:

- `_ADDED_FIELDS`: the config fields added after results were saved, one entry per generation
  (oldest first), each with its *neutral* value (the one that reproduces the earlier behaviour);
- `_FINGERPRINT_FORMS`: the forms a saved fingerprint may have been written in, newest first
  (`freshness._model_dump(cfg, model, form)` rebuilds each);
- `_without_added`: a config dump without the fields of some generations, or False when one holds
  a non-neutral value (then no earlier result can match);
- `_legacy_dump`: `dump_config` as it read before any of the added fields existed (form 2).

When they may go: they serve only comparison roots saved before 2026-12-02's third session (forms
1 and 2). The results kept in the repository (`docs/results/compare-default/results`, 72 of them)
all have the current form 0, so the shims are needed only to reuse an older root (e.g. under
`runs/`) without recomputing it. Once no such root needs reusing, `_FINGERPRINT_FORMS` becomes
`(0,)`, `_model_dump` loses its `form`, and this module is deleted (with
`test_results_saved_before_new_rl_fields_still_match`). Until then, a config field added to a
section a saved row depends on is added here as a new generation (and a new form) with its
neutral value.
"""

from __future__ import annotations

from typing import Any

import yaml

#: Config fields added after results were saved, by generation (oldest first), each with the value
#: that reproduces the behaviour the earlier results were computed with. A saved result still
#: matches while the new fields hold those values (`_FINGERPRINT_FORMS`).
_ADDED_FIELDS: tuple[dict[tuple[str, ...], Any], ...] = (
    # 2026-12-02, second session: the RL variants of issue 5
    {("rl", "algorithm"): "ppo", ("rl", "level_phrasings"): 1, ("rl", "level_gradient"): "exact",
     ("rl", "level_temperature"): 1.0, ("rl", "questions"): "train", ("rl", "reward", "cs_scale"): "level"},
    # 2026-12-02, third session: the floored level gradient, statement granularity (SaySelf)
    {("rl", "level_floor"): 0.05, ("statements", "granularity"): "step"},
    # 2026-12-03: the step judge (issue 22); "auto" is exact truth on the built-in benchmark
    {("judge",): {"kind": "auto", "model": None, "similarity": "bi-encoder", "threshold": None}},
)

#: The forms of a fingerprint a saved result may have been written in, newest first: 0 the
#: current `_model_dump`; 1 the same before the newest generation of `_ADDED_FIELDS`; 2 the whole
#: `dump_config` before any of them (results saved before 2026-12-02's second session).
_FINGERPRINT_FORMS = (0, 1, 2)


def _without_added(data: dict, generations) -> bool:
    """Remove the fields of `generations` from `data` (a config's `model_dump`) in place; False
    when one of them holds another value than its neutral one (no earlier result can match)."""
    for fields in generations:
        for path, neutral in fields.items():
            node = data
            for key in path[:-1]:
                node = node.get(key) if isinstance(node, dict) else None
            if not isinstance(node, dict) or path[-1] not in node:
                continue
            if node[path[-1]] != neutral:
                return False
            del node[path[-1]]
    return True


def _legacy_dump(cfg) -> str | None:
    """`dump_config` of `cfg` as it read before any field of `_ADDED_FIELDS` existed, when each of
    them holds its neutral value (else None: no earlier result can match)."""
    data = cfg.model_dump(mode="json")
    if not _without_added(data, _ADDED_FIELDS):
        return None
    return yaml.safe_dump(data, sort_keys=False)

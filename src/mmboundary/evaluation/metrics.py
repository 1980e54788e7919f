"""Accuracy metrics over generated chains (pure functions; calibration metrics come with the
confidence issue)."""

from __future__ import annotations

from collections.abc import Sequence

from mmboundary.records import GeneratedChain


def accuracy_summary(chains: Sequence[GeneratedChain]) -> dict[str, float | int | None]:
    """Answer accuracy, step accuracy (over steps whose truth is known), and chain shape."""
    n = len(chains)
    steps = [s for c in chains for s in c.steps]
    known = [s for s in steps if s.correct is not None]
    return {
        "examples": n,
        "answer_accuracy": sum(c.answer_correct for c in chains) / n if n else None,
        "answered": sum(c.answer is not None for c in chains) / n if n else None,
        "steps": len(steps),
        "steps_per_chain": len(steps) / n if n else None,
        "step_accuracy": sum(bool(s.correct) for s in known) / len(known) if known else None,
        "steps_with_truth": len(known),
        "chains_all_steps_correct": (sum(all(s.correct for s in c.steps) and bool(c.steps)
                                         for c in chains) / n) if n else None,
    }

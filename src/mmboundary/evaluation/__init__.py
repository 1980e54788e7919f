"""Evaluation: generation on held-out splits, metrics, reports."""

"""Datasets: the documented JSONL format, the authors' annotated format, the built-in benchmark."""

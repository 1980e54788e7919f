"""Confidence statements: the pool, forward (level -> statement) and backward (statement -> level) mapping."""

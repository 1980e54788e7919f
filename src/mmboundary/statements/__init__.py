"""Confidence statements (method.md sections 1 and 3): the pool, forward (level -> statement) and
backward (statement -> level) mapping, the numeric "w/o S-S mapping" variant, and the response
format `"{step}, {statement}."` (writer and parser).

- `pool`: the packaged statement pool (`pool.yaml`), loaded and validated;
- `mapping`: `StatementMapper`, `NumericMapper`, `make_mapper(kind, **options)`;
- `numbers`, `phrasing`: the backward mapping's reading of stated numbers and of negation;
- `chain_format`: `write_chain`, `parse_chain(s)`, `ParsedStep`, `ParsedChain`, `summarize`.
"""

from mmboundary.statements.chain_format import (
    ParsedChain,
    ParsedStep,
    ParseSummary,
    parse_chain,
    parse_chains,
    summarize,
    write_chain,
    write_chain_with_levels,
    write_step,
)
from mmboundary.statements.mapping import LevelMapper, NumericMapper, StatementMapper, make_mapper
from mmboundary.statements.pool import LEVELS, all_statements, default_pool, load_pool

__all__ = [
    "LEVELS", "LevelMapper", "NumericMapper", "ParseSummary", "ParsedChain", "ParsedStep",
    "StatementMapper", "all_statements", "default_pool", "load_pool", "make_mapper", "parse_chain",
    "parse_chains", "summarize", "write_chain", "write_chain_with_levels", "write_step",
]

"""The `mmboundary` command line: `run` (the whole pipeline) and one command per stage.

    mmboundary run                              # built-in default, into runs/default
    mmboundary run -c configs/default.yaml --set base.vlm.epochs=2 --run-dir runs/quick
    mmboundary evaluate --run-dir runs/quick    # one stage (its inputs must be complete)
    mmboundary config --set model.kind=smol     # print the resolved config
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from mmboundary.errors import MMBoundaryError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="MMBoundary: teach vision-language models to state calibrated step confidence.")
err = Console(stderr=True)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (default: built-in).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override: key.path=value (repeatable).")]
RunDirOpt = Annotated[Optional[Path], typer.Option("--run-dir", "-r", help="Run directory (default: runs/<name>).")]


def _open_run(config: Path | None, overrides: list[str] | None, run_dir: Path | None):
    """Create or reopen a run. On an existing run directory without --config, overrides apply to
    its saved config (and a change to a finished run is refused, naming the keys)."""
    from mmboundary.config import load_config
    from mmboundary.runs import Run

    if run_dir is not None and (run_dir / "config.yaml").exists() and config is None:
        if not overrides:
            return Run.open(run_dir)  # resume with the saved config
        return Run.open(run_dir, load_config(run_dir / "config.yaml", overrides))
    cfg = load_config(config, overrides or [])
    return Run.open(run_dir or Path("runs") / cfg.name, cfg)


def _guard(fn):
    """Turn the project's own errors into a one-line message and exit code 2."""
    try:
        return fn()
    except MMBoundaryError as e:
        err.print(f"[bold red]error:[/bold red] {e}")
        raise typer.Exit(2) from None


@app.command()
def run(config: ConfigOpt = None, set_: SetOpt = None, run_dir: RunDirOpt = None) -> None:
    """Run every stage of the config in order; completed stages of an existing run are skipped."""
    from mmboundary.pipeline import run_pipeline

    def go():
        r = _open_run(config, set_, run_dir)
        err.print(f"run directory: {r.root}")
        run_pipeline(r)

    _guard(go)


def _stage_command(name: str, doc: str):
    def command(config: ConfigOpt = None, set_: SetOpt = None, run_dir: RunDirOpt = None,
                force: Annotated[bool, typer.Option(help="Rerun even if complete.")] = False) -> None:
        from mmboundary.pipeline import run_stage

        _guard(lambda: run_stage(_open_run(config, set_, run_dir), name, force=force))

    command.__doc__ = doc
    app.command(name=name)(command)


_stage_command("data", "Stage data: generate the built-in benchmark, or validate and copy a dataset.")
_stage_command("base", "Stage base: train the vanilla VLM and the CLIP model (skipped for checkpoints).")
_stage_command("estimate", "Stage estimate: vanilla chains, the four internal-confidence signals per step, fusion and levels.")
_stage_command("sft_data", "Stage sft_data: the vanilla model's train chains with a confidence statement after each step.")
_stage_command("sft", "Stage sft: the warm-up fine-tuning on sft_data (loss on response tokens only; resumable).")
_stage_command("rl", "Stage rl: PPO with per-step rewards (R_KA, R_EC, R_CS) from the SFT model (resumable).")
_stage_command("evaluate", "Stage evaluate: chains on the test/OOD splits; Acc, ECE, MECE, F1, AUROC, Brier per model.")


@app.command()
def fork(source: Annotated[Path, typer.Argument(help="An existing run directory.")],
         target: Annotated[Path, typer.Argument(help="The new run directory.")],
         set_: SetOpt = None,
         reuse: Annotated[Optional[list[str]], typer.Option(help="Reuse only these stages (repeatable).")] = None) -> None:
    """A new run from an existing one with --set overrides, starting with every completed stage
    the overrides leave valid (hard-linked); then `mmboundary run -r TARGET` runs the rest."""
    from mmboundary.runs import fork_run

    def go():
        r, taken = fork_run(source, target, set_ or [], reuse)
        err.print(f"forked {source} -> {r.root}; reused: {', '.join(taken) or 'nothing'}")

    _guard(go)


@app.command("config")
def show_config(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the fully resolved config (defaults included)."""
    from mmboundary.config import dump_config, load_config

    _guard(lambda: sys.stdout.write(dump_config(load_config(config, set_ or []))))


def main() -> None:  # pragma: no cover
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

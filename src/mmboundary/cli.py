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
from rich.markup import escape

from mmboundary.data.images import load_image
from mmboundary.errors import MMBoundaryError, user_message
from mmboundary.progress import progress_enabled, report_console

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="MMBoundary: teach vision-language models to state calibrated step confidence.")
err = Console(stderr=True)

ConfigOpt = Annotated[Optional[list[Path]], typer.Option(
    "--config", "-c", help="YAML config (default: built-in); repeat to layer overlays, later files win "
    "(e.g. -c configs/models/qwen2-vl-7b.yaml -c configs/data/aokvqa.yaml). A relative path in a file is read "
    "from the file's folder when it exists there, else from the working directory.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override: key.path=value (repeatable).")]
RunDirOpt = Annotated[Optional[Path], typer.Option("--run-dir", "-r", help="Run directory (default: runs/<name>).")]


def _open_run(config: list[Path] | None, overrides: list[str] | None, run_dir: Path | None):
    """Create or reopen a run. On an existing run directory without --config, overrides apply to
    its saved config (and a change to a finished run is refused, naming the keys)."""
    from mmboundary.config import load_config  # lazy: --help stays fast (0.45 s vs 16 s measured)
    from mmboundary.runs import Run  # lazy: --help stays fast (0.45 s vs 16 s measured)

    if run_dir is not None and (run_dir / "config.yaml").exists() and not config:
        if not overrides:
            return Run.open(run_dir)  # resume with the saved config
        return Run.open(run_dir, load_config(run_dir / "config.yaml", overrides, relative_to_file=False))
    cfg = load_config(config or None, overrides or [])
    return Run.open(run_dir or Path("runs") / cfg.name, cfg)


def _fail(message: str) -> None:
    """Print `error: <message>` on one line and exit with code 2."""
    err.print(f"[bold red]error:[/bold red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(2) from None


def _guard(fn):
    """Turn the project's own errors, and the operating system's about a path the user gave (a
    file that cannot be read or written, a folder where a file is needed), into a one-line
    message and exit code 2."""
    try:
        return fn()
    except (MMBoundaryError, OSError) as e:
        _fail(user_message(e))


@app.command()
def run(config: ConfigOpt = None, set_: SetOpt = None, run_dir: RunDirOpt = None) -> None:
    """Run every stage of the config in order; completed stages of an existing run are skipped."""
    from mmboundary.pipeline import run_pipeline  # lazy: --help stays fast (0.45 s vs 16 s measured)

    def go():
        r = _open_run(config, set_, run_dir)
        err.print(f"run directory: {r.root}")
        run_pipeline(r)

    _guard(go)


def _stage_command(name: str, doc: str):
    def command(config: ConfigOpt = None, set_: SetOpt = None, run_dir: RunDirOpt = None,
                force: Annotated[bool, typer.Option(help="Rerun even if complete.")] = False) -> None:
        from mmboundary.pipeline import run_stage  # lazy: --help stays fast (0.45 s vs 16 s measured)

        _guard(lambda: run_stage(_open_run(config, set_, run_dir), name, force=force))

    command.__doc__ = doc
    app.command(name=name)(command)


_stage_command("data", "Stage data: generate the built-in benchmark, or validate and copy a dataset.")
_stage_command("base", "Stage base: train the vanilla VLM and the CLIP model (skipped for checkpoints).")
_stage_command("estimate", "Stage estimate: vanilla chains, the four internal-confidence signals per step, fusion "
               "and levels.")
_stage_command("sft_data", "Stage sft_data: the vanilla model's train chains with a confidence statement after each "
               "step.")
_stage_command("sft", "Stage sft: the warm-up fine-tuning on sft_data (loss on response tokens only; resumable).")
_stage_command("rl", "Stage rl: PPO with per-step rewards (R_KA, R_EC, R_CS) from the SFT model (resumable).")
_stage_command("evaluate", "Stage evaluate: chains on the test/OOD splits; Acc, ECE, MECE, F1, AUROC, Brier per model.")


@app.command()
def fork(source: Annotated[Path, typer.Argument(help="An existing run directory.")],
         target: Annotated[Path, typer.Argument(help="The new run directory.")],
         set_: SetOpt = None,
         reuse: Annotated[Optional[list[str]], typer.Option(
             help="Reuse only these stages (repeatable).")] = None) -> None:
    """A new run from an existing one with --set overrides, starting with every completed stage
    the overrides leave valid (hard-linked); then `mmboundary run -r TARGET` runs the rest."""
    from mmboundary.stages import fork_run  # lazy: --help stays fast (0.45 s vs 16 s measured)

    def go():
        r, taken = fork_run(source, target, set_ or [], reuse)
        err.print(f"forked {source} -> {r.root}; reused: {', '.join(taken) or 'nothing'}")

    _guard(go)


@app.command()
def compare(spec: Annotated[Optional[Path], typer.Option(
                "--spec", "-c",
                help="Comparison spec YAML (default: built-in = configs/compare/default.yaml).")] = None,
            root: Annotated[Optional[Path], typer.Option(
                "--root", "-o", help="Comparison folder (default: runs/compare-<spec name>).")] = None,
            report_only: Annotated[bool, typer.Option(
                "--report-only", help="Rebuild the report from saved results; run no model.")] = False,
            set_: SetOpt = None) -> None:
    """Methods, ablations and baselines over seeds on the test and OOD splits, and the report."""
    from mmboundary.compare import compare_main  # lazy: --help stays fast (0.45 s vs 16 s measured)

    _guard(lambda: compare_main(spec, root, report_only, set_))


@app.command("config")
def show_config(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the fully resolved config (defaults included)."""
    from mmboundary.config import dump_config, load_config  # lazy: --help stays fast (0.45 s vs 16 s measured)

    _guard(lambda: sys.stdout.write(dump_config(load_config(config or None, set_ or []))))


@app.command("check-data")
def check_data_command(config: ConfigOpt = None, set_: SetOpt = None,
                       strict: Annotated[bool, typer.Option(help="Warnings (no reference chain, repeated ids) "
                                                            "fail the check too.")] = False,
                       prompts: Annotated[bool, typer.Option(help="With model.path: check every prompt against "
                                                             "model.max_length.")] = True) -> None:
    """Validate the config's dataset files before training: counts per split, every bad record and
    missing image, records without reference chains, repeated ids. Exit code 1 on problems."""
    from mmboundary.config import load_config  # lazy: --help stays fast (0.45 s vs 16 s measured)
    from mmboundary.data.check import check_data, print_report  # lazy: --help stays fast (0.45 s vs 16 s measured)

    def go():
        cfg = load_config(config or None, set_ or [])
        report = check_data(cfg.data, model=cfg.model if prompts else None)
        print_report(report, report_console(highlight=False), strict=strict)
        return report.ok(strict)

    if not _guard(go):
        raise typer.Exit(1)


@app.command()
def ask(question: Annotated[str, typer.Argument(help="The question about the image.")],
        model: Annotated[Path, typer.Option("--model", "-m", help="A run directory (its newest trained "
                                            "model) or a checkpoint folder.")],
        image: Annotated[Path, typer.Option("--image", "-i", help="The image file.")],
        choice: Annotated[Optional[list[str]], typer.Option(
            "--choice", help="An option of a multiple-choice question (repeatable).")] = None,
        stage: Annotated[Optional[str], typer.Option(
            help="Model of a run: vanilla, sft or rl (default: newest).")] = None,
        self_correct: Annotated[bool, typer.Option(
            "--self-correct", help="Resample low-confidence steps and keep the most confident candidate.")] = False,
        threshold: Annotated[Optional[int], typer.Option(
            help="Self-correction: resample steps at or below this level.")] = None,
        samples: Annotated[Optional[int], typer.Option(help="Self-correction: candidates per low step.")] = None,
        budget: Annotated[Optional[int], typer.Option(help="Self-correction: most sampled steps per question.")] = None,
        signal: Annotated[Optional[str], typer.Option(
            help="Self-correction: 'internal' or 'expressed' confidence decides.")] = None,
        temperature: Annotated[Optional[float], typer.Option(help="Self-correction: sampling temperature.")] = None,
        device: Annotated[Optional[str], typer.Option(help="cpu, cuda, ... (default: the run's device).")] = None,
        json_: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False) -> None:
    """Answer a question about an image: the chain with each step coloured by its confidence, the
    expressed and internal level per step, and the answer."""
    from mmboundary.api import answer_table, load  # lazy: --help stays fast (0.45 s vs 16 s measured)
    from mmboundary.correction import correction_config  # lazy: --help stays fast (0.45 s vs 16 s measured)

    def go():
        config = correction_config(threshold=threshold, samples=samples, budget=budget, signal=signal,
                                   temperature=temperature)
        load_image(image)  # a bad image fails before the model is loaded
        if not progress_enabled():
            import transformers  # lazy: --help stays fast (0.45 s vs 16 s measured)

            transformers.utils.logging.disable_progress_bar()
        m = load(model, stage=stage, device=device, correction=config)
        a = m.ask(image, question, choice or None, correct=self_correct)
        if json_:
            sys.stdout.write(a.model_dump_json(indent=2) + "\n")
            return
        out = report_console(highlight=False)
        out.print(answer_table(a))
        out.print(f"[bold]answer:[/bold] {escape(a.answer) if a.answer is not None else '(none stated)'}")
        out.print("[dim]levels: 1 = least confident .. 5 = most; step colour = expressed level, else internal[/dim]")
        if not a.internal_available:
            out.print("[dim]internal levels: unavailable (no run with a complete estimate stage)[/dim]")
        if a.compute is not None:
            replaced = sum(c.replaced for c in a.corrections)
            out.print(f"self-correction: {len(a.corrections)} step(s) resampled, {replaced} replaced (marked *); "
                      f"extra: {a.compute.sampled_steps} sampled steps, {a.compute.extra_tokens} tokens")

    _guard(go)


@app.command()
def serve(model: Annotated[Path, typer.Option("--model", "-m", help="A run directory (its newest trained "
                                              "model) or a checkpoint folder.")],
          host: Annotated[str, typer.Option(help="Address to bind (default loopback; another address is "
                                            "reachable from the network, without authentication).")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
          max_upload_mb: Annotated[float, typer.Option(help="Largest image upload in MiB.")] = 8.0,
          max_queue: Annotated[int, typer.Option(help="Requests that may wait for the model besides the one "
                                                 "it answers; more get 503 busy.")] = 8,
          stage: Annotated[Optional[str], typer.Option(
              help="Model of a run: vanilla, sft or rl (default: newest).")] = None,
          device: Annotated[Optional[str], typer.Option(
              help="cpu, cuda, ... (default: the run's device).")] = None) -> None:
    """Serve the inspector web page: ask the model about an uploaded image and see each step's
    expressed and internal confidence; browse the run's evaluation results (docs/inspector.md)."""
    from mmboundary.serve.server import serve as run_server  # lazy: --help stays fast (0.45 s vs 16 s measured)

    if max_upload_mb <= 0 or max_queue < 0:
        _fail("--max-upload-mb must be > 0 and --max-queue >= 0")
    _guard(lambda: run_server(model, host=host, port=port, max_upload_mb=max_upload_mb, max_queue=max_queue,
                              stage=stage, device=device))


def main() -> None:  # pragma: no cover
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

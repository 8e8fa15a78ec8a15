"""``rantune compare``: a strategy x partition x seed grid on the in-process engine.

Writes ``OUT/results.csv`` (one row per run), ``OUT/report.md`` (mean ± std per
strategy x partition, ranked, with MB up/down) and PNG plots under ``OUT/plots``;
per-run records under ``OUT/runs`` make it resumable (finished runs are skipped).
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console

from rantune.errors import InputError
from rantune.simulations.errors import cli_errors, ensure_output_dir

console = Console()


def register(app: typer.Typer) -> None:
    @app.command("compare")
    @cli_errors
    def compare(
        preset: str = typer.Option("smoke", help="Data preset (data.preset)."),
        task: str = typer.Option(
            "los", help="Task, or a comma-separated list (los,beam,beam-spatial,prediction,...)."
        ),
        strategies: str = typer.Option(
            "fedavg,ffa-lora,flora", help="Comma-separated strategy names (strategy.name)."
        ),
        partitions: str = typer.Option(
            "natural", help="Comma-separated schemes: natural, iid, quantity, dirichlet-<alpha>."
        ),
        seeds: str = typer.Option("0", help="Comma-separated run seeds."),
        rounds: int = typer.Option(3, help="Server rounds per run."),
        out: Path = typer.Option(Path("runs/compare"), help="Output directory."),
        run_config: list[str] = typer.Option(
            None,
            "--run-config",
            "-c",
            help="Run-config overrides key=value for every run (TOML values), repeatable.",
        ),
        workers: int = typer.Option(2, help="Processes running the grid (1 = this process)."),
        metric: str = typer.Option(
            None, help="Compared metric, or per task: los=auc,beam=top1 (default: primary)."
        ),
        target: float = typer.Option(None, help="Metric target for 'rounds to target'."),
        plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG plots."),
    ) -> None:
        """Compare aggregation strategies across partitions and seeds (resumable, 2 cores)."""
        from rantune.federated.run_config import parse_override_pairs
        from rantune.simulations.compare.grid import (
            GridSpec,
            parse_list,
            parse_metric,
            parse_seeds,
            plan,
            run_grid,
        )

        spec = GridSpec(
            preset=preset,
            tasks=parse_list(task, "task"),
            strategies=tuple(s.lower() for s in parse_list(strategies, "strategies")),
            partitions=parse_list(partitions, "partitions"),
            seeds=parse_seeds(seeds),
            rounds=rounds,
            overrides=parse_override_pairs(run_config or []),
            metric=parse_metric(metric),
        )
        logging.getLogger("flwr").setLevel(logging.WARNING)
        total = len(plan(spec, out))  # every config checked before anything is written
        ensure_output_dir(out)
        console.print(
            f"{total} runs: {len(spec.tasks)} task(s) x {len(spec.strategies)} strategies x "
            f"{len(spec.partitions)} partitions x {len(spec.seeds)} seed(s), {workers} worker(s)"
        )

        def progress(outcome: dict, done: int, pending: int) -> None:
            status = "[green]done[/]" if outcome["ok"] else f"[red]failed[/]: {outcome['error']}"
            console.print(
                f"[{done}/{pending}] {outcome['job']} {status} ({outcome['seconds']:.1f} s)",
                highlight=False,
            )

        result = run_grid(
            spec, out, workers=workers, targets=target, plots=plots, progress=progress
        )
        if result.skipped:
            console.print(f"{len(result.skipped)} run(s) already recorded: skipped")
        if result.files is not None:
            console.print(f"results: [bold]{result.files.csv}[/], [bold]{result.files.markdown}[/]")
        if result.failed:
            raise InputError(
                f"{len(result.failed)} run(s) failed (the report covers the others): "
                + "; ".join(f"{k}: {v}" for k, v in sorted(result.failed.items()))
            )

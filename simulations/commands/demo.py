"""``rantune demo``: the main job on the built-in default, end to end."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from rantune.simulations.errors import cli_errors, ensure_output_dir

console = Console()


def register(app: typer.Typer) -> None:
    @app.command("demo")
    @cli_errors
    def demo(
        out: Path = typer.Option(Path("runs/demo"), help="Output directory (reused on re-runs)."),
        quick: bool = typer.Option(
            False, help="The 3-site smoke preset and tiny runs: checks that every stage works."
        ),
        workers: int = typer.Option(2, help="Processes for the federated runs."),
    ) -> None:
        """Data, federated fine-tuning with a strategy comparison next to centralized,
        local-only and classical references, int8 edge artifact, report."""
        from rantune.simulations.demo import run_demo

        out = ensure_output_dir(out)
        summary = run_demo(out, quick=quick, workers=workers, log=console.print)
        timing = summary["timing"]
        console.print(
            f"[green]done[/] in {timing['wall_s']:.0f} s ({timing['cpu_s']:.0f} CPU s, load "
            f"{timing['load_start'][0]:.2f}): {out / 'report.md'} (JSON: {out / 'report.json'})"
        )

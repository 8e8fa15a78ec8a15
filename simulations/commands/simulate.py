"""``rantune simulate``: a federated run on the in-process engine (no Ray).

Runs the same ServerApp, ClientApp and strategies as ``flwr run .`` and writes the
same outputs (``OUT/history.json``, ``config.json``, ``global_adapter.safetensors``,
``checkpoints/``). Rerunning with the same config and ``--out`` resumes.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from rantune.errors import InputError
from rantune.simulations.errors import cli_errors, ensure_output_dir

console = Console()


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def print_history(history: dict) -> None:
    """A per-round table: global metric, client mean/worst, bytes, wall time."""
    primary = history["primary-metric"]
    table = Table(
        title=f"{history['strategy']} on {history['task']} ({history['num-clients']} clients)"
    )
    for column in (
        "round",
        f"global {primary}",
        "client mean",
        "client worst",
        "up KB/client",
        "up / full",
        "s",
    ):
        table.add_column(column, justify="right")
    for record in history["rounds"]:
        evaluation = record.get("evaluate", {})
        size = record.get("bytes", {})
        table.add_row(
            str(record["round"]),
            _fmt(record.get("server", {}).get(primary)),
            _fmt(evaluation.get("mean", {}).get(primary)),
            _fmt(evaluation.get("worst", {}).get(primary)),
            _fmt(size.get("up-per-client", 0.0) / 1024, 1) if size else "-",
            f"{100 * size['up-ratio']:.2f}%" if size else "-",
            _fmt(record.get("wall-time-s"), 1),
        )
    console.print(table)


def print_keys() -> None:
    """Every run-config key, its default and its help (from the schema)."""
    from rantune.federated.run_config import RunConfig
    from rantune.schema import describe

    table = Table(title="run-config keys (pyproject tool.flwr.app.config; override with --run-config key=value)")
    for column in ("key", "default", "meaning"):
        table.add_column(column, overflow="fold")
    for key, default, help_text in describe(RunConfig):
        table.add_row(key, repr(default), help_text)
    console.print(table)


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    @cli_errors
    def simulate(
        preset: str = typer.Option(None, help="Data preset (data.preset); default: smoke."),
        task: str = typer.Option(
            None,
            help="los | beam | beam-spatial | beam-temporal | prediction | positioning (task); "
            "task-options.* keys via --run-config.",
        ),
        strategy: str = typer.Option(None, help="Strategy name (strategy.name); default fedavg."),
        rounds: int = typer.Option(None, help="Number of server rounds (num-server-rounds)."),
        out: Path = typer.Option(Path("runs/simulate"), help="Output directory (out-dir)."),
        partition: str = typer.Option(
            None, help="natural | iid | quantity | dirichlet-<alpha> (partition.scheme)."
        ),
        seed: int = typer.Option(None, help="Run seed (seed)."),
        run_config: list[str] = typer.Option(
            None,
            "--run-config",
            "-c",
            help="Extra run-config overrides key=value (TOML values), repeatable.",
        ),
        verbose: bool = typer.Option(False, help="Show Flower's per-round log lines."),
        list_keys: bool = typer.Option(
            False, "--list-keys", help="Print every run-config key with its default and help."
        ),
        workers: int = typer.Option(
            1, "--workers", help="Worker processes running the clients (same numbers as 1)."
        ),
    ) -> None:
        """Federated LoRA fine-tuning on the in-process engine (the `flwr run .` apps, no Ray)."""
        from rantune.federated.run_config import parse_override_pairs
        from rantune.simulations.engine import resolve_config, run_simulation

        if list_keys:
            print_keys()
            return

        overrides = parse_override_pairs(run_config or [])
        flags = {
            "data.preset": preset,
            "task": task,
            "strategy.name": strategy,
            "num-server-rounds": rounds,
            "partition.scheme": partition,
            "seed": seed,
        }
        overrides.update({k: v for k, v in flags.items() if v is not None})
        overrides["out-dir"] = str(out)
        cfg = resolve_config(overrides)  # fails on bad keys before anything is written
        if workers < 1:
            raise InputError(f"--workers {workers} is invalid: expected >= 1")
        ensure_output_dir(out)
        if not verbose:
            logging.getLogger("flwr").setLevel(logging.WARNING)
        history = run_simulation(cfg, workers=workers)
        print_history(history)
        console.print(f"outputs in [bold]{Path(cfg.out_dir).resolve()}[/]")

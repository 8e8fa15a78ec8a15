"""``rantune compress``: edge artifacts (ONNX fp32/int8, pruned, distilled) of a run."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from rantune.simulations.errors import cli_errors

console = Console()


def print_summary(report: dict) -> None:
    """The report's table, left to right as in report.md, with as many columns as fit
    the terminal (numbers are never cut; the columns left out are named)."""
    from rantune.compression.report import fit_columns, report_rows, table_header

    header, rows = table_header(report), report_rows(report)
    keep = fit_columns(header, rows, console.width)
    table = Table(title=f"{report['task']}: {report['primary_metric']} vs size and latency")
    for i in keep:
        width = max(max(len(w) for w in header[i].split()), *(len(row[i]) for row in rows))
        table.add_column(header[i], justify="left" if i == 0 else "right", width=width)
    for row in rows:
        table.add_row(*(row[i] for i in keep))
    console.print(table)
    left_out = [header[i] for i in range(len(header)) if i not in keep]
    if left_out:
        console.print(f"(not shown at this width: {', '.join(left_out)}; see report.md)")


def distillation_lines(report: dict) -> list[str]:
    """One line per trained student: how it learned and what it moved."""
    from rantune.federated.messages import MB

    lines = []
    for entry in report["variants"]:
        details = entry.get("details", {})
        record = details.get("distill") or details.get("recovery")
        if not record or "mode" not in record:
            continue
        who = f"stations {', '.join(record['stations'])}" if record["stations"] else "server"
        lines.append(
            f"{entry['variant']}: {record['mode']} distillation, {record['rounds']} round(s), "
            f"{who}, labels: {record['labels']}, {record['bytes']['total'] / MB:.2f} MB moved"
        )
    return lines


def register(app: typer.Typer) -> None:
    @app.command("compress")
    @cli_errors
    def compress_command(
        run: Path = typer.Option(..., "--run", help="Fine-tuning run directory (federated)."),
        out: Path = typer.Option(..., "--out", help="Artifact directory ART (new or empty)."),
        variants: str | None = typer.Option(
            None,
            "--variants",
            help="Comma list of fp32, int8-dynamic, int8-static, pruned-int8, "
            "distilled-fp32, distilled-int8, sparse-int8, or 'all' [default: fp32 to "
            "pruned-int8 and distilled-int8; without the "
            "students under --distill off].",
        ),
        distill: str = typer.Option(
            "federated",
            "--distill",
            help="How students (pruned-int8, distilled-int8) learn without pooled data: "
            "federated (each station on its own rows, the server averages), server "
            "(teacher outputs on channels the server generates, no labels) or off.",
        ),
        distill_rounds: int = typer.Option(4, help="Rounds of student distillation."),
        distill_preset: str | None = typer.Option(
            None,
            "--distill-preset",
            help="--distill server: a preset (name or .toml) the server generates "
            "instead of its TR 38.901 drop; same radio block as the run.",
        ),
        distill_rows: int = typer.Option(2048, help="--distill server: generated rows."),
        force: bool = typer.Option(False, "--force", help="Replace a non-empty ART."),
        threads: int = typer.Option(1, help="CPU threads for latency measurements."),
        student_layers: int = typer.Option(2, help="Blocks of the distilled student."),
        distill_epochs: int = typer.Option(1, help="Local epochs per distillation round."),
        recover_rounds: int = typer.Option(2, help="Rounds of post-pruning recovery."),
        recover_epochs: int = typer.Option(1, help="Local epochs per recovery round."),
        head_ratio: float = typer.Option(0.25, help="Share of attention heads pruned."),
        ffn_ratio: float = typer.Option(0.5, help="Share of FFN channels pruned."),
        calibration: str = typer.Option(
            "minmax", help="Static int8 calibration: minmax, percentile or entropy."
        ),
        max_train: int = typer.Option(4096, help="Cap on each station's distillation rows."),
        max_eval: int = typer.Option(2048, help="Global test rows for measuring."),
        sign: Path | None = typer.Option(
            None,
            "--sign",
            help="Ed25519 private key (PEM) that signs each artifact's manifest "
            "(rantune edge keygen, or openssl genpkey -algorithm ed25519).",
        ),
    ) -> None:
        """Quantize, prune and distill a run's global model into measured ONNX artifacts."""
        from dataclasses import replace

        from rantune.compression.distill import DistillSettings
        from rantune.compression.pipeline import CompressSettings, compress, resolve_variants
        from rantune.compression.prune import PruneSettings

        names = resolve_variants(variants, distill)  # fail on a typo before loading anything
        # SIGTERM -> SystemExit, so compress() removes its temporary directory.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
        settings = CompressSettings(
            prune=PruneSettings(head_ratio=head_ratio, ffn_ratio=ffn_ratio),
            recover=replace(CompressSettings().recover, epochs=recover_epochs),
            recover_rounds=recover_rounds,
            distill=DistillSettings(epochs=distill_epochs),
            distill_rounds=distill_rounds,
            distill_mode=distill,
            server_rows=distill_rows,
            server_preset=distill_preset,
            student_layers=student_layers,
            calibration_method=calibration,
            threads=threads,
            max_train=max_train,
            max_eval=max_eval,
        )
        report = compress(
            run, out, names, settings, overwrite=force, log=console.log, sign_key=sign
        )
        print_summary(report)
        for line in distillation_lines(report):
            console.print(line)
        for check in report["targets"]:
            colour = "green" if check["met"] else "yellow"
            console.print(f"[{colour}]{check['variant']}: {'met' if check['met'] else 'missed'}")
        console.print(f"wrote {out}/report.md, report.json, pareto.png and one folder per variant")
        if report.get("signature"):
            key_id = report["signature"]["public_key_sha256"]
            console.print(
                f"signed every manifest (key {key_id[:12]}...; check: rantune-edge verify)"
            )

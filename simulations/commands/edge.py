"""``rantune edge predict|bench``: run an artifact with onnxruntime only (as on a device)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from rantune.errors import InputError
from rantune.simulations.errors import cli_errors

console = Console()


def _load_npy(path: Path):
    import numpy as np

    if not path.is_file():
        raise InputError(f"--input {path} does not exist: give a .npy file of model inputs")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(f"--input {path} is not a readable .npy array ({err})") from err


def _save_npy(path: Path, array) -> None:
    import numpy as np

    from rantune.fileio import atomic_write_bytes

    if path.exists() and path.is_dir():
        raise InputError(f"--out {path} is a directory; give a file path ending in .npy")
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Run compressed artifacts with onnxruntime (numpy + onnxruntime, no torch).",
        no_args_is_help=True,
    )
    app.add_typer(group, name="edge")

    @group.command("predict")
    @cli_errors
    def predict(
        artifact: Path = typer.Option(..., "--artifact", help="Artifact folder (manifest.json)."),
        input_path: Path = typer.Option(..., "--input", help="float32 .npy input [batch, ...]."),
        out: Path = typer.Option(..., "--out", help="Output .npy file."),
        threads: int | None = typer.Option(None, help="onnxruntime intra-op threads."),
    ) -> None:
        """Verify the artifact's sha256, validate the input and write the model output."""
        from rantune.compression.edge import EdgeModel

        model = EdgeModel(artifact, threads=threads)
        output = model.predict(_load_npy(input_path))
        _save_npy(out, output)
        console.print(
            f"{model.task} ({model.manifest.variant}): {len(output)} rows -> {out} "
            f"shape {list(output.shape)}"
        )

    @group.command("bench")
    @cli_errors
    def bench(
        artifact: Path = typer.Option(..., "--artifact", help="Artifact folder (manifest.json)."),
        json_out: Path | None = typer.Option(None, "--json", help="Write the results as JSON."),
        batch: list[int] = typer.Option([1, 64], help="Batch sizes (repeat the option)."),
        threads: list[int] = typer.Option([1, 2], help="Thread counts (repeat the option)."),
        repeats: int = typer.Option(100, help="Timed calls per setting."),
        warmup: int = typer.Option(10, help="Untimed calls first."),
    ) -> None:
        """p50/p95 latency at each batch size and thread count."""
        from rantune.compression.edge import EdgeModel

        if any(b < 1 for b in batch) or any(t < 1 for t in threads):
            raise InputError("--batch and --threads values must be >= 1")
        model = EdgeModel(artifact)
        if max(batch) > model.max_batch:
            raise InputError(f"--batch {max(batch)} exceeds the model's maximum {model.max_batch}")
        result = model.bench(tuple(batch), tuple(threads), warmup=warmup, repeats=repeats)
        table = Table(title=f"{model.task} {model.manifest.variant}: onnxruntime CPU")
        for column in ("threads", "batch", "p50 ms", "p95 ms", "samples/s"):
            table.add_column(column, justify="right")
        for row in result["results"]:
            table.add_row(
                str(row["threads"]),
                str(row["batch"]),
                f"{row['p50_ms']:.3f}",
                f"{row['p95_ms']:.3f}",
                f"{row['samples_per_s']:.0f}",
            )
        console.print(table)
        if json_out is not None:
            from rantune.fileio import atomic_write_bytes

            if json_out.exists() and json_out.is_dir():
                raise InputError(f"--json {json_out} is a directory; give a file path")
            atomic_write_bytes(json_out, (json.dumps(result, indent=2) + "\n").encode())
            console.print(f"wrote {json_out}")

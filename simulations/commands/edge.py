"""``rantune edge predict|bench|verify|keygen``: the ``rantune-edge`` commands, same code.

Each command calls the function of :mod:`rantune_edge.cli` that ``rantune-edge`` runs
(numpy + onnxruntime, no torch); :func:`~rantune.simulations.errors.cli_errors` prints
its :class:`~rantune_edge.errors.EdgeError` as one line with exit status 2.
"""

from __future__ import annotations

from pathlib import Path

import typer

from rantune.simulations.commands import command_group
from rantune.simulations.errors import cli_errors
from rantune_edge.io import DEFAULT_TOP_K
from rantune_edge.runtime import BENCH_BATCHES, BENCH_REPEATS, BENCH_THREADS, BENCH_WARMUP

ARTIFACT_HELP = "Artifact folder (manifest.json)."
KEY_HELP = "Builder's Ed25519 public key (PEM): refuse artifacts whose signature fails."


def register(app: typer.Typer) -> None:
    group = command_group(
        app, "edge", "Run compressed artifacts with onnxruntime (numpy + onnxruntime, no torch)."
    )

    @group.command("predict")
    @cli_errors
    def predict(
        artifact: Path = typer.Option(..., "--artifact", help=ARTIFACT_HELP),
        input_path: Path = typer.Option(
            ..., "--input", help=".npy complex CSI [N, A, S] ([N, T, A, S]) or float input."
        ),
        out: Path | None = typer.Option(None, "--out", help="Result file (.npz)."),
        json_lines: bool = typer.Option(False, "--json", help="Print JSON lines (one per row)."),
        public_key: Path | None = typer.Option(None, "--public-key", help=KEY_HELP),
        top_k: int = typer.Option(DEFAULT_TOP_K, "--top-k", min=1, help="Classes per row."),
        threads: int | None = typer.Option(None, min=1, help="onnxruntime intra-op threads."),
        batch_size: int | None = typer.Option(None, min=1, help="Rows per onnxruntime call."),
        no_normalize: bool = typer.Option(
            False, "--no-normalize", help="Complex CSI is already scaled as in training."
        ),
    ) -> None:
        """Verify the artifact, decode the CSI and write labels/probabilities or CSI."""
        from rantune_edge import cli

        cli.predict(
            artifact, input_path, out, json_lines, public_key, top_k, threads, batch_size,
            normalize=not no_normalize,
        )  # fmt: skip

    @group.command("bench")
    @cli_errors
    def bench(
        artifact: Path = typer.Option(..., "--artifact", help=ARTIFACT_HELP),
        json_out: Path | None = typer.Option(None, "--json", help="Write the results (.json)."),
        batch: list[int] = typer.Option(list(BENCH_BATCHES), help="Batch sizes (repeatable)."),
        threads: list[int] = typer.Option(list(BENCH_THREADS), help="Threads (repeatable)."),
        repeats: int = typer.Option(BENCH_REPEATS, min=1, help="Timed calls per setting."),
        warmup: int = typer.Option(BENCH_WARMUP, min=0, help="Untimed calls first."),
        public_key: Path | None = typer.Option(None, "--public-key", help=KEY_HELP),
    ) -> None:
        """p50/p95 latency at each batch size and thread count."""
        from rantune_edge import cli

        cli.bench(artifact, json_out, tuple(batch), tuple(threads), repeats, warmup, public_key)

    @group.command("verify")
    @cli_errors
    def verify(
        artifact: Path = typer.Option(..., "--artifact", help=ARTIFACT_HELP + " Or ART."),
        public_key: Path | None = typer.Option(None, "--public-key", help=KEY_HELP),
    ) -> None:
        """Check manifest, signature (with --public-key) and sha256 of each artifact."""
        from rantune_edge import cli

        cli.verify(artifact, public_key)

    @group.command("keygen")
    @cli_errors
    def keygen(
        out: Path = typer.Option(..., "--out", help="Private key file (PEM, mode 0600)."),
        public_out: Path | None = typer.Option(
            None, "--public-out", help="Public key file (default KEY.pub.pem)."
        ),
    ) -> None:
        """Create an Ed25519 key pair for rantune compress --sign."""
        from rantune_edge import cli

        cli.keygen(out, public_out)

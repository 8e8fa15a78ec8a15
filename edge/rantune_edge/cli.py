"""``rantune-edge``: predict, bench, verify and keygen on a device (argparse, no extras).

The same functions back ``rantune edge ...``: each command is a plain function that
prints to ``sys.stdout``/``sys.stderr`` and raises :class:`EdgeError` on bad input;
:func:`main` turns that into ``error: message`` on stderr and exit status 2 (every other
exception keeps its traceback). Outputs are written only after every check passed.

    rantune-edge verify  --artifact ART --public-key builder.pub.pem
    rantune-edge predict --artifact ART/int8-dynamic --input csi.npy --out result.npz
    rantune-edge predict --artifact ART/int8-dynamic --input csi.npy --json > result.jsonl
    rantune-edge bench   --artifact ART/int8-dynamic --json bench.json
    rantune-edge keygen  --out builder.pem           # + builder.pub.pem
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rantune_edge import __version__, io, signing
from rantune_edge.errors import EdgeError
from rantune_edge.manifest import MANIFEST_NAME, atomic_write
from rantune_edge.runtime import (
    BENCH_BATCHES,
    BENCH_REPEATS,
    BENCH_THREADS,
    BENCH_WARMUP,
    EdgeModel,
)

EXIT_INPUT_ERROR = 2


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def load_model(artifact: Path, public_key: Path | None, threads: int | None = None):
    """An :class:`EdgeModel`, warning on stderr when its signature was not checked."""
    model = EdgeModel(artifact, threads=threads, public_key=public_key)
    if model.signature == "unsigned":
        _warn(
            f"{artifact} is unsigned: its sha256 is checked, but nothing ties it to its "
            "builder (sign with rantune compress --sign KEY, check with --public-key)"
        )
    elif model.signature == "unchecked":
        _warn(f"{artifact} is signed but its signature was not checked: pass --public-key PUB")
    return model


def artifact_dirs(path: Path) -> list[Path]:
    """``path`` if it is an artifact, else its sub-folders that are (an ``ART`` root)."""
    path = Path(path)
    if (path / MANIFEST_NAME).exists() or not path.is_dir():
        return [path]
    found = sorted(p for p in path.iterdir() if (p / MANIFEST_NAME).is_file())
    if not found:
        raise EdgeError(f"{path} holds no artifact ({MANIFEST_NAME} in it or its sub-folders)")
    return found


def predict(
    artifact: Path,
    input_path: Path,
    out: Path | None = None,
    json_lines: bool = False,
    public_key: Path | None = None,
    top_k: int = io.DEFAULT_TOP_K,
    threads: int | None = None,
    batch_size: int | None = None,
    normalize: bool = True,
) -> dict:
    """Verify the artifact, read CSI (or the float layout), write the decoded result."""
    if out is None and not json_lines:
        raise EdgeError("give --out FILE.npz, --json (JSON lines on stdout) or both")
    if out is not None:
        io.check_out_path(out, ".npz")
    model = load_model(artifact, public_key, threads)
    result = model.predict_csi(
        io.load_array(input_path), top_k=top_k, normalize=normalize, batch_size=batch_size
    )
    if out is not None:
        io.save_npz(out, result)
    if json_lines:
        for line in io.json_lines(result):
            sys.stdout.write(line + "\n")
    rows = len(next(iter(result.values())))
    summary = f"{model.task} ({model.manifest.variant}): {rows} rows"
    summary += f" -> {out}" if out is not None else ""
    print(summary, file=sys.stderr if json_lines else sys.stdout)
    return result


def bench(
    artifact: Path,
    json_out: Path | None = None,
    batch: tuple[int, ...] = BENCH_BATCHES,
    threads: tuple[int, ...] = BENCH_THREADS,
    repeats: int = BENCH_REPEATS,
    warmup: int = BENCH_WARMUP,
    public_key: Path | None = None,
) -> dict:
    """p50/p95 latency at each batch size and thread count; prints a table."""
    if any(b < 1 for b in batch) or any(t < 1 for t in threads):
        raise EdgeError("--batch and --threads values must be >= 1")
    if json_out is not None:
        io.check_out_path(json_out, ".json")
    model = load_model(artifact, public_key)
    result = model.bench(tuple(batch), tuple(threads), warmup=warmup, repeats=repeats)
    print(f"{model.task} {model.manifest.variant}: onnxruntime {result['onnxruntime']} CPU")
    header = f"{'threads':>7} {'batch':>6} {'p50 ms':>9} {'p95 ms':>9} {'samples/s':>10}"
    print(header)
    for row in result["results"]:
        print(
            f"{row['threads']:>7} {row['batch']:>6} {row['p50_ms']:>9.3f} "
            f"{row['p95_ms']:>9.3f} {row['samples_per_s']:>10.0f}"
        )
    if json_out is not None:
        atomic_write(json_out, (json.dumps(result, indent=2) + "\n").encode())
        print(f"wrote {json_out}")
    return result


def verify(artifact: Path, public_key: Path | None = None) -> list[dict]:
    """Check every artifact under ``artifact``: manifest, signature (with a key), sha256
    and that onnxruntime loads the model. Raises on the first failure."""
    checked = []
    key = signing.load_public_key(public_key) if public_key is not None else None
    for directory in artifact_dirs(artifact):
        model = load_model(directory, key, threads=1)
        line = {
            "artifact": str(directory),
            "task": model.task,
            "variant": model.manifest.variant,
            "sha256": str(model.manifest.model["sha256"]),
            "signature": model.signature,
            "key": model.key_id,
        }
        print(
            f"ok {directory}: {model.task} {model.manifest.variant}, sha256 "
            f"{line['sha256'][:12]}..., signature {model.signature}"
            + (f" (key {model.key_id[:12]}...)" if model.key_id else "")
        )
        checked.append(line)
    return checked


def keygen(out: Path, public_out: Path | None = None) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair (private PEM mode 0600, public PEM)."""
    private, public = signing.generate_keypair(out, public_out)
    print(f"wrote {private} (private: keep it secret) and {public} (give it to devices)")
    return private, public


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is invalid: expected an integer >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rantune-edge",
        description="Run signed rantune edge artifacts with numpy and onnxruntime only.",
    )
    parser.add_argument("--version", action="version", version=f"rantune-edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def artifact_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--artifact", type=Path, required=True, help="Artifact folder.")
        p.add_argument(
            "--public-key", type=Path, help="Builder's Ed25519 public key (PEM): refuse "
            "artifacts whose signature does not verify.",
        )  # fmt: skip

    p = sub.add_parser("predict", help="Predict from complex CSI (or the float layout).")
    artifact_args(p)
    p.add_argument("--input", type=Path, required=True, help=".npy complex CSI [N, A, S] "
                   "([N, T, A, S] for sequences) or float model input.")  # fmt: skip
    p.add_argument("--out", type=Path, help="Result file (.npz).")
    p.add_argument("--json", action="store_true", help="Print JSON lines (one per row).")
    p.add_argument("--top-k", type=_positive, default=io.DEFAULT_TOP_K, help="Classes per row.")
    p.add_argument("--threads", type=_positive, help="onnxruntime intra-op threads.")
    p.add_argument("--batch-size", type=_positive, help="Rows per onnxruntime call.")
    p.add_argument("--no-normalize", action="store_true", help="Complex CSI is already scaled "
                   "as the training data was: skip the manifest's normalization.")  # fmt: skip

    p = sub.add_parser("bench", help="p50/p95 latency per batch size and thread count.")
    artifact_args(p)
    p.add_argument("--json", type=Path, dest="json_out", help="Write the results (.json).")
    p.add_argument("--batch", type=_positive, nargs="+", default=list(BENCH_BATCHES),
                   help="Batch sizes.")  # fmt: skip
    p.add_argument("--threads", type=_positive, nargs="+", default=list(BENCH_THREADS),
                   help="Thread counts.")  # fmt: skip
    p.add_argument("--repeats", type=_positive, default=BENCH_REPEATS,
                   help="Timed calls per setting.")  # fmt: skip
    p.add_argument("--warmup", type=int, default=BENCH_WARMUP, help="Untimed calls first.")

    p = sub.add_parser("verify", help="Check manifest, signature and sha256 of artifacts.")
    artifact_args(p)

    p = sub.add_parser("keygen", help="Create an Ed25519 key pair for rantune compress --sign.")
    p.add_argument("--out", type=Path, required=True, help="Private key file (PEM).")
    p.add_argument("--public-out", type=Path, help="Public key file (default KEY.pub.pem).")
    return parser


def run(argv: list[str] | None = None) -> None:
    """Parse ``argv`` and run the command (raises :class:`EdgeError` on bad input)."""
    args = build_parser().parse_args(argv)
    if args.command == "predict":
        predict(
            args.artifact, args.input, args.out, args.json, args.public_key, args.top_k,
            args.threads, args.batch_size, normalize=not args.no_normalize,
        )  # fmt: skip
    elif args.command == "bench":
        bench(
            args.artifact, args.json_out, tuple(args.batch), tuple(args.threads),
            args.repeats, args.warmup, args.public_key,
        )  # fmt: skip
    elif args.command == "verify":
        verify(args.artifact, args.public_key)
    else:
        keygen(args.out, args.public_out)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: :class:`EdgeError` -> one line on stderr, exit status 2."""
    try:
        run(argv)
    except EdgeError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())

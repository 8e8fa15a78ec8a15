"""Device check of a rantune-edge install: run where only rantune-edge and its deps live.

    python .ci/edge_device_check.py BUNDLE [--expect-no-torch]

``BUNDLE`` is written by ``tests/e2e/test_edge_package.py`` on the training side
(``RANTUNE_EDGE_CHECK_DIR``): ``ART/`` (signed fp32 and int8-dynamic artifacts of a tiny
LoS run), ``keys/`` (the builder's public key and another one), ``csi.npy`` (complex
CSI in station units), ``csi_training.npy`` (the same rows scaled as the training data)
and ``expected.npz`` (what the training side computed). This script uses the standard
library and numpy only and drives the ``rantune-edge`` command next to its Python:

- ``verify`` with the builder's key passes for every variant;
- fp32 ``predict`` on complex CSI equals the training side's PyTorch output within
  1e-5 (normalized here, and with ``--no-normalize`` on training-scaled rows);
- int8 labels equal the training side's onnxruntime labels; ``--json`` lines agree;
- ``bench`` writes its JSON;
- a tampered model, a tampered manifest, a wrong public key, a truncated model, a wrong
  input shape and NaN input each exit with status 2, one ``error:`` line and no output.

Exits non-zero with the failed check's message.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

FP32_ATOL = 1e-5
EDGE = str(Path(sys.executable).with_name("rantune-edge"))


def edge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EDGE, *args], capture_output=True, text=True, timeout=300)


def ok(result: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if result.returncode != 0:
        raise SystemExit(f"FAIL {what}: exit {result.returncode}\n{result.stderr}")
    print(f"ok   {what}")
    return result


def refused(result: subprocess.CompletedProcess, out: Path, what: str, needle: str) -> None:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    if result.returncode != 2 or len(errors) != 1 or needle not in errors[0]:
        raise SystemExit(
            f"FAIL {what}: expected exit 2 and one 'error: ...{needle}...' line, got exit "
            f"{result.returncode}\n{result.stderr}"
        )
    if out.exists():
        raise SystemExit(f"FAIL {what}: {out} was written although the run was refused")
    if "Traceback" in result.stderr:
        raise SystemExit(f"FAIL {what}: a traceback instead of a one-line error\n{result.stderr}")
    print(f"ok   {what}: {errors[0][:100]}")


def check_isolated() -> None:
    for name in ("torch", "rantune"):
        if importlib.util.find_spec(name) is not None:
            raise SystemExit(f"FAIL isolation: {name} is importable in this environment")
    print("ok   isolation: neither torch nor rantune is importable here")


def predict_npz(artifact: Path, data: Path, out: Path, pub: str, *extra: str) -> dict:
    """``rantune-edge predict`` into ``out``; its arrays."""
    args = ["predict", "--artifact", str(artifact), "--input", str(data), "--out", str(out),
            "--public-key", pub, *extra]  # fmt: skip
    ok(edge(*args), f"predict {artifact.name} {data.name} {' '.join(extra)}".rstrip())
    with np.load(out) as got:
        return {name: got[name] for name in got.files}


def parity(got: np.ndarray, want: np.ndarray, what: str) -> None:
    error = float(np.abs(got - want).max())
    if not error <= FP32_ATOL:
        raise SystemExit(f"FAIL {what}: max |edge - torch| = {error:.3g} > {FP32_ATOL}")
    print(f"ok   {what}: equal to the training side's PyTorch output (max diff {error:.2g})")


def check_predictions(bundle: Path, work: Path, pub: str) -> None:
    expected = np.load(bundle / "expected.npz")
    art, station, training = bundle / "ART", bundle / "csi.npy", bundle / "csi_training.npy"
    got = predict_npz(art / "fp32", station, work / "fp32.npz", pub)
    parity(got["logits"], expected["fp32_logits"], "fp32 logits from complex CSI")
    if not np.allclose(got["probabilities"].sum(axis=1), 1.0, atol=1e-5):
        raise SystemExit("FAIL probabilities: rows do not sum to 1")
    got = predict_npz(art / "fp32", training, work / "raw.npz", pub, "--no-normalize")
    parity(got["logits"], expected["fp32_training_logits"], "fp32 logits, training scale")
    labels = predict_npz(art / "int8-dynamic", training, work / "int8.npz", pub,
                         "--no-normalize")["labels"]  # fmt: skip
    if not np.array_equal(labels, expected["int8_labels"]):
        diff = int((labels != expected["int8_labels"]).sum())
        raise SystemExit(f"FAIL int8 labels: {diff} of {len(labels)} differ")
    print(f"ok   int8 labels identical to the training side's ({len(labels)} rows)")
    lines = ok(edge("predict", "--artifact", str(art / "int8-dynamic"), "--input",
                    str(training), "--no-normalize", "--json", "--public-key", pub),
               "predict --json").stdout.splitlines()  # fmt: skip
    if [json.loads(line)["label"] for line in lines] != labels.tolist():
        raise SystemExit("FAIL --json: the JSON lines' labels differ from the .npz labels")
    print(f"ok   --json: {len(lines)} JSON lines, labels as in the .npz")


def check_refusals(bundle: Path, work: Path, pub: str, other: str) -> None:
    out = work / "refused.npz"
    csi = np.load(bundle / "csi.npy")
    np.save(work / "short.npy", csi[:, :, : csi.shape[2] // 2])
    bad = csi.copy()
    bad[0, 0, 0] = np.nan
    np.save(work / "nan.npy", bad)

    def predict(artifact: Path, data: str, key: str = pub) -> subprocess.CompletedProcess:
        return edge("predict", "--artifact", str(artifact), "--input", data, "--out", str(out),
                    "--public-key", key)  # fmt: skip

    good = str(bundle / "csi.npy")
    refused(predict(bundle / "ART" / "fp32", good, other), out, "wrong public key", "another key")
    refused(predict(bundle / "ART" / "fp32", str(work / "short.npy")), out, "wrong shape", "shape")
    refused(predict(bundle / "ART" / "fp32", str(work / "nan.npy")), out, "NaN input", "NaN")
    copy = work / "tampered"
    shutil.copytree(bundle / "ART" / "fp32", copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["label_names"] = manifest["label_names"][::-1]
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    refused(predict(copy, good), out, "tampered manifest", "changed after signing")
    shutil.rmtree(copy)
    shutil.copytree(bundle / "ART" / "fp32", copy)
    model = bytearray((copy / "model.onnx").read_bytes())
    model[len(model) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(model))
    refused(predict(copy, good), out, "tampered model", "sha256")
    (copy / "model.onnx").write_bytes(bytes(model[: len(model) // 2]))
    refused(predict(copy, good), out, "truncated model", "truncated")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--expect-no-torch", action="store_true")
    args = parser.parse_args()
    if args.expect_no_torch:
        check_isolated()
    bundle = args.bundle.resolve()
    pub, other = str(bundle / "keys" / "builder.pub.pem"), str(bundle / "keys" / "other.pub.pem")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ok(edge("verify", "--artifact", str(bundle / "ART"), "--public-key", pub), "verify")
        check_predictions(bundle, work, pub)
        bench = work / "bench.json"
        ok(edge("bench", "--artifact", str(bundle / "ART" / "int8-dynamic"), "--batch", "1",
                "4", "--threads", "1", "--repeats", "3", "--warmup", "1", "--json", str(bench),
                "--public-key", pub), "bench")  # fmt: skip
        rows = json.loads(bench.read_text())["results"]
        if [r["batch"] for r in rows] != [1, 4] or not all(r["p50_ms"] > 0 for r in rows):
            raise SystemExit(f"FAIL bench: unexpected results {rows}")
        check_refusals(bundle, work, pub, other)
    print("edge device check passed")


if __name__ == "__main__":
    main()

"""``rantune-edge`` (argparse) and ``rantune edge`` (typer) run the same code: results,
warnings, and for every refused input exit 2, one ``error:`` line and no output file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from compression_runs import edge_artifact, smoke_onnx
from typer.testing import CliRunner

from rantune.simulations.cli import app
from rantune_edge.cli import main
from rantune_edge.signing import generate_keypair, load_private_key, sign_artifact


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return smoke_onnx(tmp_path_factory.getbasetemp() / "compression", "los")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-keys")
    return generate_keypair(root / "builder.pem"), generate_keypair(root / "other.pem")


@pytest.fixture
def setup(exported, keys, tmp_path):
    """A signed and an unsigned artifact under ART, and complex CSI in station units."""
    signed = edge_artifact(tmp_path / "ART" / "fp32", exported["onnx"])
    sign_artifact(signed, load_private_key(keys[0][0]))
    unsigned = edge_artifact(tmp_path / "ART" / "copy", exported["onnx"])
    x = exported["x"][:6].numpy()
    np.save(tmp_path / "csi.npy", (x[:, 0] + 1j * x[:, 1]) * 1e-3)
    return signed, unsigned, tmp_path


def test_predict_writes_npz_and_json_lines(setup, keys, capsys):
    # Prepare
    signed, _, tmp = setup
    args = ["predict", "--artifact", str(signed), "--input", str(tmp / "csi.npy")]
    # Execute
    code = main([*args, "--out", str(tmp / "r.npz"), "--public-key", str(keys[0][1])])
    first = capsys.readouterr()
    json_code = main([*args, "--json", "--top-k", "1"])
    second = capsys.readouterr()
    # Assert: the same labels both ways; JSON lines alone on stdout
    assert code == 0 and json_code == 0
    with np.load(tmp / "r.npz") as result:
        labels = result["labels"].tolist()
        assert result["probabilities"].shape == (6, 2)
    assert "warning" not in first.err
    lines = [json.loads(line) for line in second.out.splitlines()]
    assert [line["label"] for line in lines] == labels and len(lines[0]["top_k"]) == 1
    assert "signature was not checked" in second.err


def test_rantune_edge_and_rantune_cli_give_the_same_result(setup):
    # Prepare
    _, unsigned, tmp = setup
    args = ["predict", "--artifact", str(unsigned), "--input", str(tmp / "csi.npy")]
    # Execute
    assert main([*args, "--out", str(tmp / "a.npz")]) == 0
    result = CliRunner().invoke(app, ["edge", *args, "--out", str(tmp / "b.npz")])
    # Assert: identical arrays; the unsigned warning on stderr
    assert result.exit_code == 0, result.output
    assert "is unsigned" in result.stderr
    with np.load(tmp / "a.npz") as a, np.load(tmp / "b.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name])


def test_verify_checks_every_artifact_of_an_art_folder(setup, keys, capsys):
    # Prepare
    signed, _, tmp = setup
    # Execute
    all_code = main(["verify", "--artifact", str(tmp / "ART")])
    all_out = capsys.readouterr()
    keyed = CliRunner().invoke(
        app, ["edge", "verify", "--artifact", str(signed), "--public-key", str(keys[0][1])]
    )
    refused = CliRunner().invoke(
        app, ["edge", "verify", "--artifact", str(tmp / "ART"), "--public-key", str(keys[0][1])]
    )
    # Assert: both listed without a key; with a key the unsigned one is refused (exit 2)
    assert all_code == 0 and all_out.out.count("ok ") == 2
    assert keyed.exit_code == 0 and "signature verified" in keyed.stdout
    assert refused.exit_code == 2 and "is not signed" in refused.stderr


def _tamper_model(artifact) -> None:
    data = bytearray((artifact / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (artifact / "model.onnx").write_bytes(bytes(data))


def _truncate_model(artifact) -> None:
    (artifact / "model.onnx").write_bytes((artifact / "model.onnx").read_bytes()[:1000])


def _tamper_manifest(artifact) -> None:
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["metrics"] = {"accuracy": 1.0}
    (artifact / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("tampered-model", "fails its sha256 check"),
        ("tampered-manifest", "changed after signing"),
        ("wrong-key", "signed by another key"),
        ("truncated", "truncated or replaced"),
        ("wrong-shape", "axis 2 is 16, expected 32"),
        ("nan", "NaN or infinite"),
        ("real-csi", "without its imaginary part"),
    ],
)
def test_refused_inputs_exit_2_with_one_line_and_no_output(setup, keys, case, message, capsys):
    # Prepare
    signed, _, tmp = setup
    key = keys[1][1] if case == "wrong-key" else keys[0][1]
    csi = np.load(tmp / "csi.npy")
    bad = {"wrong-shape": csi[:, :, :16], "real-csi": csi.real.astype(np.float32)}
    if case == "nan":
        bad["nan"] = np.where(np.arange(32) == 5, np.nan, csi)
    np.save(tmp / "in.npy", bad.get(case, csi))
    {"tampered-model": _tamper_model, "truncated": _truncate_model,
     "tampered-manifest": _tamper_manifest}.get(case, lambda a: None)(signed)  # fmt: skip
    out = tmp / "out.npz"
    args = ["predict", "--artifact", str(signed), "--input", str(tmp / "in.npy"),
            "--out", str(out), "--public-key", str(key)]  # fmt: skip
    # Execute
    code = main(args)
    err = capsys.readouterr().err
    typer_result = CliRunner().invoke(app, ["edge", *args])
    # Assert: both CLIs refuse with one line, nothing is written
    assert code == 2
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        err.strip().splitlines()[-1]
    ]
    assert message in err
    assert typer_result.exit_code == 2 and message in " ".join(typer_result.stderr.split())
    assert not out.exists()


def test_argument_errors_are_caught_before_loading(setup, tmp_path, capsys):
    # Prepare
    signed, _, tmp = setup
    base = ["predict", "--artifact", str(signed), "--input", str(tmp / "csi.npy")]
    # Execute
    no_output = main(base)
    wrong_suffix = main([*base, "--out", str(tmp / "r.npy")])
    err = capsys.readouterr().err
    # Assert
    assert no_output == 2 and "give --out FILE.npz, --json" in err
    assert wrong_suffix == 2 and "must end in .npz" in err


def test_keygen_and_bench_commands(tmp_path, setup, capsys):
    # Prepare
    signed, _, _ = setup
    # Execute
    keygen = CliRunner().invoke(app, ["edge", "keygen", "--out", str(tmp_path / "k.pem")])
    bench = main(["bench", "--artifact", str(signed), "--batch", "1", "2", "--threads", "1",
                  "--repeats", "2", "--warmup", "0", "--json", str(tmp_path / "b.json")])  # fmt: skip
    # Assert
    assert keygen.exit_code == 0 and (tmp_path / "k.pub.pem").exists()
    assert bench == 0
    rows = json.loads((tmp_path / "b.json").read_text())["results"]
    assert [(r["threads"], r["batch"]) for r in rows] == [(1, 1), (1, 2)]
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) <= 80

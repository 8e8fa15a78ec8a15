"""``rantune simulate``: a run end to end, and bad input failing before any work."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from rantune.simulations.cli import app

runner = CliRunner()


def test_simulate_runs_and_writes_outputs(tmp_path):
    # Execute
    result = runner.invoke(
        app,
        [
            "simulate",
            "--preset",
            "smoke",
            "--task",
            "los",
            "--strategy",
            "fedprox",
            "--rounds",
            "1",
            "--out",
            str(tmp_path),
            "--run-config",
            'model.pretrained="none" lora.r=2',
        ],
    )

    # Assert
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["strategy"]["name"] == "fedprox" and config["lora"]["r"] == 2
    assert json.loads((tmp_path / "history.json").read_text())["rounds"][-1]["round"] == 1
    assert "fedprox on los" in result.output


def test_simulate_bad_input_fails_cleanly_and_writes_nothing(tmp_path):
    cases = [
        (["--run-config", "lora.rank=8"], "unknown run config key(s) ['lora.rank']"),
        (["--strategy", "fedfoo"], "strategy 'fedfoo' is unknown: choose one of"),
        (["--preset", "nowhere"], "preset 'nowhere' not found"),
        (["--task", "segmentation"], "choose one of los, beam,"),
    ]
    for extra, message in cases:
        out = tmp_path / extra[-1].replace("=", "_")
        result = runner.invoke(app, ["simulate", "--out", str(out), *extra])
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split()), result.output
        assert not out.exists()

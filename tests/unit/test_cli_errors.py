"""CLI errors: the project's own InputError is one line and exit 2; a bug keeps its traceback."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from rantune.errors import InputError
from rantune.simulations.cli import app

runner = CliRunner()


def _bug_inside_numpy(*args, **kwargs):
    # A bug-shaped ValueError raised deep inside a dependency (numpy reshape).
    np.zeros(3).reshape(2, 2)


def test_a_dependency_value_error_keeps_its_traceback(tmp_path, monkeypatch):
    # Prepare
    import rantune.simulations.engine as engine

    monkeypatch.setattr(engine, "run_simulation", _bug_inside_numpy)

    # Execute
    result = runner.invoke(
        app, ["simulate", "--out", str(tmp_path / "run"), "-c", 'model.pretrained="none"']
    )

    # Assert: not shortened to a one-line exit 2; the exception and its origin survive
    assert result.exit_code == 1
    assert isinstance(result.exception, ValueError)
    assert not isinstance(result.exception, InputError)
    assert "cannot reshape" in str(result.exception)
    frames = [frame.name for frame in __import__("traceback").extract_tb(result.exc_info[2])]
    assert "_bug_inside_numpy" in frames
    assert "error:" not in result.output


def test_an_input_error_is_one_line_with_exit_2(tmp_path):
    # Execute
    result = runner.invoke(app, ["simulate", "--out", str(tmp_path / "run"), "-c", "lora.r=0"])

    # Assert
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: run config lora.r=0 is invalid")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback_of_input_errors(tmp_path, monkeypatch, how):
    # Prepare
    args = ["simulate", "--out", str(tmp_path / "run"), "-c", "lora.r=0"]
    if how == "flag":
        monkeypatch.setenv("RANTUNE_DEBUG", "0")  # restored afterwards: --debug sets it to 1
        args = ["--debug", *args]
    else:
        monkeypatch.setenv("RANTUNE_DEBUG", "1")

    # Execute
    result = runner.invoke(app, args)

    # Assert
    assert isinstance(result.exception, InputError)
    assert result.exit_code == 1

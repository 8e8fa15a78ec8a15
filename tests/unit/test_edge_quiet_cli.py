"""A quiet CLI: ``rantune --help`` and a tiny ``rantune simulate`` print no torchao / torch
import warnings (hidden by :mod:`rantune.simulations.quiet`); ``--verbose`` shows them."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

NOISE = ("_C_mxfp8", "_C_cutlass_90a", "_pytree", "Failed to load", "triton", "torchvision")
TORCH_LOG = re.compile(r"^[WEI]\d{4} \d\d:\d\d:\d\d")  # torch's own log line prefix


def _run(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RANTUNE_VERBOSE"}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, env=env,
        cwd=tmp_path,
    )  # fmt: skip


def _noise(result: subprocess.CompletedProcess) -> list[str]:
    text = result.stdout + result.stderr
    return [
        line for line in text.splitlines() if any(n in line for n in NOISE) or TORCH_LOG.match(line)
    ]


def test_help_is_quiet(tmp_path):
    # Execute
    result = _run(["-m", "rantune.simulations.cli", "--help"], tmp_path)
    # Assert
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout and "--verbose" in result.stdout
    assert _noise(result) == []


def test_tiny_simulate_is_quiet(tmp_path):
    # Prepare: smoke preset, one round, a few rows per client
    args = ["-m", "rantune.simulations.cli", "simulate", "--preset", "smoke", "--rounds", "1",
            "--out", str(tmp_path / "run")]  # fmt: skip
    for key in ("data.max-train-rows", "data.max-eval-rows", "data.max-global-test-rows"):
        args += ["-c", f"{key}=16"]
    # Execute
    result = _run(args, tmp_path)
    # Assert: it trained (so peft, and with it torchao, was imported) and said nothing else
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "history.json").exists()
    assert _noise(result) == []


@pytest.mark.parametrize("verbose", [False, True])
def test_verbose_shows_what_the_filter_hides(tmp_path, verbose):
    # Prepare: import peft (which imports torchao) after the CLI's start-up filter
    code = (
        "from rantune.simulations.quiet import quiet_third_party; "
        f"quiet_third_party({verbose}); import peft"
    )
    # Execute
    result = _run(["-c", code], tmp_path)
    # Assert
    assert result.returncode == 0, result.stderr
    if verbose:
        if not _noise(result):
            pytest.skip("this torchao/torch prints no import warnings to hide")
        assert any("torchao" in line for line in _noise(result))
    else:
        assert _noise(result) == []

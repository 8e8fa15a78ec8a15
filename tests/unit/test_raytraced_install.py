"""Sionna PHY and Sionna RT installed side by side; a machine without LLVM.

``sionna`` (the PHY) and ``sionna-rt`` both ship ``sionna/__init__.py`` and the one
installed last wins. sionna-rt's own file imports the ray tracer (and so needs
Dr.Jit's LLVM backend) on every ``import sionna.phy``; sionna's is lazy. pyproject
depends on ``sionna``, which depends on ``sionna-rt``, so pip installs sionna-rt first
and sionna's file last, whatever the order of the dependency list. These tests prove
the result: both import, and without LLVM the TR 38.901 path still works while a
ray-traced preset fails with the fix.
"""

from __future__ import annotations

import os
import subprocess
import sys

# Dr.Jit looks for LLVM here first; a missing file makes its LLVM backend unusable,
# as on a machine without libLLVM.
NO_LLVM = {"DRJIT_LIBLLVM_PATH": "/nonexistent/libLLVM.so"}
REINSTALL = "pip install --force-reinstall --no-deps sionna==2.2.0"


def run(code_or_args: list[str], env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        code_or_args,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=300,
    )


def test_sionna_phy_and_sionna_rt_import_together():
    # Execute
    import sionna
    import sionna.phy
    import sionna.rt

    # Assert
    assert sionna.rt.__version__ == "2.0.1"
    assert sionna.__version__ == "2.2.0", f"sionna/__init__.py is not sionna's; {REINSTALL}"
    assert hasattr(sionna.phy.channel.tr38901, "UMi") and hasattr(sionna.rt, "PathSolver")


def test_sionna_phy_does_not_start_the_ray_tracer_and_works_without_llvm():
    # Prepare
    code = (
        "import sys, sionna.phy\n"
        "from sionna.phy.channel.tr38901 import UMi\n"
        "assert 'sionna.rt' not in sys.modules and 'mitsuba' not in sys.modules\n"
    )

    # Execute
    result = run([sys.executable, "-c", code], env=NO_LLVM)

    # Assert
    assert result.returncode == 0, (
        f"import sionna.phy needs the ray tracer: sionna-rt's sionna/__init__.py was "
        f"installed last; {REINSTALL}\n{result.stderr[-2000:]}"
    )


def test_without_llvm_a_raytraced_preset_fails_with_the_fix_and_tr_presets_work(tmp_path):
    # Prepare
    out, cache = tmp_path / "out", tmp_path / "cache"
    cli = [sys.executable, "-m", "rantune.simulations.cli", "data", "--cache", str(cache)]

    # Execute
    result = run([*cli, "--preset", "rt-smoke", "--out", str(out)], env=NO_LLVM)
    tr_result = run([*cli, "--preset", "smoke", "--out", str(tmp_path / "tr")], env=NO_LLVM)

    # Assert
    assert result.returncode == 2, result.stderr[-2000:]
    message = result.stderr + result.stdout
    assert "ray tracer cannot start" in message and "libllvm15" in message
    assert "DRJIT_LIBLLVM_PATH" in message and "Traceback" not in message
    assert not out.exists()
    assert tr_result.returncode == 0, tr_result.stderr[-2000:]
    assert (tmp_path / "tr" / "summary.json").exists()
    assert len(list(cache.rglob("*.safetensors"))) == 3  # the smoke sites only

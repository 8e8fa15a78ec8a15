"""Packaging: the repository's top-level folders install inside the rantune namespace."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAPPED = ("server", "client", "compression", "simulations")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_subpackage_of_the_mapped_folders_is_listed():
    # Prepare
    setuptools = _pyproject()["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    mapping = setuptools["package-dir"]

    # Execute
    expected = set()
    for folder in MAPPED:
        assert mapping[f"rantune.{folder}"] == folder
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT).parts
            expected.add(".".join(("rantune", *parts)))
    for init in (ROOT / "rantune").rglob("__init__.py"):
        expected.add(".".join(init.parent.relative_to(ROOT).parts))

    # Assert
    missing = sorted(expected - listed)
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_generic_names_do_not_import_and_namespaced_ones_do(tmp_path):
    # Execute (outside the checkout, as in a user's environment)
    generic = {name: _python(f"import {name}", tmp_path) for name in MAPPED}
    namespaced = _python(
        "import rantune.server.app, rantune.client.app, rantune.compression, "
        "rantune.simulations.cli; print(rantune.server.app.__name__)",
        tmp_path,
    )

    # Assert
    for name, result in generic.items():
        assert result.returncode != 0, f"`import {name}` worked: it must not be a top-level module"
        assert "ModuleNotFoundError" in result.stderr
    assert namespaced.returncode == 0, namespaced.stderr
    assert namespaced.stdout.strip() == "rantune.server.app"


def test_flower_components_and_console_script_are_namespaced():
    project = _pyproject()
    components = project["tool"]["flwr"]["app"]["components"]
    assert components == {
        "serverapp": "rantune.server.app:app",
        "clientapp": "rantune.client.app:app",
    }
    assert project["project"]["scripts"]["rantune"] == "rantune.simulations.cli:main"

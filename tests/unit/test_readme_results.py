"""The README's results table and headlines are what ``benchmarks/readme.py`` renders
from the committed result JSON: re-rendering the README gives the README."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"


@pytest.fixture()
def readme(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("readme")


def test_readme_agrees_with_the_result_json(readme):
    # Prepare
    text = (ROOT / "README.md").read_text()

    # Execute
    rendered = readme.render(text, readme.load_results(RESULTS))

    # Assert: a disagreement names the fix (python benchmarks/readme.py)
    assert rendered == text, "README.md disagrees with benchmarks/results: run python benchmarks/readme.py"


def test_a_changed_result_changes_the_rendered_readme(readme, tmp_path):
    # Prepare: the committed results with the int8-dynamic beam artifact 1.21 points worse
    folder = tmp_path / "results"
    shutil.copytree(RESULTS, folder, ignore=shutil.ignore_patterns("*.md", "*.png", "strategies"))
    payload = json.loads((folder / "compression.json").read_text())
    report = payload["tasks"]["beam-spatial"]["modes"]["federated"]["report"]
    variant = next(v for v in report["variants"] if v["variant"] == "int8-dynamic")
    variant["top1"] = report["reference"]["top1"] - 0.0121
    (folder / "compression.json").write_text(json.dumps(payload))
    text = (ROOT / "README.md").read_text()

    # Execute
    rendered = readme.render(text, readme.load_results(folder))

    # Assert: only the changed claim moves, and it states the new drop
    assert rendered != text
    assert "beam-spatial top1 -1.21 points" in rendered.split("int8-dynamic ONNX")[1].split("\n")[0]
    assert rendered.split("<!-- results:begin -->")[0] == text.split("<!-- results:begin -->")[0]


def test_headlines_state_what_the_json_measured(readme):
    # Prepare
    results = readme.load_results(RESULTS)

    # Execute
    block = readme.results_block(results)

    # Assert: the unsupported claims are gone; ranges span every task measured
    assert "within 0.2" not in block and "10x smaller" not in block
    ratios = [a["up-ratio"] for a in results["federated"]["accuracy"].values()]
    assert f"{100 * min(ratios):.1f}–{100 * max(ratios):.1f}%" in block
    for name in ("tasks", "federated", "compression", "privacy"):
        assert f"benchmarks/results/{name}.md" in block


def test_a_missing_or_repeated_marker_is_an_error(readme):
    # Prepare
    text = (ROOT / "README.md").read_text()
    results = readme.load_results(RESULTS)

    # Execute / Assert
    with pytest.raises(ValueError, match="results:uplink:begin"):
        readme.render(text.replace("<!-- results:uplink:begin -->", ""), results)
    with pytest.raises(ValueError, match="results:begin"):
        readme.render(text + "\n<!-- results:begin --><!-- results:end -->\n", results)

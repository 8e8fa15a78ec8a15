"""The benchmarks' shared helpers, and the rule that results Markdown is generated.

``benchmarks/`` is not a package: its scripts run as ``python benchmarks/X.py``, which
puts that folder on ``sys.path``; these tests do the same with pytest's
``monkeypatch.syspath_prepend``.
"""

from __future__ import annotations

import importlib
import math
import re
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
RESULTS = BENCH / "results"
# results Markdown -> the module whose markdown() renders it from the JSON of the same name
REPORTS = {
    "compression": "compression_report",
    "federated": "federated_report",
    "privacy": "privacy_report",
    "scale": "scale_report",
    "strategies": "strategies_report",
    "tasks": "tasks_report",
}


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module


def test_mean_ci_on_known_numbers(bench):
    # Prepare: 1, 2, 3 -> mean 2, sample std 1, t(0.975, df=2) = 4.302653
    common = bench("common")

    # Execute
    mean, half, n = common.mean_ci([1.0, 2.0, None, 3.0, float("nan")])

    # Assert: None / NaN skipped; half = t * s / sqrt(n)
    assert (mean, n) == (2.0, 3)
    assert half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert common.half_width(1.0, 3) == pytest.approx(half)
    assert common.fmt_ci([1.0, 2.0, 3.0]) == "2.000 ± 2.484"


def test_mean_ci_with_too_few_values(bench):
    common = bench("common")
    assert common.mean_ci([0.5])[0] == 0.5 and math.isnan(common.mean_ci([0.5])[1])
    assert common.mean_ci([])[2] == 0
    assert common.fmt_ci([0.5]) == "0.500" and common.fmt_ci([None]) == "—"
    assert common.ci_note(1) == "One seed: no interval."
    assert "t = 4.30" in common.ci_note(3)


def test_provenance_names_command_commit_and_machine(bench):
    common = bench("common")

    prov = common.provenance(["all", "--rounds", "2"], script="benchmarks/federated.py")

    assert prov["command"] == "python benchmarks/federated.py all --rounds 2"
    assert re.fullmatch(r"[0-9a-f]{7,}|unknown", prov["commit"])
    assert isinstance(prov["dirty"], bool)
    assert prov["date"] and prov["machine"]["cores"] >= 1 and prov["machine"]["processor"]
    assert len(prov["load"]) == 3
    line = common.provenance_lines(prov)[0]
    assert prov["command"] in line and prov["commit"] in line


def test_unknown_provenance_says_so(bench):
    common = bench("common")
    prov = common.unknown_provenance("python benchmarks/x.py", before="abc1234")
    assert prov["commit"] == "unknown (before abc1234)"


def test_table_and_json_round_trip(bench, tmp_path):
    common = bench("common")
    assert common.table(["a", "b"], [[1, "x"]]) == ["| a | b |", "|---|---:|", "| 1 | x |"]
    with pytest.raises(ValueError, match="align"):
        common.table(["a", "b"], [], align="l")
    assert common.load_json(tmp_path / "missing.json") is None
    common.save_json(tmp_path / "r.json", {"b": 1, "a": [1.5]})
    assert common.load_json(tmp_path / "r.json") == {"a": [1.5], "b": 1}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        common.load_json(tmp_path / "bad.json")


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_committed_markdown_is_rendered_from_the_committed_json(bench, name):
    # Prepare
    common = bench("common")
    report = bench(REPORTS[name])
    payload = common.load_json(RESULTS / f"{name}.json")

    # Execute
    text = report.markdown(payload)

    # Assert: a hand edit of the Markdown (or a JSON change without --render) fails here
    committed = (RESULTS / f"{name}.md").read_text()
    assert text == committed, f"rerun `python benchmarks/{name}.py --render`"
    assert "Produced by `python benchmarks/" in committed and " at commit " in committed


def test_every_results_markdown_has_a_renderer():
    assert {p.stem for p in RESULTS.glob("*.md")} - {"data_generation"} == set(REPORTS)


# data_generation.py is being moved onto common.py in separate work (issue 12).
PENDING = {"data_generation.py"}


def test_no_benchmark_script_edits_sys_path():
    edit = re.compile(r"sys\.path\s*(\.insert|\.append|\.extend|\[|=|\+=)")
    scripts = [p for p in BENCH.glob("*.py") if p.name not in PENDING]
    assert len(scripts) >= 6
    for script in scripts:
        assert not edit.search(script.read_text()), script.name

"""Strategy comparison report on synthetic run records: CSV, Markdown and plots."""

from __future__ import annotations

import csv
import math

import pytest

from rantune.simulations.compare.records import load_runs, run_from_dict, run_to_dict, save_run
from rantune.simulations.compare.report import build_rows, render_markdown, summarise, write_report

STRATEGIES = {"fedavg": 0.70, "flora": 0.80, "ffa-lora": 0.75}
PARTITIONS = ("natural", "dirichlet-0.1")


def synthetic_record(
    strategy: str,
    partition: str,
    seed: int,
    task: str = "los",
    rounds: int = 5,
    higher: bool = True,
) -> dict:
    """A run whose global metric climbs linearly to a strategy-specific plateau."""
    level = STRATEGIES[strategy] - (0.05 if partition != "natural" else 0.0) + 0.01 * seed
    history = []
    for r in range(1, rounds + 1):
        value = level * r / rounds
        if not higher:
            value = -10 * value  # e.g. NMSE in dB: lower is better
        clients = {f"site-{c}": value + (c - 1) * 0.02 * (1 if higher else -1) for c in range(3)}
        history.append(
            {
                "round": r,
                "global_metric": value,
                "client_metrics": clients,
                "bytes_up": 3 * (2_000_000 if strategy == "flora" else 1_000_000),
                "bytes_down": 3 * 500_000,
                "wall_time": 0.5,
            }
        )
    return {
        "strategy": strategy,
        "partition": partition,
        "seed": seed,
        "task": task,
        "metric": "accuracy" if higher else "nmse_db",
        "higher_is_better": higher,
        "history": history,
    }


def grid(seeds=(0, 1, 2), task="los", higher=True) -> list[dict]:
    return [
        synthetic_record(s, p, seed, task, higher=higher)
        for s in STRATEGIES
        for p in PARTITIONS
        for seed in seeds
    ]


def test_rows_hold_final_best_worst_target_mb_and_time():
    # Prepare
    record = synthetic_record("flora", "natural", 0)
    record["history"][-1]["global_metric"] = 0.5  # a drop in the last round
    # Execute
    (row,) = build_rows([record], targets={"los": 0.6})
    # Assert
    assert row["final_metric"] == pytest.approx(0.5)
    assert row["best_metric"] == pytest.approx(0.8 * 4 / 5) and row["best_round"] == 4
    assert row["worst_client_metric"] == pytest.approx(0.8 - 0.02)  # clients of the last round
    assert row["rounds_to_target"] == 4  # 0.64 >= 0.6 at round 4
    assert row["mb_up"] == pytest.approx(5 * 6.0) and row["mb_down"] == pytest.approx(5 * 1.5)
    assert row["wall_time_s"] == pytest.approx(2.5)
    assert build_rows([record], targets=0.99)[0]["rounds_to_target"] is None


def test_lower_is_better_flips_best_worst_target_and_ranking():
    rows = build_rows(
        grid(seeds=(0,), task="prediction", higher=False), targets={"prediction": -7.0}
    )
    flora = next(r for r in rows if r["strategy"] == "flora" and r["partition"] == "natural")
    assert flora["best_metric"] == pytest.approx(-8.0) and flora["best_round"] == 5
    assert flora["worst_client_metric"] == pytest.approx(-8.0 + 0.02)
    assert flora["rounds_to_target"] == 5  # -6.4 at round 4 is not <= -7
    natural = [s.strategy for s in summarise(rows) if s.partition == "natural"]
    assert natural == ["flora", "ffa-lora", "fedavg"]


def test_summary_mean_std_and_ranking():
    summaries = summarise(build_rows(grid()))
    natural = [s for s in summaries if s.partition == "natural"]
    assert [s.strategy for s in natural] == ["flora", "ffa-lora", "fedavg"]
    flora = natural[0]
    assert flora.seeds == 3
    assert flora.final.mean == pytest.approx(0.81) and flora.final.std == pytest.approx(0.01)


def test_write_report_creates_csv_markdown_and_plots_with_every_run(tmp_path):
    # Prepare
    records = grid() + grid(seeds=(0, 1), task="beam")
    # Execute
    files = write_report(records, tmp_path, targets={"los": 0.6})
    # Assert: the CSV has one row per run
    with open(files.csv) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(records)
    assert {(r["task"], r["strategy"], r["partition"], r["seed"]) for r in rows} == {
        (r["task"], r["strategy"], r["partition"], str(r["seed"])) for r in records
    }
    assert rows[0].keys() >= {
        "final_metric",
        "best_metric",
        "worst_client_metric",
        "rounds_to_target",
        "mb_up",
        "mb_down",
        "wall_time_s",
    }
    beam_target = [r["rounds_to_target"] for r in rows if r["task"] == "beam"]
    assert set(beam_target) == {""}
    # report.md: every task, partition and strategy, ranked, with MB columns and plot links
    text = files.markdown.read_text()
    for name in [
        "los",
        "beam",
        *PARTITIONS,
        *STRATEGIES,
        "MB up",
        "MB down",
        "higher is better",
        "rounds to 0.6",
    ]:
        assert name in text
    assert "0.81 ± 0.01" in text
    los_natural = text.split("### Partition `natural`")[1].split("###")[0]
    assert los_natural.index("flora") < los_natural.index("ffa-lora") < los_natural.index("fedavg")
    # plots: three PNGs per task, linked from the report
    assert len(files.plots) == 6
    for path in files.plots:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
        assert f"plots/{path.name}" in text


def test_single_seed_and_missing_metrics_do_not_break_the_report(tmp_path):
    record = synthetic_record("fedavg", "natural", 0)
    record["history"][2]["global_metric"] = None
    for entry in record["history"]:
        entry["client_metrics"] = {}
    diverged = synthetic_record("flora", "natural", 0)
    for entry in diverged["history"]:
        entry["global_metric"] = float("nan")
    files = write_report([record, diverged], tmp_path)
    (fedavg, flora) = build_rows([record, diverged])
    assert math.isnan(fedavg["worst_client_metric"]) and math.isnan(flora["final_metric"])
    text = files.markdown.read_text()
    ranked = text.split("### Partition `natural`")[1]
    assert ranked.index("fedavg") < ranked.index("flora")  # a diverged run ranks last
    assert len(files.plots) == 3


def test_bad_records_fail_with_a_clear_message():
    good = synthetic_record("fedavg", "natural", 0)
    with pytest.raises(ValueError, match="missing \\['history'\\]"):
        build_rows([{k: v for k, v in good.items() if k != "history"}])
    bad_round = {**good, "history": [{"round": 1, "global_metric": 0.1}]}
    with pytest.raises(ValueError, match="bytes_up"):
        build_rows([bad_round])
    with pytest.raises(ValueError, match="appears twice"):
        build_rows([good, good])
    with pytest.raises(ValueError, match="no run records"):
        build_rows([])
    with pytest.raises(ValueError, match="expected a number"):
        build_rows([{**good, "history": [{**good["history"][0], "global_metric": "high"}]}])


def test_records_roundtrip_through_json_files(tmp_path):
    records = grid(seeds=(0,))
    for record in records:
        save_run(tmp_path, record)
    loaded = load_runs(tmp_path)
    assert len(loaded) == len(records)
    assert {run_to_dict(r)["strategy"] for r in loaded} == set(STRATEGIES)
    assert run_from_dict(run_to_dict(loaded[0])) == loaded[0]
    corrupt = next((tmp_path / "runs" / "los").glob("*.json"))
    corrupt.write_text("{not json")
    with pytest.raises(ValueError, match="delete it to rerun"):
        load_runs(tmp_path)


def test_markdown_renders_without_plots():
    text = render_markdown(build_rows(grid(seeds=(0,))))
    assert text.startswith("# Strategy comparison") and "### Plots" not in text


def _personalized(global_level: float, client_level: float, val_level: float) -> dict:
    """A FedSA-LoRA-like run: a weak global model, strong personalized client models."""
    record = synthetic_record("fedavg", "natural", 0)
    record["strategy"], record["personalized"] = "fedsa-lora", True
    for entry in record["history"]:
        frac = entry["round"] / 5
        entry["global_metric"] = global_level
        entry["client_metrics"] = {f"site-{c}": client_level * frac for c in range(3)}
        entry["client_val_metrics"] = {f"site-{c}": val_level + 0.01 * c for c in range(3)}
    return record


def test_a_strategy_that_keeps_parameters_local_is_ranked_by_its_personalized_client_mean():
    # Prepare: FedSA-LoRA's global model (0.30) is what no station uses; its stations' own
    # models reach 0.90, above FedAvg's 0.70 global.
    records = [synthetic_record("fedavg", "natural", 0), _personalized(0.30, 0.90, 0.50)]
    # Execute
    rows = build_rows(records, targets={"los": 0.72})
    text = render_markdown(rows)
    # Assert
    fedsa = next(r for r in rows if r["strategy"] == "fedsa-lora")
    fedavg = next(r for r in rows if r["strategy"] == "fedavg")
    assert fedsa["personalized"] and fedsa["rank_metric"] == pytest.approx(0.90)
    assert fedsa["final_metric"] == pytest.approx(0.30)  # the global one is still shown
    assert not fedavg["personalized"] and fedavg["rank_metric"] == fedavg["final_metric"]
    assert fedsa["mean_client_val_metric"] == pytest.approx(0.51)
    assert fedsa["rounds_to_target"] == 4  # personalized curve 0.72 at round 4
    assert fedavg["rounds_to_target"] is None  # 0.70 never reaches 0.72
    assert [s.strategy for s in summarise(rows)] == ["fedsa-lora", "fedavg"]
    ranked = text.split("### Partition `natural`")[1]
    assert ranked.index("fedsa-lora") < ranked.index("fedavg")
    assert "personalized client mean" in ranked and "0.9 (personalized)" in text


def test_validation_metrics_survive_the_record_round_trip(tmp_path):
    record = _personalized(0.3, 0.9, 0.5)
    save_run(tmp_path, record)
    (run,) = load_runs(tmp_path)
    assert run.history[-1].client_val_metrics == {"site-0": 0.5, "site-1": 0.51, "site-2": 0.52}
    assert run_to_dict(run)["history"][0]["client_val_metrics"]["site-2"] == pytest.approx(0.52)
    old = synthetic_record("fedavg", "natural", 0)  # a record without validation metrics
    assert run_from_dict(old).history[0].client_val_metrics == {}

"""Static-int8 calibration without pooled rows: each station's MinMax ranges on its own
rows, merged by the server, equal pooled calibration; in federated mode no client row
reaches the server's quantizer, and the manifest says where calibration happened."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from compression_runs import FAST_COMPRESS, smoke_onnx, smoke_run

import rantune.compression.calibrate as calibrate
import rantune.compression.data as compression_data
import rantune.compression.quantize_edge as quantize_edge
from rantune.compression.export import run_onnx
from rantune.compression.merge import load_run
from rantune.compression.pipeline import compress
from rantune.compression.quantize_edge import quantize_static_int8
from rantune.compression.report import INT8_TARGET
from rantune.federated.splits import FederatedData
from rantune_edge.manifest import read_manifest

FAST = replace(FAST_COMPRESS, max_calib=48, max_eval=128)
# the export test's int8 tolerance: max |int8 - fp32| <= 10% of the fp32 output spread
INT8_RELATIVE_TOLERANCE = 0.10


@pytest.fixture(scope="module")
def los(tmp_path_factory):
    return smoke_onnx(tmp_path_factory.getbasetemp() / "compression", "los")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return smoke_run(tmp_path_factory.getbasetemp() / "compression", "los")


def test_merged_station_ranges_equal_pooled_calibration(los, tmp_path):
    # Prepare: three "stations" holding disjoint slices of the rows
    rows = los["calib"]
    parts = [rows[:10], rows[10:40], rows[40:]]
    # Execute: each computes its ranges alone; the server merges and quantizes from them
    merged = calibrate.merge_ranges([calibrate.station_ranges(los["pre"], p) for p in parts])
    federated = quantize_static_int8(los["pre"], tmp_path / "fed.onnx", None, ranges=merged)
    pooled = quantize_static_int8(los["pre"], tmp_path / "pooled.onnx", rows)
    # Assert: the same model as calibrating on the pooled rows, output for output
    x = los["x"].numpy()
    assert np.array_equal(run_onnx(federated, x), run_onnx(pooled, x))
    one = calibrate.station_ranges(los["pre"], parts[0])
    name = next(n for n in merged.keys() if one[n].range_value != merged[n].range_value)
    assert merged[name].range_value[0] <= one[name].range_value[0]
    assert merged[name].range_value[1] >= one[name].range_value[1]


def test_histogram_methods_are_refused_over_federated_ranges(los, tmp_path):
    # Prepare: a station with rows, no server-held rows
    station = calibrate.Participant("0", lambda: (los["x"][:8], None))
    # Execute / Assert: nothing is written
    with pytest.raises(ValueError, match="needs every row's histogram"):
        calibrate.calibrated_static_int8(
            los["pre"], tmp_path / "s.onnx", None, (station,), method="percentile"
        )
    with pytest.raises(ValueError, match="needs calibration data"):
        calibrate.calibrated_static_int8(los["pre"], tmp_path / "s.onnx", None, ())
    assert list(tmp_path.iterdir()) == []


def test_federated_calibration_reads_each_station_alone(run_dir, tmp_path, monkeypatch):
    # Prepare: every station's own training inputs; pooled rows are refused; the
    # server's quantize_static and each station's calibrator are instrumented
    run = load_run(run_dir)
    data = FederatedData.load(run.config.data, run.config.partition)
    own = {
        str(pid): {r.numpy().tobytes() for r in data.tensors(run.task, pid, "train")[0]}
        for pid in range(data.num_clients)
    }

    def refuse(*args, **kwargs):
        raise AssertionError("pooled client rows requested")

    seen, server_calls = [], []
    original_ranges, original_static = calibrate.station_ranges, quantize_edge.quantize_static

    def station_ranges(model, x, batch_size=32):
        seen.append(x)
        return original_ranges(model, x, batch_size)

    def quantize_static(model_input, model_output, reader=None, **kwargs):
        server_calls.append((reader, kwargs.get("calibration_cache_path")))
        return original_static(model_input, model_output, reader, **kwargs)

    monkeypatch.setattr(compression_data, "pooled_split", refuse)
    monkeypatch.setattr(calibrate, "station_ranges", station_ranges)
    monkeypatch.setattr(quantize_edge, "quantize_static", quantize_static)
    # Execute
    report = compress(run_dir, tmp_path / "ART", "fp32,int8-static", FAST)
    # Assert: the server quantized from ranges alone (no reader, a ranges cache) ...
    assert len(server_calls) == 1
    reader, cache = server_calls[0]
    assert reader is None and cache is not None
    # ... each station calibrated on its own rows only ...
    record = read_manifest(tmp_path / "ART" / "int8-static").details
    assert record["calib_source"] == "federated MinMax ranges"
    stations = record["calibration"]["stations"]
    assert stations == ["0", "1", "2"] and len(seen) == len(stations)
    for name, x in zip(stations, seen, strict=True):
        assert {row.tobytes() for row in x} <= own[name]
        assert record["calibration"]["rows"][name] == len(x)
    assert record["calibration_rows"] == sum(len(x) for x in seen)
    assert record["calibration"]["bytes"]["ranges-up"] > 0
    # ... and static int8 still scores within the benchmark's tolerance of fp32
    by_name = {v["variant"]: v for v in report["variants"]}
    ref = run_onnx(tmp_path / "ART" / "fp32" / "model.onnx", report_x(run, FAST))
    got = run_onnx(tmp_path / "ART" / "int8-static" / "model.onnx", report_x(run, FAST))
    assert np.abs(got - ref).max() <= INT8_RELATIVE_TOLERANCE * float(ref.max() - ref.min())
    assert by_name["int8-static"]["agreement_with_teacher"] >= 0.95
    check = next(t for t in report["targets"] if t["variant"] == "int8-static")
    assert check["drop"] <= INT8_TARGET["max_drop_points"]
    assert check["size_ratio"] < 0.5  # (a 32-wide test model: its fixed part weighs more)


def report_x(run, settings) -> np.ndarray:
    """The global test inputs compress() measured on."""
    data = compression_data.run_data(
        run.config, max_eval=settings.max_eval, distill="off", calibrate=False
    )
    return data.eval_x.numpy()

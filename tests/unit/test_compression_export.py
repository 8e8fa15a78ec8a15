"""ONNX export parity (fp32 <= 1e-4) and int8 accuracy tolerances on a smoke model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from compression_runs import smoke_onnx

from rantune.compression.export import FP32_TOLERANCE, check_parity, describe_onnx, run_onnx
from rantune.compression.quantize_edge import quantize_dynamic_int8, quantize_static_int8

# int8 tolerance on the smoke model, relative to the spread of the fp32 outputs:
# max |int8 - fp32| <= 10% of the fp32 output range, and >= 95% top-1 agreement.
INT8_RELATIVE_TOLERANCE = 0.10
INT8_MIN_AGREEMENT = 0.95


@pytest.fixture(scope="module")
def los(tmp_path_factory):
    return smoke_onnx(tmp_path_factory.getbasetemp() / "compression", "los")


def test_fp32_parity_snapshot_task(los):
    # Prepare: the merged model and its export (fixture)
    model, path, x = los["run"].model, los["onnx"], los["x"]
    # Execute
    error = check_parity(model, path, x)
    info = describe_onnx(path)
    # Assert: parity, checker, one file, dynamic batch
    assert error <= FP32_TOLERANCE
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert not list(path.parent.glob(f"{path.name}.data"))
    assert info["input"]["shape"] == ["batch", 2, 16, 32]
    assert info["input"]["dtype"] == "float32"
    many = x.repeat(2, 1, 1, 1)[:64].numpy()
    for batch in (1, 3, 64):
        assert run_onnx(path, many[:batch]).shape == (batch, 2)


def test_fp32_parity_prediction_task(tmp_path_factory):
    # Prepare / Execute: the 5-D prediction input [B, T, 2, A, S]
    pred = smoke_onnx(tmp_path_factory.getbasetemp() / "compression", "prediction")
    error = check_parity(pred["run"].model, pred["onnx"], pred["x"][:16])
    info = describe_onnx(pred["onnx"])
    # Assert
    assert error <= FP32_TOLERANCE
    assert info["input"]["shape"] == ["batch", 4, 2, 16, 32]
    assert info["output"]["shape"] == ["batch", 2, 16, 32]


def test_parity_check_refuses_a_model_that_differs(los, tmp_path):
    # Prepare: perturb one weight of the PyTorch model after export
    model = __import__("copy").deepcopy(los["run"].model)
    with torch.no_grad():
        model.head.classifier.bias += 1.0
    # Execute / Assert
    with pytest.raises(ValueError, match="differs from PyTorch"):
        check_parity(model, los["onnx"], los["x"][:8])


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_int8_within_tolerance_and_smaller(los, tmp_path, kind):
    # Prepare
    reference = run_onnx(los["onnx"], los["x"].numpy())
    out = tmp_path / f"{kind}.onnx"
    # Execute
    if kind == "dynamic":
        quantize_dynamic_int8(los["pre"], out)
    else:
        quantize_static_int8(los["pre"], out, los["calib"])
    got = run_onnx(out, los["x"].numpy())
    # Assert: tolerance and size
    spread = float(reference.max() - reference.min())
    assert np.abs(got - reference).max() <= INT8_RELATIVE_TOLERANCE * spread
    agreement = (got.argmax(1) == reference.argmax(1)).mean()
    assert agreement >= INT8_MIN_AGREEMENT
    assert out.stat().st_size < 0.5 * los["onnx"].stat().st_size
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert ("MatMulInteger" in ops) if kind == "dynamic" else ("QuantizeLinear" in ops)


def test_static_quantization_without_calibration_data_is_refused(los, tmp_path):
    # Prepare
    out = tmp_path / "static.onnx"
    # Execute / Assert: nothing written either way
    with pytest.raises(ValueError, match="needs calibration data"):
        quantize_static_int8(los["pre"], out, None)
    with pytest.raises(ValueError, match="needs calibration data"):
        quantize_static_int8(los["pre"], out, np.zeros((0, 2, 16, 32), np.float32))
    with pytest.raises(ValueError, match="calibration data has shape"):
        quantize_static_int8(los["pre"], out, np.zeros((4, 2, 8, 32), np.float32))
    assert list(tmp_path.iterdir()) == []

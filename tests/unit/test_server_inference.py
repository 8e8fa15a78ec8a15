"""Server-side torchao inference: CPU fallback tested here, CUDA modes in gpu-marked tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from compression_runs import smoke_run

from rantune.compression.quantize_server import (
    SERVER_MODES,
    check_mode,
    default_mode,
    pick_device,
    quantize_for_server,
)
from rantune.server.inference import ServerInference


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return smoke_run(tmp_path_factory.getbasetemp() / "compression", "los")


@pytest.fixture(scope="module")
def inputs():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(16, 2, 16, 32, generator=generator) / 20


@pytest.fixture(scope="module")
def reference(run_dir, inputs):
    from rantune.compression.merge import load_run

    model = load_run(run_dir).model
    with torch.no_grad():
        return model, model(inputs).numpy()


def test_auto_device_falls_back_to_cpu(run_dir, inputs, reference, monkeypatch):
    # Prepare: make sure the fallback path is taken even on a GPU machine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # Execute
    service = ServerInference.from_run(run_dir)
    out = service.predict(inputs.numpy())
    # Assert
    info = service.describe()
    assert info["device"] == "cpu" and info["mode"] == "fp32" and not info["compiled"]
    assert info["source"]["run_dir"] == str(run_dir.resolve())
    spread = reference[1].max() - reference[1].min()
    assert np.abs(out - reference[1]).max() <= 0.1 * spread
    assert service.classify(inputs[:3]) == [["nlos", "los"][i] for i in reference[1][:3].argmax(1)]


@pytest.mark.parametrize("mode", ["fp32", "int8-weight-only", "int8-dynamic"])
def test_cpu_modes_match_fp32(reference, inputs, mode):
    # Prepare
    model, expected = reference
    # Execute
    served = quantize_for_server(model, mode, "cpu")
    out = served.predict(inputs)
    # Assert: fp32 is exact, int8 close; the source model is untouched
    tolerance = 1e-6 if mode == "fp32" else 0.1 * (expected.max() - expected.min())
    assert np.abs(out - expected).max() <= tolerance
    assert served.mode == mode and served.device.type == "cpu"
    assert type(model.encoder.blocks[0].attn.q_proj.weight) is torch.nn.Parameter


def test_cuda_only_modes_are_refused_on_cpu(reference):
    # Execute / Assert: a clear error that names the fallback
    for mode in ("float8", "int4-weight-only"):
        with pytest.raises(ValueError, match="needs a CUDA GPU"):
            check_mode(mode, torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown"):
        check_mode("int2", torch.device("cpu"))
    assert default_mode(torch.device("cpu")) == "fp32"
    assert set(SERVER_MODES) >= {"fp32", "int8-weight-only", "int8-dynamic", "float8"}


def test_asking_for_cuda_without_it_fails_clearly(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        pick_device("cuda")
    assert pick_device("auto").type == "cpu"


@pytest.mark.parametrize("mode", ["int8-weight-only", "int8-dynamic"])
def test_cpu_fallback_serves_torchao_int8_on_request(run_dir, inputs, reference, mode, monkeypatch):
    # Prepare
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # Execute
    service = ServerInference.from_run(run_dir, mode=mode)
    out = service.predict(inputs.numpy())
    # Assert: torchao tensors on the CPU, outputs close to fp32
    assert service.describe()["device"] == "cpu" and service.describe()["mode"] == mode
    weight = service.server.module.encoder.blocks[0].attn.q_proj.weight
    assert type(weight).__module__.startswith("torchao")
    assert np.abs(out - reference[1]).max() <= 0.1 * (reference[1].max() - reference[1].min())


def test_wrong_input_rank_is_refused(run_dir, inputs):
    service = ServerInference.from_run(run_dir, device="cpu", mode="fp32")
    with pytest.raises(ValueError, match="expected 4 axes"):
        service.predict(inputs[0].numpy())


@pytest.mark.gpu
def test_gpu_auto_mode_serves_on_cuda(run_dir, inputs, reference):
    # Execute: auto picks CUDA, float8 on sm89+ (int8 weight-only before), compiled
    service = ServerInference.from_run(run_dir)
    out = service.predict(inputs.numpy())
    # Assert
    info = service.describe()
    assert info["device"].startswith("cuda") and info["compiled"]
    expected = reference[1]
    assert np.abs(out - expected).max() <= 0.15 * (expected.max() - expected.min())


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["float8", "int4-weight-only", "int8-weight-only"])
def test_gpu_modes_match_fp32(reference, inputs, mode):
    # Prepare
    model, expected = reference
    try:
        check_mode(mode, torch.device("cuda"))
    except ValueError as err:
        pytest.skip(str(err))
    # Execute
    served = quantize_for_server(model, mode, "cuda", compile=False)
    out = served.predict(inputs)
    # Assert: bf16 + low-bit weights: within 15% of the fp32 output spread
    assert np.abs(out - expected).max() <= 0.15 * (expected.max() - expected.min())
    assert served.device.type == "cuda"

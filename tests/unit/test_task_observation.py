"""The partial observation: one definition for training, evaluation, baselines and ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from task_channels import dataset, plane_waves

from rantune.channels.beams import beam_gains
from rantune.config import RadioConfig
from rantune.errors import InputError
from rantune.federated.run_config import resolve_run_config
from rantune.model import ChannelEncoder, ModelConfig
from rantune.model.encoder import csi_to_real, real_to_csi
from rantune.tasks import TaskSettings, build_task_model, get_task
from rantune.tasks.observation import BeamObservation, ls_estimate, row_normal, sample_keys

SETTINGS = {
    "rsrp": TaskSettings(),
    "wide": TaskSettings(set_b_wide=8),
    "csi-antennas": TaskSettings(observation="csi", antennas=4),
    "csi-pilots": TaskSettings(observation="csi", antennas=0, pilot_spacing=8),
}


def random_csi(n: int, shape: tuple[int, ...] = (16, 32), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n, *shape)) + 1j * rng.standard_normal((n, *shape))
    return (h / np.sqrt(np.prod(shape))).astype(np.complex64)


@pytest.mark.parametrize("name", list(SETTINGS))
@pytest.mark.parametrize("slots", [0, 3])
def test_gate_is_idempotent_and_normalizes(name, slots):
    # Prepare
    obs = BeamObservation(SETTINGS[name], (16, 32), 16)
    shape = (16, 32) if slots == 0 else (slots, 16, 32)
    csi = random_csi(5, shape)
    gate = obs.gate()

    # Execute
    x = obs.model_input(csi, sample_keys(csi[:, 0] if slots else csi))
    again = gate(x)

    # Assert: applying the gate to its own output changes nothing; fixed norm per sample
    assert torch.allclose(again, x, atol=1e-6)
    norms = x.pow(2).flatten(1).sum(1).sqrt()
    assert torch.allclose(norms, torch.full((5,), obs.grid_norm), atol=1e-5)


@pytest.mark.parametrize("name", ["rsrp", "wide"])
def test_rsrp_grid_carries_exactly_the_measured_rsrps(name):
    # Prepare
    obs = BeamObservation(SETTINGS[name], (16, 32), 16)
    csi = random_csi(6)
    keys = sample_keys(csi)

    # Execute
    rsrp = obs.measure_rsrp(csi, keys)
    grid = real_to_csi(obs.model_input(csi, keys)).numpy()

    # Assert: the grid's Set B gains are the RSRPs up to the common normalization
    ratio = beam_gains(grid, obs.set_b) / rsrp
    assert np.allclose(ratio, ratio[:, :1], rtol=1e-4)


def test_csi_observation_is_the_masked_estimate_the_baselines_use():
    # Prepare
    obs = BeamObservation(SETTINGS["csi-pilots"], (16, 32), 16)
    csi = random_csi(4)

    # Execute
    x = real_to_csi(obs.model_input(csi, sample_keys(csi))).numpy()
    masked = obs.masked(csi)

    # Assert: the model input is the baselines' masked estimate, rescaled per sample
    scale = np.linalg.norm(masked.reshape(4, -1), axis=1) / obs.grid_norm
    assert np.allclose(x * scale[:, None, None], masked, atol=1e-6)
    assert obs.mask.sum() == 16 * 4 and obs.mask[:, ::8].all()


def test_noise_belongs_to_the_sample_not_to_its_position():
    # Prepare
    csi = random_csi(6)
    keys = sample_keys(csi)

    # Execute
    forward = row_normal(keys, (3,), "test")
    reverse = row_normal(keys[::-1], (3,), "test")
    other_purpose = row_normal(keys, (3,), "other")
    noisy = ls_estimate(csi, np.full(6, 10.0), keys, "test")

    # Assert
    assert np.array_equal(forward[::-1], reverse)
    assert not np.allclose(forward, other_purpose)
    assert len(set(keys.tolist())) == 6
    power = np.mean(np.abs(noisy - csi) ** 2) * 16 * 32
    assert power == pytest.approx(0.1, rel=0.1)  # 10 dB below the unit-norm snapshot


def test_settings_are_run_config_keys_with_validation():
    cfg = resolve_run_config({"task": "beam-spatial", "task-options.observation": "csi"})
    assert cfg.task_options.observation == "csi"
    assert cfg.flat_dict()["task-options.set-b-spacing"] == 4
    with pytest.raises(InputError, match="task-options.observation"):
        resolve_run_config({"task-options.observation": "phase"})
    with pytest.raises(InputError, match="task-options.horizon"):
        resolve_run_config({"task-options.horizon": 0})


@pytest.mark.parametrize("name", ["rsrp", "csi-antennas"])
def test_onnx_artifact_applies_the_same_observation(name, tmp_path):
    # Prepare: a 1-layer beam-spatial model, its ONNX export, the observation of 6 users
    from rantune.compression.export import export_onnx, run_onnx

    torch.manual_seed(0)
    settings = TaskSettings(**{**SETTINGS[name].__dict__, "rsrp_error_db": 0.0})
    task = get_task("beam-spatial", settings)
    radio = RadioConfig(num_bs_antennas=16, num_subcarriers=32, num_beams=16)
    model = build_task_model(task, ChannelEncoder(ModelConfig(num_layers=1)), radio).eval()
    csi = plane_waves(np.linspace(-0.9, 0.9, 6), np.arange(6.0))
    noisy = (csi + random_csi(6, seed=1) * 0.3).astype(np.complex64)
    x, _ = task.tensors(dataset(csi, noisy=noisy), np.arange(6))

    # Execute
    export_onnx(model, x, tmp_path / "model.onnx")
    on_observation = run_onnx(tmp_path / "model.onnx", x.numpy())
    on_full = run_onnx(tmp_path / "model.onnx", csi_to_real(noisy).numpy())
    with torch.no_grad():
        reference = model(x).numpy()

    # Assert: the artifact gives the training-time output on the observation and on the
    # full estimate alike (it masks / measures Set B itself)
    assert np.abs(on_observation - reference).max() < 1e-4
    assert np.abs(on_full - reference).max() < 1e-4

"""prediction on noisy inputs and beam-temporal (BM-Case2): baselines on known channels, no leak."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from task_channels import dataset, plane_waves, rotating

from rantune.config import RadioConfig
from rantune.errors import InputError
from rantune.model import ChannelEncoder, ModelConfig
from rantune.model.encoder import real_to_csi
from rantune.tasks import TaskSettings, build_task_model, get_task, predict
from rantune.tasks.baselines import prediction as bp
from rantune.tasks.metrics import nmse_db

RADIO = RadioConfig(num_bs_antennas=16, num_subcarriers=32, num_beams=16, num_time_steps=6)


def doppler_data(n: int = 30, doppler: np.ndarray | None = None, seed: int = 0, **kwargs):
    """Single plane waves turning at ``doppler`` rad/slot (random per sample by default)."""
    rng = np.random.default_rng(seed)
    csi = plane_waves(rng.uniform(-0.9, 0.9, n), rng.uniform(0, 8, n))
    doppler = rng.uniform(-0.6, 0.6, n) if doppler is None else doppler
    return dataset(csi, sequence=rotating(csi, doppler), **kwargs)


# ---------------------------------------------------------------- prediction


def test_per_sample_ar_is_exact_on_single_plane_waves():
    # Prepare: noiseless inputs (200 dB), a different Doppler per sample
    data = doppler_data()
    rows = np.arange(30)

    # Execute
    result = get_task("prediction").baseline(data, rows, rows)

    # Assert: AR(2) on its own past extrapolates a rotating phasor exactly; hold does not
    assert result["ar_nmse_db"] < -60.0
    assert result["sample_and_hold_nmse_db"] > -20.0
    assert result["nmse_db"] == result["ar_nmse_db"]  # the plain keys: the best method


def test_hold_is_exact_on_a_static_channel():
    data = doppler_data(doppler=np.zeros(30))
    rows = np.arange(30)
    result = get_task("prediction").baseline(data, rows, rows)
    assert result["sample_and_hold_nmse_db"] < -60.0
    assert result["linear_nmse_db"] < -60.0


def test_wiener_predictor_fitted_on_training_rows_is_exact_for_a_common_doppler():
    # Prepare: every user of the station turns at 0.4 rad/slot
    data = doppler_data(40, doppler=np.full(40, 0.4))
    train, test = np.arange(20), np.arange(20, 40)

    # Execute
    result = get_task("prediction").baseline(data, train, test)

    # Assert
    assert result["wiener_nmse_db"] < -60.0


def test_prediction_inputs_are_noisy_estimates_at_the_sample_snr():
    # Prepare
    data = doppler_data(20, snr_db=10.0)
    task = get_task("prediction")

    # Execute
    x, y = task.tensors(data, np.arange(20))

    # Assert: the noiseless last slot and 10 dB noisy inputs, both scaled per sample by
    # one positive factor that puts the observed (noisy) first slot at unit norm
    past, target, last = real_to_csi(x).numpy(), real_to_csi(y).numpy(), data["csi_sequence"][:, -1]
    scale = np.einsum("nas,nas->n", target, last.conj()).real / np.einsum(
        "nas,nas->n", last, last.conj()
    ).real  # [N]
    assert np.all(scale > 0)
    np.testing.assert_allclose(target, scale[:, None, None] * last, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(past[:, 0].reshape(20, -1), axis=1), 1.0, rtol=1e-5)
    unscaled = past / scale[:, None, None, None]
    assert nmse_db(unscaled, data["csi_sequence"][:, :4]) == pytest.approx(-10.0, abs=0.5)


def test_changing_the_target_slot_leaves_the_inputs_unchanged():
    # Prepare
    data = doppler_data(8, snr_db=10.0)
    x_before, y_before = get_task("prediction").tensors(data, np.arange(8))
    sequence = data["csi_sequence"].copy()
    sequence[:, -1] = sequence[:, -1] * -1j
    data.arrays["csi_sequence"] = sequence

    # Execute
    x_after, y_after = get_task("prediction").tensors(data, np.arange(8))

    # Assert
    assert torch.equal(x_before, x_after)
    assert not torch.allclose(y_before, y_after)


def test_nmse_per_speed_band():
    # Prepare: half pedestrian, half vehicular
    speed = np.where(np.arange(20) < 10, 1.0, 30.0)
    data = doppler_data(20, speed=speed)
    task = get_task("prediction")
    rows = np.arange(20)

    # Execute
    bands = task.subsets(data, rows)
    result = task.baseline(data, rows, rows)

    # Assert
    assert set(bands) == {"speed 0-3 m/s", "speed >=25 m/s"}
    assert bands["speed 0-3 m/s"].sum() == 10
    assert "ar_nmse_db[speed >=25 m/s]" in result and "wiener_nmse_db[speed 0-3 m/s]" in result


def test_horizon_is_a_task_option():
    data = doppler_data(4)
    task = get_task("prediction", TaskSettings(horizon=3))
    x, _ = task.tensors(data, np.arange(4))
    assert x.shape[1] == 3  # 6 slots - horizon 3
    with pytest.raises(InputError, match="horizon"):
        get_task("prediction", TaskSettings(horizon=6)).tensors(data, np.arange(4))


def test_ar_recursion_handles_one_and_two_slot_histories():
    past = rotating(plane_waves(np.array([0.2])), np.array([0.3]), slots=2)
    assert bp.ar_coefficients(past).shape == (1, 1)
    assert np.array_equal(bp.ar_predict(past[:, :1], 2), past[:, 0])  # one slot: hold


# ---------------------------------------------------------------- beam-temporal


@pytest.mark.parametrize(
    "settings",
    [TaskSettings(observation="csi", antennas=0), TaskSettings(rsrp_error_db=0.0)],
)
def test_keeping_the_current_beam_is_exact_on_a_static_channel(settings):
    # Prepare: static plane waves at the Set B beams (so RSRP can name them, too)
    u = -1.0 + (2.0 * np.arange(0, 16, 4) + 1.0) / 16
    csi = plane_waves(np.tile(u, 5))
    data = dataset(csi, sequence=rotating(csi, np.zeros(len(csi))))
    rows = np.arange(len(csi))

    # Execute
    result = get_task("beam-temporal", settings).baseline(data, rows, rows)

    # Assert
    assert result["hold_top1"] == 1.0 and result["linear_top1"] == 1.0
    assert result["hold_gain_loss_db"] == pytest.approx(0.0, abs=1e-6)


def test_beam_temporal_target_is_the_future_slot_and_never_an_input():
    # Prepare: the target slot turns to another direction
    rng = np.random.default_rng(0)
    csi = plane_waves(rng.uniform(-0.9, 0.9, 8))
    sequence = rotating(csi, np.zeros(8))
    data = dataset(csi, sequence=sequence, snr_db=10.0)
    task = get_task("beam-temporal")
    x_before, _ = task.tensors(data, np.arange(8))
    sequence = sequence.copy()
    sequence[:, -1] = plane_waves(-np.asarray(rng.uniform(-0.9, 0.9, 8)))
    data.arrays["csi_sequence"] = sequence

    # Execute
    x_after, y_after = task.tensors(data, np.arange(8))

    # Assert: same inputs; the target is the last slot's codebook gains
    assert torch.equal(x_before, x_after)
    expected = dataset(sequence[:, -1])["beam_gains"]
    assert np.allclose(y_after.numpy(), expected, rtol=1e-5)


def test_beam_temporal_model_reads_the_slot_sequence():
    torch.manual_seed(0)
    data = doppler_data(4)
    task = get_task("beam-temporal", TaskSettings(horizon=2))
    model = build_task_model(task, ChannelEncoder(ModelConfig(num_layers=1)), RADIO)
    x, y = task.tensors(data, np.arange(4))
    out = predict(model, x)
    assert tuple(x.shape) == (4, 4, 2, 16, 32) and tuple(out.shape) == (4, 16)
    assert task.input_rank == 5 and np.isfinite(task.metrics(out, y)["top1"])

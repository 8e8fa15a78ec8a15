"""positioning (ray-traced stations): LoS geometry and kNN on known users, metrics, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from task_channels import dataset, los_users, plane_waves

from rantune.config import RadioConfig
from rantune.errors import InputError
from rantune.model import ChannelEncoder, ModelConfig
from rantune.tasks import build_task_model, get_task, predict
from rantune.tasks.baselines.positioning import direction_cosine, knn_positions
from rantune.tasks.metrics import position_metrics

RADIO = RadioConfig(num_bs_antennas=16, num_subcarriers=32, num_beams=16)


def street_users(n: int, seed: int = 0) -> np.ndarray:
    """``[n, 3]`` users 20-200 m in front of the BS, within +-60 degrees, at 1.5 m."""
    rng = np.random.default_rng(seed)
    r, phi = rng.uniform(20, 200, n), rng.uniform(-np.pi / 3, np.pi / 3, n)
    return np.stack([r * np.cos(phi), r * np.sin(phi), np.full(n, 1.5)], -1)


def test_position_metrics_on_known_errors():
    truth = np.zeros((4, 2))
    estimate = np.array([[3.0, 4.0], [0.0, 1.0], [0.0, 0.0], [6.0, 8.0]])  # 5, 1, 0, 10 m
    result = position_metrics(estimate, truth)
    assert result["error_mean_m"] == pytest.approx(4.0)
    assert result["error_p50_m"] == pytest.approx(3.0)
    assert result["error_p90_m"] == pytest.approx(np.percentile([5, 1, 0, 10], 90))
    assert np.isnan(position_metrics(estimate, np.full((4, 2), np.nan))["error_p90_m"])


def test_direction_of_a_plane_wave_is_recovered():
    u = np.array([-0.83, -0.2, 0.0, 0.37, 0.91])
    assert np.allclose(direction_cosine(plane_waves(u)), u, atol=2e-3)


def test_los_geometry_locates_line_of_sight_users_near_exactly():
    # Prepare: LoS users of one station, half to fit height and axis sign
    data = los_users(street_users(80))
    train, test = np.arange(40), np.arange(40, 80)

    # Execute
    result = get_task("positioning").baseline(data, train, test)

    # Assert: sub-metre errors at 20-200 m (only the angle grid limits it)
    assert result["los_geometry_error_p90_m"] < 1.0
    assert result["error_p90_m"] <= result["los_geometry_error_p90_m"]


def test_los_geometry_tells_users_behind_the_array_by_their_received_power():
    # Prepare: a street through the BS: a third of the users behind it (x < 0), received
    # through the element's back lobe (20 dB weaker at the same range)
    users = street_users(90, seed=4)
    users[::3, 0] *= -1.0
    data = los_users(users)
    distance = np.linalg.norm(users - [0.0, 0.0, 25.0], axis=1)
    data.arrays["csi_norm"] = (np.where(users[:, 0] < 0, 0.1, 1.0) / distance).astype(np.float32)
    train, test = np.arange(45), np.arange(45, 90)

    # Execute
    result = get_task("positioning").baseline(data, train, test)

    # Assert
    assert result["los_geometry_error_p90_m"] < 1.0


def test_knn_returns_the_fingerprint_position_of_a_revisited_spot():
    train = np.eye(4)
    positions = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    got = knn_positions(train, positions, train[[2, 1]], k=1)
    assert np.allclose(got, positions[[2, 1]])


def test_knn_fingerprinting_recovers_users_seen_in_training():
    # Prepare: channels that differ from user to user (angle and delay taps)
    users = street_users(30)
    data = los_users(users)
    u = users[:, 1] / np.linalg.norm(users - [0, 0, 25.0], axis=1)
    data.arrays["csi_noisy"] = plane_waves(u, np.linalg.norm(users, axis=1) / 20.0)
    rows = np.arange(30)
    result = get_task("positioning").baseline(data, rows, rows)
    assert result["knn_error_p90_m"] < 1e-3


def test_positioning_refuses_tr38901_data_with_the_reason():
    data = dataset(plane_waves(np.array([0.1, 0.2])))  # no ray-traced fields
    with pytest.raises(InputError, match="ray-traced stations only.*beyond geometry"):
        get_task("positioning").tensors(data, np.arange(2))


def test_rows_of_tr38901_stations_in_a_mixed_preset_have_no_target():
    # Prepare: 6 ray-traced rows and 2 TR 38.901 rows (NaN delay)
    data = los_users(street_users(8))
    data.arrays["delay_s"][6:] = np.nan
    task = get_task("positioning")

    # Execute
    x, y = task.tensors(data, np.arange(8))
    torch.manual_seed(0)
    model = build_task_model(task, ChannelEncoder(ModelConfig(num_layers=1)), RADIO)
    out = predict(model, x)
    loss = task.loss(out, y)
    baseline = task.baseline(data, np.arange(4), np.arange(4, 8))

    # Assert: NaN targets are left out of the loss, the metrics and the baselines
    assert torch.isnan(y[6:]).all() and torch.isfinite(y[:6]).all()
    assert torch.isfinite(loss) and tuple(out.shape) == (8, 2)
    assert np.isfinite(task.metrics(out, y)["error_p90_m"])
    assert np.isfinite(baseline["knn_error_mean_m"])
    assert task.loss(out[6:], y[6:]) == 0.0

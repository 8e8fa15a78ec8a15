"""beam-spatial (BM-Case1): baselines on plane waves, metrics on known inputs, no target leak."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from task_channels import dataset, plane_waves

from rantune.channels.beams import dft_codebook
from rantune.config import RadioConfig
from rantune.errors import InputError
from rantune.model import ChannelEncoder, ModelConfig
from rantune.model.encoder import csi_to_real
from rantune.tasks import TaskSettings, build_task_model, get_task, predict
from rantune.tasks.baselines import beams as bb
from rantune.tasks.metrics import beam_metrics, gain_loss_db
from rantune.tasks.observation import BeamObservation

RADIO = RadioConfig(num_bs_antennas=16, num_subcarriers=32, num_beams=16)
RSRP = TaskSettings(rsrp_error_db=0.0)
CSI4 = TaskSettings(observation="csi", antennas=4)


def beam_directions(num_beams: int) -> np.ndarray:
    """Direction cosines of the DFT codebook's beams."""
    return -1.0 + (2.0 * np.arange(num_beams) + 1.0) / num_beams


def off_grid_waves(n: int, num_beams: int = 16, seed: int = 0) -> np.ndarray:
    """Plane waves within 0.35 beam spacings of a random beam (never near a tie)."""
    rng = np.random.default_rng(seed)
    spacing = 2.0 / num_beams
    u = beam_directions(num_beams)[rng.integers(0, num_beams, n)]
    u = u + rng.uniform(-0.35, 0.35, n) * spacing
    return plane_waves(u, rng.uniform(0, 6, n))


# ---------------------------------------------------------------- metrics


def test_beam_metrics_on_known_scores():
    # Prepare: row 0 picks the best beam, row 1 a beam with half the gain (3.01 dB)
    gains = np.array([[1.0, 4.0, 2.0], [4.0, 2.0, 1.0]])
    scores = np.array([[0.0, 9.0, 1.0], [0.5, 0.9, 0.1]])

    # Execute
    result = beam_metrics(scores, gains)

    # Assert
    assert result["top1"] == 0.5 and result["top3"] == 1.0
    assert gain_loss_db(np.array([1, 1]), gains) == pytest.approx([0.0, 10 * np.log10(2)])
    assert result["gain_loss_db"] == pytest.approx(10 * np.log10(2) / 2)
    assert result["gain_loss_db_p90"] == pytest.approx(0.9 * 10 * np.log10(2))


# ---------------------------------------------------------------- baselines


def test_set_b_interpolation_is_exact_on_single_plane_waves():
    # Prepare: noiseless plane waves anywhere between the Set B beams
    data = dataset(off_grid_waves(60))
    rows = np.arange(60)

    # Execute
    result = get_task("beam-spatial", RSRP).baseline(data, rows, rows)

    # Assert: the one-path fit finds every best beam; best-of-Set-B only a quarter
    assert result["interpolation_top1"] == 1.0
    assert result["interpolation_gain_loss_db"] == pytest.approx(0.0, abs=1e-6)
    assert result["best_of_set_b_top1"] < 0.5
    assert result["top1"] == 1.0  # the plain keys are the best method's


def test_best_of_set_b_is_exact_when_the_best_beam_is_in_set_b():
    # Prepare: plane waves exactly at Set B beams (every 4th of 16)
    u = beam_directions(16)[np.tile(np.arange(0, 16, 4), 5)]
    data = dataset(plane_waves(u))
    rows = np.arange(len(u))

    # Execute
    result = get_task("beam-spatial", RSRP).baseline(data, rows, rows)

    # Assert
    assert result["best_of_set_b_top1"] == 1.0
    assert result["best_of_set_b_gain_loss_db"] == pytest.approx(0.0, abs=1e-6)


def test_wide_beam_set_b_interpolation_is_exact_on_plane_waves():
    data = dataset(off_grid_waves(40, seed=1))
    rows = np.arange(40)
    result = get_task("beam-spatial", TaskSettings(set_b_wide=8, rsrp_error_db=0)).baseline(
        data, rows, rows
    )
    assert result["interpolation_top1"] == 1.0


def test_exhaustive_search_on_four_antennas_is_exact_on_plane_waves_and_lmmse_runs():
    # Prepare: one station, plane waves; the first 4 antennas observed
    data = dataset(off_grid_waves(80, seed=2))
    train, test = np.arange(40), np.arange(40, 80)

    # Execute
    result = get_task("beam-spatial", CSI4).baseline(data, train, test)

    # Assert: a single path's 4-antenna beam pattern still peaks at the nearest beam
    assert result["exhaustive_top1"] == 1.0
    assert 0.0 <= result["lmmse_top1"] <= 1.0 and np.isfinite(result["lmmse_gain_loss_db"])


def test_lmmse_reconstructs_an_exactly_low_rank_station():
    # Prepare: every user of the station is the same plane wave up to a complex gain, so
    # the covariance is rank one and the unobserved antennas follow from the observed
    rng = np.random.default_rng(3)
    base = plane_waves(np.array([0.41]), np.array([2.3]))[0]
    gains = rng.standard_normal(60) + 1j * rng.standard_normal(60)
    csi = (base[None] * (gains / np.abs(gains))[:, None, None]).astype(np.complex64)
    obs = BeamObservation(CSI4, (16, 32), 16)
    sites = np.zeros(60, np.int64)

    # Execute
    scores = bb.csi_lmmse(obs, csi, csi, np.full(60, 30.0), sites, np.arange(40), np.arange(40, 60))

    # Assert: the reconstructed gains are the true gains (up to the noise weight)
    truth = dataset(csi)["beam_gains"][40:]
    assert np.allclose(
        scores / scores.sum(1, keepdims=True), truth / truth.sum(1, keepdims=True), atol=1e-3
    )


# ---------------------------------------------------------------- inputs


def test_changing_the_full_codebook_gains_leaves_the_input_unchanged():
    # Prepare
    data = dataset(off_grid_waves(8))
    task = get_task("beam-spatial")
    x_before, _ = task.tensors(data, np.arange(8))
    gains = data["beam_gains"].copy()
    gains[1:] = gains[1:, ::-1]  # row 0 stays: the codebook check reads it
    data.arrays["beam_gains"] = gains
    data.arrays["beam_index"] = gains.argmax(1)

    # Execute
    x_after, y_after = get_task("beam-spatial").tensors(data, np.arange(8))

    # Assert
    assert torch.equal(x_before, x_after)
    assert torch.equal(y_after, torch.as_tensor(data["beam_gains"]))


def test_unobserved_antennas_never_reach_the_input():
    # Prepare: change the noisy estimate on antennas 4..15 only
    data = dataset(off_grid_waves(8))
    task = get_task("beam-spatial", CSI4)
    x_before, _ = task.tensors(data, np.arange(8))
    changed = data["csi_noisy"].copy()
    changed[:, 4:] = np.random.default_rng(0).standard_normal(changed[:, 4:].shape)
    data.arrays["csi_noisy"] = changed.astype(np.complex64)

    # Execute
    x_after, _ = task.tensors(data, np.arange(8))

    # Assert: same input, zero outside the mask
    assert torch.allclose(x_before, x_after, atol=1e-7)
    assert x_after[:, :, 4:].abs().max() == 0.0


@pytest.mark.parametrize("settings", [RSRP, CSI4, TaskSettings(set_b_wide=8, rsrp_error_db=0)])
def test_the_model_applies_the_observation_itself(settings):
    # Prepare: the task model on the observation and on the full noisy estimate
    torch.manual_seed(0)
    csi = off_grid_waves(6)
    data = dataset(csi, noisy=csi * 3.0)  # any scale: the gate normalizes
    task = get_task("beam-spatial", settings)
    model = build_task_model(task, ChannelEncoder(ModelConfig(num_layers=1)), RADIO)
    x, _ = task.tensors(data, np.arange(6))

    # Execute
    on_observation = predict(model, x)
    on_full = predict(model, csi_to_real(data["csi_noisy"]))

    # Assert
    assert torch.allclose(on_observation, on_full, atol=1e-5)
    assert tuple(on_full.shape) == (6, 16)


def test_rsrp_measurement_error_is_in_the_observation_and_repeatable():
    # Prepare
    data = dataset(off_grid_waves(6))
    rows = np.arange(6)

    # Execute
    clean, _ = get_task("beam-spatial", RSRP).tensors(data, rows)
    noisy, _ = get_task("beam-spatial", TaskSettings(rsrp_error_db=2.0)).tensors(data, rows)
    again, _ = get_task("beam-spatial", TaskSettings(rsrp_error_db=2.0)).tensors(data, rows[::-1])

    # Assert: the error changes the input, the same sample gets the same error
    assert not torch.allclose(clean, noisy, atol=1e-3)
    assert torch.equal(noisy, again.flip(0))


def test_options_that_do_not_fit_the_array_fail_with_a_hint():
    data = dataset(off_grid_waves(4))
    with pytest.raises(InputError, match="antennas"):
        get_task("beam-spatial", TaskSettings(observation="csi", antennas=32)).tensors(
            data, np.arange(4)
        )
    with pytest.raises(InputError, match="set-b-spacing"):
        get_task("beam-spatial", TaskSettings(set_b_spacing=17)).tensors(data, np.arange(4))


def test_a_data_set_with_another_codebook_is_refused():
    data = dataset(off_grid_waves(4))
    data.arrays["beam_gains"] = data["beam_gains"] * 2.0
    with pytest.raises(InputError, match="codebook"):
        get_task("beam-spatial").tensors(data, np.arange(4))


def test_set_a_is_the_generators_codebook():
    obs = BeamObservation(TaskSettings(), (16, 32), 16)
    assert np.array_equal(obs.codebook, dft_codebook(16, 16, 0.5))
    assert np.array_equal(obs.set_b_index, np.arange(0, 16, 4))

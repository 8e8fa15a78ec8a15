"""Downstream tasks: metrics on hand examples, baselines on constructed channels, heads, LoRA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rantune.channels.beams import beam_gains, dft_codebook
from rantune.channels.dataset import ChannelDataset
from rantune.config import RadioConfig
from rantune.lora import LoraSettings, apply_lora, load_trainable_state, trainable_state
from rantune.model import ChannelEncoder, ModelConfig, model_config
from rantune.tasks import build_task_model, get_task, predict
from rantune.tasks.metrics import accuracy, f1_score, gain_ratio, nmse_db, roc_auc, topk_accuracy
from rantune.training import TrainSettings, train

RADIO = RadioConfig(num_bs_antennas=16, num_subcarriers=32, num_beams=16, num_time_steps=6)


def make_dataset(
    n: int = 40, seed: int = 0, antennas: int = 16, subcarriers: int = 32
) -> ChannelDataset:
    """Constructed channels: LoS rows are one delay tap, NLoS rows spread over all taps.

    ``csi_sequence`` is a linear ramp in time; beam gains come from the DFT codebook.
    """
    rng = np.random.default_rng(seed)
    los = (np.arange(n) % 2).astype(np.int8)
    steering = np.exp(1j * np.pi * np.outer(rng.uniform(-1, 1, n), np.arange(antennas)))  # [n, A]
    single_tap = np.exp(
        -2j * np.pi * np.outer(rng.integers(0, 4, n), np.arange(subcarriers)) / subcarriers
    )
    spread = rng.standard_normal((n, subcarriers)) + 1j * rng.standard_normal((n, subcarriers))
    freq = np.where(los[:, None] == 1, single_tap, spread)  # [n, S]
    csi = steering[:, :, None] * freq[:, None, :]
    csi += 0.05 * (rng.standard_normal(csi.shape) + 1j * rng.standard_normal(csi.shape))
    csi /= np.linalg.norm(csi.reshape(n, -1), axis=1)[:, None, None]
    csi = csi.astype(np.complex64)
    drift = 0.02 * (rng.standard_normal(csi.shape) + 1j * rng.standard_normal(csi.shape))
    sequence = np.stack([csi + t * drift for t in range(6)], axis=1).astype(np.complex64)
    codebook = dft_codebook(antennas, 16, 0.5)
    gains = beam_gains(csi, codebook)
    return ChannelDataset(
        {
            "csi": csi,
            "csi_noisy": csi.copy(),
            "csi_norm": np.ones(n, np.float32),
            "los": los,
            "indoor": np.zeros(n, np.int8),
            "beam_index": gains.argmax(1).astype(np.int64),
            "beam_gains": gains.astype(np.float32),
            "ut_position": np.zeros((n, 3), np.float32),
            "distance_2d": np.ones(n, np.float32),
            "speed": np.ones(n, np.float32),
            "snr_db": np.full(n, 20.0, np.float32),
            "site_index": np.zeros(n, np.int64),
            "csi_sequence": sequence,
        }
    )


# ---------------------------------------------------------------- metrics


def test_roc_auc_hand_examples():
    # perfect ranking, inverted ranking, one tie between classes, and a 3/4 case
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1])) == 0.0
    assert roc_auc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    # pairs (pos, neg): (0.4 vs 0.1) win, (0.4 vs 0.6) lose, (0.9 vs both) win -> 3/4
    assert roc_auc(np.array([0.1, 0.6, 0.4, 0.9]), np.array([0, 0, 1, 1])) == 0.75
    assert math.isnan(roc_auc(np.array([0.1, 0.2]), np.array([1, 1])))


def test_accuracy_and_f1_hand_examples():
    pred, label = np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1])
    assert accuracy(pred, label) == pytest.approx(3 / 5)
    # tp=2, fp=1, fn=1 -> F1 = 4 / 6
    assert f1_score(pred, label) == pytest.approx(4 / 6)


def test_topk_and_gain_ratio_hand_examples():
    scores = np.array([[0.1, 0.5, 0.4], [0.3, 0.2, 0.1], [0.0, 0.1, 0.9]])
    label = np.array([2, 0, 0])
    assert topk_accuracy(scores, label, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(scores, label, 2) == pytest.approx(2 / 3)
    assert topk_accuracy(scores, label, 3) == 1.0
    gains = np.array([[1.0, 2.0, 4.0], [3.0, 1.0, 1.0]])
    assert gain_ratio(np.array([1, 0]), gains) == pytest.approx((0.5 + 1.0) / 2)


def test_nmse_db_hand_examples():
    target = np.array([[1.0 + 0j, 0.0], [0.0, 2.0 + 0j]])
    with np.errstate(divide="ignore"):
        assert nmse_db(target, target) == -np.inf
    assert nmse_db(np.zeros_like(target), target) == pytest.approx(0.0)
    # per-sample NMSE 0.1 for both rows -> -10 dB
    pred = target * (1 + np.sqrt(0.1))
    assert nmse_db(pred, target) == pytest.approx(-10.0, abs=1e-9)


# ---------------------------------------------------------------- baselines


def test_unknown_task_raises():
    with pytest.raises(ValueError, match="unknown"):
        get_task("segmentation")


def test_los_baseline_separates_constructed_single_tap_channels():
    # Prepare
    data = make_dataset(60)
    train_rows, test_rows = np.arange(0, 40), np.arange(40, 60)

    # Execute
    result = get_task("los").baseline(data, train_rows, test_rows)

    # Assert: one-tap (LoS) rows have a much larger strongest-tap ratio
    assert result["tap_ratio_accuracy"] == 1.0
    assert result["tap_ratio_auc"] == 1.0
    assert 0.0 < result["tap_ratio_threshold"] < 1.0
    assert result["auc"] == 1.0 and get_task("los").primary_metric == "auc"


def test_angle_delay_ratio_separates_los_from_paths_that_share_a_delay():
    # Prepare: LoS = one path (off-grid angle and delay); NLoS = 6 paths arriving in the
    # same delay tap from different directions, which the strongest-tap ratio cannot see
    rng = np.random.default_rng(1)
    n, antennas, subcarriers = 40, 16, 32
    los = (np.arange(n) % 2).astype(np.int8)
    tap = np.exp(-2j * np.pi * np.outer(rng.uniform(0, 8, n), np.arange(subcarriers)) / subcarriers)
    paths = np.where(los == 1, 1, 6)
    csi = np.zeros((n, antennas, subcarriers), complex)
    for i in range(n):
        for _ in range(paths[i]):
            steer = np.exp(1j * np.pi * rng.uniform(-1, 1) * np.arange(antennas))
            csi[i] += (rng.standard_normal() + 1j * rng.standard_normal()) * np.outer(steer, tap[i])
    csi /= np.linalg.norm(csi.reshape(n, -1), axis=1)[:, None, None]
    data = make_dataset(n)
    data.arrays.update(csi=csi.astype(np.complex64), csi_noisy=csi.astype(np.complex64), los=los)

    # Execute
    result = get_task("los").baseline(data, np.arange(20), np.arange(20, 40))

    # Assert
    assert result["angle_delay_auc"] == 1.0
    assert result["tap_ratio_auc"] < 0.8


def test_beam_baseline_is_exact_on_noiseless_estimates_and_degrades_with_noise():
    # Prepare
    data = make_dataset(40)
    noisy = data.subset(np.arange(40))
    rng = np.random.default_rng(3)
    noise = 0.2 * (
        rng.standard_normal(noisy["csi"].shape) + 1j * rng.standard_normal(noisy["csi"].shape)
    )
    noisy.arrays["csi_noisy"] = (noisy["csi"] + noise).astype(np.complex64)
    rows = np.arange(40)

    # Execute
    clean = get_task("beam").baseline(data, rows, rows)
    degraded = get_task("beam").baseline(noisy, rows, rows)

    # Assert
    assert clean["top1"] == 1.0 and clean["gain_ratio"] == pytest.approx(1.0)
    assert degraded["top1"] < 1.0
    assert degraded["top3"] >= degraded["top1"]


def test_prediction_baselines_on_a_linear_ramp():
    # Prepare: h_t = h_0 + t d, so linear extrapolation is exact (noiseless inputs: 200 dB)
    data = make_dataset(10)
    data.arrays["snr_db"] = np.full(10, 200.0, np.float32)
    rows = np.arange(10)
    seq = data["csi_sequence"]
    expected_hold = nmse_db(seq[:, 3], seq[:, 5])

    # Execute
    result = get_task("prediction").baseline(data, rows, rows)

    # Assert
    assert result["sample_and_hold_nmse_db"] == pytest.approx(expected_hold, abs=1e-3)
    assert result["linear_nmse_db"] < -60.0
    assert result["nmse_db"] == min(result[f"{m}_nmse_db"] for m in ("linear", "ar", "wiener"))


# ---------------------------------------------------------------- heads and models


@pytest.mark.parametrize("name", ["los", "beam", "beam-spatial", "beam-temporal", "prediction"])
@pytest.mark.parametrize(("antennas", "subcarriers"), [(16, 32), (32, 64)])
def test_task_model_output_shapes(name, antennas, subcarriers):
    # Prepare
    torch.manual_seed(0)
    radio = RadioConfig(
        num_bs_antennas=antennas, num_subcarriers=subcarriers, num_beams=16, num_time_steps=6
    )
    data = make_dataset(4, antennas=antennas, subcarriers=subcarriers)
    task = get_task(name)
    model = build_task_model(task, ChannelEncoder(ModelConfig(num_layers=1)), radio)
    x, y = task.tensors(data, np.arange(4))

    # Execute
    out = predict(model, x)

    # Assert
    expected = {
        "los": (4, 2),
        "beam": (4, 16),
        "beam-spatial": (4, 16),
        "beam-temporal": (4, 16),
        "prediction": (4, 2, antennas, subcarriers),
    }[name]
    assert tuple(out.shape) == expected
    assert task.metrics(out, y)[task.primary_metric] == task.metrics(out, y)[task.primary_metric]


def test_prediction_head_starts_as_sample_and_hold():
    # Prepare
    torch.manual_seed(0)
    data = make_dataset(4)
    task = get_task("prediction")
    model = build_task_model(task, ChannelEncoder(ModelConfig(num_layers=1)), RADIO)
    x, _ = task.tensors(data, np.arange(4))

    # Execute
    out = predict(model, x)

    # Assert
    assert torch.equal(out, x[:, -1])


def test_task_model_rejects_unpatchable_radio():
    radio = RadioConfig(num_bs_antennas=10, num_subcarriers=32)
    with pytest.raises(ValueError, match="patch"):
        build_task_model(get_task("los"), ChannelEncoder(model_config("tiny")), radio)


def test_lora_trains_only_adapters_and_head_and_leaves_base_untouched():
    # Prepare
    torch.manual_seed(0)
    data = make_dataset(32)
    task = get_task("beam")
    model = apply_lora(
        build_task_model(task, ChannelEncoder(ModelConfig(num_layers=2)), RADIO), LoraSettings(r=4)
    )
    base_before = {
        n: p.detach().clone()
        for n, p in model.named_parameters()
        if "lora_" not in n and "head" not in n
    }
    head_before = {
        n: p.detach().clone() for n, p in model.named_parameters() if "modules_to_save" in n
    }
    x, y = task.tensors(data, np.arange(32))

    # Execute
    train(model, task, x, y, TrainSettings(epochs=2, batch_size=8, lr=1e-2))

    # Assert: trainable = LoRA A/B + head copy only; frozen base bit-identical; the rest moved
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "modules_to_save" in n for n in trainable)
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], v) for n, v in base_before.items())
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero, so it trained
    assert any(not torch.equal(after[n], v) for n, v in head_before.items())


def test_trainable_state_round_trip_and_key_check():
    # Prepare
    torch.manual_seed(0)
    task = get_task("los")
    make = lambda: apply_lora(  # noqa: E731
        build_task_model(task, ChannelEncoder(ModelConfig(num_layers=1)), RADIO), LoraSettings(r=2)
    )
    source, target = make(), make()
    with torch.no_grad():
        for p in source.parameters():
            if p.requires_grad:
                p.add_(0.5)
    state = trainable_state(source)

    # Execute
    load_trainable_state(target, state)

    # Assert
    assert all("lora_" in k or "head" in k for k in state)
    assert all(torch.equal(trainable_state(target)[k], v) for k, v in state.items())
    with pytest.raises(ValueError, match="does not fit"):
        load_trainable_state(target, {k: v for k, v in list(state.items())[1:]})

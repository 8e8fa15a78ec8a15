"""Centralized training (``rantune train``) and ``rantune pretrain`` argument errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from rantune.channels.beams import beam_gains, dft_codebook
from rantune.channels.dataset import ChannelDataset
from rantune.config import RadioConfig
from rantune.lora import LoraSettings
from rantune.simulations.commands import pretrain as pretrain_command
from rantune.simulations.commands import train as train_command
from rantune.simulations.commands.train import (
    CentralizedSettings,
    load_encoder,
    mode_model,
    run_centralized,
)
from rantune.tasks import get_task, predict
from rantune.training import StoppingSettings, TrainSettings, encode, label_budget, train_probe

RADIO = RadioConfig(num_bs_antennas=16, num_subcarriers=32, num_beams=16, num_time_steps=6)
runner = CliRunner()
# Only the commands under test: other command modules (and their imports) stay out.
app = typer.Typer()
pretrain_command.register(app)
train_command.register(app)


@app.callback()
def _root() -> None:
    """rantune (pretrain and train only)."""


def synthetic(n: int = 60, sites: int = 2) -> ChannelDataset:
    """Random unit-norm channels with labels, ``sites`` base stations, 6-slot sequences."""
    rng = np.random.default_rng(0)
    csi = rng.standard_normal((n, 16, 32)) + 1j * rng.standard_normal((n, 16, 32))
    csi = (csi / np.linalg.norm(csi.reshape(n, -1), axis=1)[:, None, None]).astype(np.complex64)
    gains = beam_gains(csi, dft_codebook(16, 16, 0.5)).astype(np.float32)
    return ChannelDataset(
        {
            "csi": csi,
            "csi_noisy": csi,
            "csi_norm": np.ones(n, np.float32),
            "los": (np.arange(n) % 2).astype(np.int8),
            "indoor": np.zeros(n, np.int8),
            "beam_index": gains.argmax(1),
            "beam_gains": gains,
            "ut_position": np.zeros((n, 3), np.float32),
            "distance_2d": np.ones(n, np.float32),
            "speed": np.ones(n, np.float32),
            "snr_db": np.full(n, 10.0, np.float32),
            "site_index": np.arange(n) % sites,
            "csi_sequence": np.repeat(csi[:, None], 6, axis=1),
        }
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--task", "segmentation"], "unknown"),
        (["train", "--task", "los", "--mode", "finetune"], "unknown"),
        (["train", "--task", "los", "--budget", "0"], "budget"),
        (["train", "--task", "los", "--seeds", "a,b"], "seeds"),
        (["train", "--task", "los", "--lora-targets", "attn"], "lora targets"),
        (["train", "--task", "los", "--patience", "-1"], "early stopping patience"),
        (["train", "--task", "los", "--max-epochs", "0"], "early stopping max_epochs"),
        (["train", "--task", "los", "--val-share", "0.9"], "early stopping val_share"),
        (["pretrain", "--mask-ratio", "1.5"], "mask_ratio"),
        (["pretrain", "--noise-snr-db", "loud"], "noise-snr-db"),
        (["pretrain", "--noise", "pink"], "noise"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(args, message):
    # Execute
    result = runner.invoke(app, args)

    # Assert
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_checkpoint_of_another_size_is_a_clear_error():
    with pytest.raises(ValueError, match="expected"):
        load_encoder("lora", "tiny", "small")
    with pytest.raises(ValueError, match="no checkpoint"):
        load_encoder("probe", "missing-model", "tiny")


@pytest.mark.parametrize(
    ("mode", "encoder_trains", "only_adapters"),
    [
        ("scratch", True, False),
        ("full", True, False),
        ("probe", False, False),
        ("lora", False, True),
    ],
)
def test_modes_train_the_right_parameters(mode, encoder_trains, only_adapters):
    # Prepare
    torch.manual_seed(0)
    encoder = load_encoder(mode, "tiny", "tiny")

    # Execute
    model = mode_model(mode, get_task("los"), encoder, RADIO, LoraSettings())

    # Assert
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    encoder_params = [n for n in trainable if "encoder" in n and "lora_" not in n]
    assert any("head" in n for n in trainable)
    assert bool(encoder_params) == encoder_trains
    assert any("lora_" in n for n in trainable) == only_adapters


def test_label_budget_is_seeded_subset_of_the_rows():
    # Prepare
    rows = np.arange(100, 400)

    # Execute
    a, b, c = label_budget(rows, 0.1, 0), label_budget(rows, 0.1, 0), label_budget(rows, 0.1, 1)

    # Assert
    assert len(a) == 30 and np.isin(a, rows).all() and len(np.unique(a)) == 30
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(label_budget(rows, 0.001, 0)) == 2
    assert np.array_equal(label_budget(rows, 1.0, 5), rows)
    with pytest.raises(ValueError, match="budget"):
        label_budget(rows, 1.5, 0)


def test_probe_on_cached_features_matches_the_full_forward():
    # Prepare
    torch.manual_seed(0)
    data = synthetic(24)
    task = get_task("beam")
    model = mode_model("probe", task, load_encoder("probe", "tiny", "tiny"), RADIO, LoraSettings())
    x, y = task.tensors(data, np.arange(24))
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}

    # Execute
    log = train_probe(model, task, x, y, TrainSettings(epochs=1, batch_size=8, max_steps=2))
    cls, patches = encode(model.encoder, x)
    via_features = model.head(x, cls, patches)
    via_model = predict(model, x)

    # Assert
    assert log["steps"] == 2
    assert torch.allclose(via_features, via_model, atol=1e-5)
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in encoder_before.items())


@pytest.mark.parametrize("mode", ["lora", "probe"])
def test_run_centralized_reports_seeds_summary_and_baseline(mode):
    # Prepare
    data = synthetic(60)
    settings = CentralizedSettings(
        task="los",
        mode=mode,
        budget=0.5,
        seeds=(0, 1),
        stopping=StoppingSettings(patience=0, max_epochs=1),
        max_steps=1,
        batch_size=8,
    )

    # Execute
    result = run_centralized(settings, data=data, radio=RADIO)

    # Assert
    assert [r["seed"] for r in result["runs"]] == [0, 1]
    assert all(r["steps"] == 1 for r in result["runs"])
    assert set(result["summary"]["accuracy"]) == {"mean", "std"}
    assert 0.0 <= result["summary"]["accuracy"]["mean"] <= 1.0
    assert "threshold" in result["baseline"]
    assert result["num_test"] > 0 and result["runs"][0]["num_train"] < result["num_train_pool"]

"""Early stopping (:func:`rantune.training.fit`): validation rows from the labelled budget,
stop after ``patience`` epochs without improvement, the best epoch's weights restored."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rantune.config import RadioConfig
from rantune.lora import LoraSettings
from rantune.simulations.commands.train import load_encoder, mode_model
from rantune.tasks import get_task, predict
from rantune.training import (
    StoppingSettings,
    TrainSettings,
    encode,
    evaluate,
    fit,
    predict_from_features,
    validation_split,
)

TASK = get_task("los")
SETTINGS = TrainSettings(batch_size=8, lr=0.05, seed=3)


def linear_model(seed: int = 0) -> nn.Module:
    """Logits ``[B, 2]`` from ``[B, 2, 16, 32]`` inputs: the smallest model the los task takes."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 16 * 32, 2))


def separable(n: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs whose first entry carries the label (a linear model learns them)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 2, 16, 32, generator=gen)
    x[:, 0, 0, 0] += 3.0 * (2 * y - 1)
    return x, y


def test_validation_rows_are_a_seeded_share_of_the_labelled_rows():
    # Prepare
    rows = np.arange(100, 160)
    stopping = StoppingSettings(val_share=0.2, min_val_rows=4)

    # Execute
    fit_rows, val_rows = validation_split(rows, stopping, seed=0)
    again = validation_split(rows, stopping, seed=0)
    other = validation_split(rows, stopping, seed=1)
    few_fit, few_val = validation_split(rows[:10], stopping, seed=0)
    tiny_fit, tiny_val = validation_split(rows[:7], stopping, seed=0)
    off_fit, off_val = validation_split(rows, StoppingSettings(patience=0), seed=0)
    none_fit, none_val = validation_split(rows, StoppingSettings(val_share=0.0), seed=0)

    # Assert: disjoint, together the labelled rows, seeded; small budgets keep a few
    # validation rows; below 2 x min_val_rows (or with patience or val_share 0) every row trains
    assert len(val_rows) == 12 and np.intersect1d(fit_rows, val_rows).size == 0
    assert np.array_equal(np.sort(np.concatenate([fit_rows, val_rows])), rows)
    assert np.array_equal(val_rows, again[1]) and not np.array_equal(val_rows, other[1])
    assert len(few_val) == 4 and len(few_fit) == 6
    assert len(tiny_val) == 0 and np.array_equal(tiny_fit, rows[:7])
    assert len(off_val) == 0 and np.array_equal(off_fit, rows)
    assert len(none_val) == 0 and np.array_equal(none_fit, rows)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("patience", -1, "patience"), ("max_epochs", 0, "max_epochs"), ("val_share", 0.6, "val_share")],
)
def test_bad_stopping_settings_name_the_setting(field, value, message):
    with pytest.raises(ValueError, match=f"early stopping {message}"):
        StoppingSettings(**{field: value})


def test_fit_stops_when_validation_gets_worse_and_restores_the_best_epoch():
    # Prepare: the validation rows carry the opposite labels of the training rows, so
    # fitting the training rows makes the validation metric worse after the first epochs
    x, y = separable(48)
    val = (x[:16], 1 - y[:16])
    model = linear_model()
    stopping = StoppingSettings(patience=3, max_epochs=40)

    # Execute
    log = fit(model, TASK, (x, y), val, SETTINGS, stopping)

    # Assert: stopped patience epochs after the best, well before the cap, with the
    # best epoch's weights back (their validation AUC is the recorded best)
    assert log["monitor"] == "val:auc" and log["stopped_early"]
    assert log["epochs"] == log["best_epoch"] + 3 < 40
    assert len(log["history"]) == log["epochs"]
    assert log["best"] >= max(log["history"])
    if log["best_epoch"] > 0:
        assert log["best"] == log["history"][log["best_epoch"] - 1]
    assert evaluate(model, TASK, *val)["auc"] == pytest.approx(log["best"], abs=1e-12)


def test_fit_trains_to_the_cap_while_validation_improves_and_is_reproducible():
    # Prepare: validation rows from the same (learnable) distribution
    x, y = separable(48)
    val = separable(16, seed=1)
    stopping = StoppingSettings(patience=20, max_epochs=6)

    # Execute
    model_a, model_b = linear_model(), linear_model()
    log_a = fit(model_a, TASK, (x, y), val, SETTINGS, stopping)
    log_b = fit(model_b, TASK, (x, y), val, SETTINGS, stopping)

    # Assert: the cap bound; same seed, same history and weights
    assert log_a["epochs"] == 6 and not log_a["stopped_early"]
    assert log_a["steps"] == 6 * 6
    assert log_a["history"] == log_b["history"]
    assert all(torch.equal(a, b) for a, b in zip(model_a.parameters(), model_b.parameters(), strict=True))


def test_fit_falls_back_to_the_validation_or_training_loss():
    # Prepare: one class among the validation rows (AUC undefined); no validation rows
    x, y = separable(48)
    one_class = (x[:8], torch.ones(8, dtype=torch.int64))
    stopping = StoppingSettings(patience=2, max_epochs=5)

    # Execute
    by_val_loss = fit(linear_model(), TASK, (x, y), one_class, SETTINGS, stopping)
    model = linear_model()
    by_train_loss = fit(model, TASK, (x, y), None, SETTINGS, stopping)

    # Assert
    assert by_val_loss["monitor"] == "val:loss"
    assert by_val_loss["best"] <= min(by_val_loss["history"])
    assert by_train_loss["monitor"] == "train:loss"
    assert by_train_loss["best"] == min(by_train_loss["history"])


def test_probe_fit_on_cached_features_restores_the_best_head():
    # Prepare: the shipped encoder frozen, its features computed once
    radio = RadioConfig(num_bs_antennas=16, num_subcarriers=32, num_beams=16, num_time_steps=6)
    torch.manual_seed(0)
    model = mode_model("probe", TASK, load_encoder("probe", "tiny", "tiny"), radio, LoraSettings())
    x, y = separable(32)
    val = (x[:8], 1 - y[:8])
    features = (encode(model.encoder, x), encode(model.encoder, val[0]))
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}

    # Execute
    log = fit(model, TASK, (x, y), val, SETTINGS, StoppingSettings(patience=2, max_epochs=8), features)

    # Assert: only the head moved; its restored state scores the recorded best, and the
    # full forward agrees with the cached-feature one
    output = predict_from_features(model, val[0], features[1])
    assert TASK.metrics(output, val[1])["auc"] == pytest.approx(log["best"], abs=1e-12)
    assert torch.allclose(predict(model, val[0]), output, atol=1e-5)
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in encoder_before.items())


def test_the_initial_state_is_kept_when_training_only_hurts():
    # Prepare: validation rows with the opposite labels; the initial model has the
    # validation rows' labels (its bias favours class 1, as do they)
    x, y = separable(48)
    val = (x[:16], torch.ones(16, dtype=torch.int64))
    model = linear_model()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([-1.0, 1.0]))
    before = [p.detach().clone() for p in model.parameters()]

    # Execute: the validation loss (one class: AUC undefined) only gets worse
    log = fit(model, TASK, (x, y), val, SETTINGS, StoppingSettings(patience=2, max_epochs=10))

    # Assert: epoch 0 wins, training stops after patience epochs, the start is restored
    assert log["best_epoch"] == 0 and log["epochs"] == 2
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))

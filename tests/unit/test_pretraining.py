"""Masked channel modeling: masks, replacement, noise, loss, schedule, resumable runs."""

from __future__ import annotations

import json

import pytest
import torch

from rantune.model import load_checkpoint, model_config
from rantune.model.checkpoint import SHIPPED_DIR
from rantune.model.encoder import ChannelEncoder
from rantune.model.masking import add_awgn, lwm_replacement, masked_nmse, random_mask
from rantune.pretrain_objective import evaluate_objective
from rantune.pretraining import (
    MaskedChannelModel,
    PretrainData,
    PretrainSettings,
    evaluate_masked_nmse,
    learning_rate,
    load_masked_model,
    pretrain,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on a busy 2-core machine more threads only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def synthetic_data(n_train: int = 48, n_held: int = 16) -> PretrainData:
    """Unit-norm random CSI ``[N, 2, 16, 32]`` split into train and held-out sites."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_held, 2, 16, 32, generator=g)
    x = x / x.flatten(1).norm(dim=1)[:, None, None, None]
    return PretrainData(
        train=x[:n_train],
        train_noisy=None,
        held_out=x[n_train:],
        train_sites=["a", "b"],
        held_out_sites=["c"],
        config_hash="synthetic",
        preset_name="synthetic",
        num_beams=16,
    )


def small_settings(**overrides) -> PretrainSettings:
    values = dict(steps=6, batch_size=8, warmup_steps=2, checkpoint_every=3, lr=1e-3)
    values.update(overrides)
    return PretrainSettings(**values)


# ---------------------------------------------------------------- building blocks


def test_random_mask_hides_exactly_the_ratio_per_sample():
    # Execute
    mask = random_mask(64, 32, 0.4, torch.Generator().manual_seed(0))

    # Assert: round(0.4 * 32) = 13 per row, and rows differ
    assert mask.dtype == torch.bool and mask.shape == (64, 32)
    assert (mask.sum(1) == 13).all()
    assert len({tuple(row.tolist()) for row in mask}) > 1


def test_masked_nmse_scores_only_masked_patches():
    # Prepare
    target = torch.randn(2, 4, 8)
    mask = torch.tensor([[True, False, False, False], [False, True, True, False]])
    pred = target.clone()
    pred[~mask] += 100.0  # errors outside the mask must not count

    # Execute / Assert
    assert torch.allclose(masked_nmse(pred, target, mask), torch.zeros(2))
    assert torch.allclose(masked_nmse(torch.zeros_like(target), target, mask), torch.ones(2))


def test_lwm_replacement_keeps_unchosen_patches_and_splits_80_10_10():
    # Prepare
    g = torch.Generator().manual_seed(0)
    patches = torch.randn(200, 32, 8, generator=g)
    chosen = random_mask(200, 32, 0.5, g)

    # Execute
    replaced, token_mask = lwm_replacement(patches, chosen, g)

    # Assert
    assert torch.equal(replaced[~chosen], patches[~chosen])
    assert not (token_mask & ~chosen).any()
    n = chosen.sum().item()
    changed = (replaced != patches).any(-1) & chosen
    unchanged = chosen & ~token_mask & ~changed
    assert token_mask.sum().item() / n == pytest.approx(0.8, abs=0.03)
    assert changed.sum().item() / n == pytest.approx(0.1, abs=0.03)
    assert unchanged.sum().item() / n == pytest.approx(0.1, abs=0.03)


def test_add_awgn_hits_the_requested_snr_and_respects_probability():
    # Prepare
    x = torch.randn(400, 2, 16, 32)
    x = x / x.flatten(1).norm(dim=1)[:, None, None, None]
    g = torch.Generator().manual_seed(0)

    # Execute
    noisy = add_awgn(x, 1.0, (10.0, 10.0), g)
    untouched = add_awgn(x, 0.0, (10.0, 10.0), g)

    # Assert: noise power 0.1 of the unit signal power per sample
    noise_power = (noisy - x).pow(2).flatten(1).sum(1).mean().item()
    assert noise_power == pytest.approx(0.1, rel=0.05)
    assert torch.equal(untouched, x)


def test_learning_rate_warms_up_then_decays_to_the_floor():
    s = PretrainSettings(steps=100, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    assert learning_rate(0, s) == pytest.approx(1e-4)
    assert learning_rate(9, s) == pytest.approx(1e-3)
    assert learning_rate(55, s) == pytest.approx(0.55e-3, rel=0.01)
    assert learning_rate(100, s) == pytest.approx(1e-4)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("mask_ratio", 1.0, "mask_ratio"),
        ("noise", "pink", "noise"),
        ("size", "huge", "unknown"),
        ("steps", 0, "steps"),
        ("held_out_sites", 0, "held_out_sites"),
    ],
)
def test_invalid_settings_raise(field, value, match):
    with pytest.raises(ValueError, match=match):
        PretrainSettings(**{field: value})


def test_reconstruction_output_independent_of_masked_content():
    # Prepare
    torch.manual_seed(0)
    model = MaskedChannelModel(ChannelEncoder(model_config("tiny"))).eval()
    x = synthetic_data().train[:4]
    mask = random_mask(4, 32, 0.4, torch.Generator().manual_seed(1))
    patches = model.encoder.patchify(x)
    patches[mask] = 5.0
    x_changed = model.encoder.unpatchify(patches, 16, 32)

    # Execute
    with torch.no_grad():
        a, b = model(x, mask), model(x_changed, mask)

    # Assert
    assert torch.equal(a, b)


# ---------------------------------------------------------------- the loop


def test_pretrain_writes_checkpoint_card_and_head(tmp_path):
    # Prepare
    data = synthetic_data()

    # Execute
    card = pretrain(
        small_settings(),
        tmp_path / "run",
        tmp_path / "out",
        "t",
        data=data,
        progress=False,
        log=lambda *a: None,
    )

    # Assert
    encoder, saved = load_checkpoint(
        tmp_path / "out" / "t.safetensors", expect=model_config("tiny")
    )
    assert saved == card == json.loads((tmp_path / "out" / "t.json").read_text())
    assert card["results"]["steps"] == 6
    assert card["data"]["held_out_sites"] == ["c"]
    assert card["reproduce"].startswith("rantune pretrain --preset pretrain --size tiny --steps 6")
    assert card["results"]["throughput_samples_per_s"] > 0
    by_variant = card["results"]["held_out_nmse_db_by_variant"]
    assert set(by_variant) == {
        "patches", "antennas-2", "antennas-4", "antennas-8", "pilots-2", "pilots-4",
        "pilots-8", "rsrp-2", "rsrp-4", "denoise",
    }
    assert "--weight-rsrp 0.2" in card["reproduce"] and "--init none" in card["reproduce"]
    assert card["data"]["samples_seen"] == 6 * 8 and card["data"]["num_beams"] == 16
    assert set(card["history"][-1]["by_variant"]) <= set(by_variant)
    model = load_masked_model(tmp_path / "out" / "t.safetensors")
    nmse = evaluate_masked_nmse(model, data.held_out, 0.4, seed=12345)
    assert nmse == pytest.approx(card["results"]["masked_nmse_db_held_out_sites"], abs=1e-3)


@pytest.mark.parametrize(
    "objective",
    [
        dict(replacement=True),  # the default mix, LWM replacement on the patches kind
        dict(weight_patches=0.0, weight_denoise=0.4, noise_probability=0.3, init="tiny"),
    ],
    ids=["default-mix", "observations-only-from-tiny"],
)
def test_resumed_run_matches_an_uninterrupted_one(tmp_path, objective):
    # Prepare
    data = synthetic_data()
    settings = small_settings(**objective)
    quiet = dict(data=data, progress=False, log=lambda *a: None)

    # Execute: one straight run; one stopped after 4 steps and resumed
    pretrain(settings, tmp_path / "a", tmp_path / "a", "m", **quiet)
    stopped = pretrain(settings, tmp_path / "b", tmp_path / "b", "m", stop_after=4, **quiet)
    state = torch.load(tmp_path / "b" / "state.pt", weights_only=False)
    pretrain(settings, tmp_path / "b", tmp_path / "b", "m", **quiet)

    # Assert
    assert stopped is None and state["step"] == 4
    a, _ = load_checkpoint(tmp_path / "a" / "m.safetensors")
    b, _ = load_checkpoint(tmp_path / "b" / "m.safetensors")
    for key, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[key], value), key
    cards = [json.loads((tmp_path / d / "m.json").read_text()) for d in "ab"]
    assert cards[0]["history"] == cards[1]["history"]
    if "init" in objective:  # the starting checkpoint is scored on the same rows
        start = cards[0]["results"]["init_checkpoint"]
        assert start["name"] == "tiny" and set(start["held_out_nmse_db_by_variant"]) == set(
            cards[0]["results"]["held_out_nmse_db_by_variant"]
        )


def test_resume_with_other_settings_raises(tmp_path):
    # Prepare
    data = synthetic_data()
    quiet = dict(data=data, progress=False, log=lambda *a: None)
    pretrain(small_settings(), tmp_path, tmp_path, "m", stop_after=3, **quiet)

    # Execute / Assert
    with pytest.raises(ValueError, match="other settings"):
        pretrain(small_settings(mask_ratio=0.6), tmp_path, tmp_path, "m", **quiet)


def plane_waves(n: int = 64) -> torch.Tensor:
    """Single-path (LoS-like) channels: a plane wave over antennas times one delay tap."""
    g = torch.Generator().manual_seed(0)
    sin_theta = torch.rand(n, 1, 1, generator=g) * 2 - 1
    delay = torch.rand(n, 1, 1, generator=g) * 0.2  # in units of 1 / bandwidth
    a, s = torch.arange(16)[None, :, None], torch.arange(32)[None, None, :]
    phase = torch.pi * a * sin_theta - 2 * torch.pi * s * delay
    csi = torch.polar(torch.ones_like(phase), phase) / 512**0.5
    return torch.stack([csi.real, csi.imag], dim=1)  # [n, 2, 16, 32]


@pytest.mark.parametrize("name", ["tiny", "tiny-v2"])
def test_shipped_checkpoint_inpaints_structured_channels(name):
    # Prepare
    torch.manual_seed(0)
    pretrained = load_masked_model(name)
    untrained = MaskedChannelModel(ChannelEncoder(model_config("tiny")))
    x = plane_waves()

    # Execute
    nmse = evaluate_masked_nmse(pretrained, x, 0.4, seed=0)
    baseline = evaluate_masked_nmse(untrained, x, 0.4, seed=0)

    # Assert: pretraining learned to fill hidden patches of a smooth channel
    assert nmse < -5.0
    assert nmse < baseline - 5.0


def test_tiny_v2_fills_pilot_gaps_and_denoises_where_tiny_cannot():
    # Prepare: noisy plane waves (SNR -5..25 dB) seen as the tasks see them
    x = plane_waves()
    objective = PretrainSettings().objective((16, 32), num_beams=16)

    # Execute
    new = evaluate_objective(load_masked_model("tiny-v2"), objective, x, seed=0)
    old = evaluate_objective(load_masked_model("tiny"), objective, x, seed=0)

    # Assert: the observation kinds it was trained on (tiny never saw zero-filled inputs)
    for label, bound in (("pilots-2", -6.0), ("pilots-4", -4.0), ("denoise", -6.0)):
        assert new[label] < bound, (label, new[label])
        assert new[label] < old[label] - 5.0, (label, new[label], old[label])


def test_tiny_v2_card_names_its_objective_data_and_reproduce_command():
    # Execute
    _, card = load_checkpoint(SHIPPED_DIR / "tiny-v2.safetensors", expect=model_config("tiny"))

    # Assert
    assert card["results"]["steps"] == card["pretraining"]["steps"]
    assert card["reproduce"].startswith("rantune pretrain --preset pretrain --size tiny")
    assert "--init tiny" in card["reproduce"] and "--name tiny-v2" in card["reproduce"]
    scenarios = {card["data"]["site_scenarios"][s] for s in card["data"]["train_sites"]}
    assert "rt" in scenarios  # it saw ray-traced stations
    assert set(card["data"]["held_out_sites"]).isdisjoint(card["data"]["train_sites"])
    variants = card["results"]["held_out_nmse_db_by_variant"]
    assert set(variants) == set(card["results"]["init_checkpoint"]["held_out_nmse_db_by_variant"])

"""Pretraining objective: each kind hides exactly what the tasks' observation hides."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rantune.model import model_config
from rantune.model.encoder import ChannelEncoder, real_to_csi
from rantune.model.masking import masked_nmse, step_generator
from rantune.pretrain_objective import Objective
from rantune.pretraining import PretrainSettings, initial_model
from rantune.simulations.commands.pretrain import parse_ints
from rantune.tasks.observation import BeamObservation, sample_keys
from rantune.tasks.settings import TaskSettings

SHAPE = (16, 32)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on a busy 2-core machine more threads only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def encoder() -> ChannelEncoder:
    torch.manual_seed(0)
    return ChannelEncoder(model_config("tiny"))


def unit_csi(n: int = 12, seed: int = 0) -> torch.Tensor:
    """Unit-norm random CSI ``[n, 2, 16, 32]`` with no zero entry."""
    x = torch.randn(n, 2, *SHAPE, generator=torch.Generator().manual_seed(seed))
    return x / x.flatten(1).norm(dim=1)[:, None, None, None]


def objective(**overrides) -> Objective:
    return PretrainSettings(**overrides).objective(SHAPE, num_beams=16)


def forced(obj: Objective, label: str, x: torch.Tensor, encoder, noise: float = 0.0, seed=0):
    """A batch of ``x`` with every row given the variant ``label``."""
    index = torch.full((len(x),), obj.labels.index(label), dtype=torch.int64)
    g = torch.Generator().manual_seed(seed)
    return obj.batch(x, g, encoder, variant=index, noise_probability=noise)


def task_mask(**options) -> np.ndarray:
    return BeamObservation(TaskSettings(observation="csi", **options), SHAPE, 16).mask


# ---------------------------------------------------------------- what each kind hides


@pytest.mark.parametrize(
    ("label", "options"),
    [
        ("antennas-4", dict(antennas=4, pilot_spacing=1)),
        ("antennas-8", dict(antennas=8, pilot_spacing=1)),
        ("pilots-4", dict(antennas=0, pilot_spacing=4)),
        ("pilots-2", dict(antennas=0, pilot_spacing=2)),
    ],
)
def test_observation_kinds_hide_exactly_the_tasks_unobserved_entries(encoder, label, options):
    # Prepare
    x = unit_csi()
    mask = torch.as_tensor(task_mask(**options))  # [A, S] observed entries of the task

    # Execute
    batch = forced(objective(), label, x, encoder, noise=1.0)

    # Assert: scored = the task's unobserved entries, on both real and imaginary parts
    assert torch.equal(batch.scored, (~mask).expand_as(batch.scored))
    assert torch.all(batch.inputs[:, :, ~mask] == 0)  # zeros, as the ObservationGate feeds
    assert torch.all(batch.inputs[:, :, mask] != 0)
    assert not batch.token_mask.any()  # the observation kinds never use the mask token


def test_antenna_mask_hides_other_antennas_and_pilot_mask_non_pilot_subcarriers(encoder):
    # Execute
    ant = forced(objective(), "antennas-4", unit_csi(), encoder).scored[0, 0]  # [A, S]
    pil = forced(objective(), "pilots-8", unit_csi(), encoder).scored[0, 0]

    # Assert: spelled out by index
    assert ant[4:].all() and not ant[:4].any()
    assert not pil[:, ::8].any() and pil[:, 1::8].all() and pil[:, 7::8].all()
    assert pil.sum() == 16 * 28


@pytest.mark.parametrize("label", ["antennas-2", "pilots-4", "pilots-8"])
def test_observation_inputs_are_what_the_task_gate_feeds(encoder, label):
    # Prepare: clean inputs, so the task gate sees the same source
    x = unit_csi()
    obj = objective()
    gate = obj.gates[obj.labels.index(label)]

    # Execute
    batch = forced(obj, label, x, encoder, noise=0.0)

    # Assert
    assert torch.allclose(batch.inputs, gate(x), atol=1e-7)


def test_rsrp_inputs_equal_the_tasks_model_input(encoder):
    # Prepare: no measurement error so both implementations see the same gains
    x = unit_csi()
    obj = objective(rsrp_error_db=0.0)
    csi = real_to_csi(x).numpy()
    task = TaskSettings(observation="rsrp", set_b_spacing=4, rsrp_error_db=0.0)
    expected = BeamObservation(task, SHAPE, 16).model_input(csi, sample_keys(csi))

    # Execute
    batch = forced(obj, "rsrp-4", x, encoder, noise=0.0)

    # Assert: the whole grid is scored (no entry is observed as such)
    assert torch.allclose(batch.inputs, expected, atol=1e-5)
    assert batch.scored.all() and not batch.token_mask.any()


def test_target_is_the_clean_channel_in_the_inputs_frame(encoder):
    # Prepare
    x = unit_csi()
    observed = torch.as_tensor(task_mask(antennas=4, pilot_spacing=1))

    # Execute
    batch = forced(objective(), "antennas-4", x, encoder, noise=0.0)

    # Assert: observed entries of the target equal the (rescaled) input; hidden ones
    # are the clean channel times the same factor
    assert torch.allclose(batch.target[:, :, observed], batch.inputs[:, :, observed])
    factor = batch.target.flatten(1).norm(dim=1)
    assert torch.allclose(batch.target, x * factor[:, None, None, None], atol=1e-6)


def test_hidden_entries_never_leak_into_the_inputs(encoder):
    # Prepare: two channels that differ only on the hidden antennas
    x = unit_csi()
    other = x.clone()
    other[:, :, 4:] += 1.0

    # Execute
    a = forced(objective(), "antennas-4", x, encoder, noise=1.0, seed=3)
    b = forced(objective(), "antennas-4", other, encoder, noise=1.0, seed=3)

    # Assert: the same input up to the gate's norm (the rescaling uses observed entries only)
    assert torch.allclose(a.inputs, b.inputs, atol=1e-6)


def test_loss_scores_only_the_hidden_entries(encoder):
    # Prepare: a prediction right on hidden pilot entries, wrong on the observed ones
    batch = forced(objective(), "pilots-4", unit_csi(), encoder)
    target = encoder.patchify(batch.target)
    scored = encoder.patchify(batch.scored.float())
    pred = torch.where(scored.bool(), target, target + 10.0)

    # Execute / Assert
    assert torch.allclose(masked_nmse(pred, target, scored), torch.zeros(len(target)))
    assert torch.allclose(masked_nmse(torch.zeros_like(target), target, scored), torch.ones(12))


def test_patches_kind_uses_the_mask_token_on_clean_inputs(encoder):
    # Prepare
    x = unit_csi()

    # Execute
    batch = forced(objective(), "patches", x, encoder, noise=0.0)

    # Assert: 40% of 32 patches = 13 per row, scored exactly on them
    assert (batch.token_mask.sum(1) == 13).all()
    hidden = batch.token_mask[..., None].expand(-1, -1, encoder.config.patch_dim)
    assert torch.equal(encoder.patchify(batch.scored.float()).bool(), hidden)
    assert torch.equal(batch.inputs, x) and torch.equal(batch.target, x)


def test_denoise_kind_is_always_noisy_and_scores_every_entry(encoder):
    # Execute: even with the noise share at 0, denoising rows are noisy
    x = unit_csi()
    batch = forced(objective(), "denoise", x, encoder, noise=0.0)

    # Assert
    assert batch.scored.all()
    factor = batch.target.flatten(1).norm(dim=1)
    assert not torch.allclose(batch.inputs, x * factor[:, None, None, None], atol=1e-3)


# ---------------------------------------------------------------- mixing and determinism


def test_variants_follow_the_weights(encoder):
    # Prepare
    obj = objective(weight_patches=0.5, weight_antennas=0.0, weight_pilots=0.0,
                    weight_rsrp=0.5, weight_denoise=0.0)

    # Execute
    drawn = obj.draw_variants(4000, torch.Generator().manual_seed(0))
    kinds = [obj.variants[int(i)].kind for i in drawn]

    # Assert: zero-weight kinds are never drawn; the others near their share
    assert set(kinds) == {"patches", "rsrp"}
    assert kinds.count("patches") / 4000 == pytest.approx(0.5, abs=0.03)


def test_a_batch_is_a_function_of_its_generator(encoder):
    # Prepare
    x = unit_csi(64)
    obj = objective(replacement=True)

    # Execute
    a = obj.batch(x, step_generator(0, 7, 2), encoder)
    b = obj.batch(x, step_generator(0, 7, 2), encoder)
    c = obj.batch(x, step_generator(0, 8, 2), encoder)

    # Assert
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.variant, b.variant)
    assert not torch.equal(a.variant, c.variant)


# ---------------------------------------------------------------- settings and init


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(weight_rsrp=-1.0), "weights"),
        (dict(weight_patches=0, weight_antennas=0, weight_pilots=0, weight_rsrp=0,
              weight_denoise=0), "weights"),
        (dict(noise="none"), "denoise"),
        (dict(mask_antennas=()), "mask_antennas"),
        (dict(pilot_spacings=(0,)), "pilot_spacings"),
    ],
)
def test_invalid_objective_settings_raise(overrides, match):
    with pytest.raises(ValueError, match=match):
        PretrainSettings(**overrides)


def test_options_that_do_not_fit_the_data_fail_with_the_task_message():
    with pytest.raises(ValueError, match="antennas=32"):
        objective(mask_antennas=(32,))


def test_init_continues_from_a_shipped_checkpoint():
    # Execute
    torch.manual_seed(0)
    model = initial_model(PretrainSettings(init="tiny"))
    fresh = initial_model(PretrainSettings())

    # Assert
    from rantune.model.masking import load_masked_model

    shipped = load_masked_model("tiny").state_dict()
    assert all(torch.equal(v, shipped[k]) for k, v in model.state_dict().items())
    assert not torch.equal(fresh.encoder.patch_embed.weight, model.encoder.patch_embed.weight)


def test_cli_parses_integer_lists_and_rejects_others():
    assert parse_ints("2,4,8", "--mask-antennas") == (2, 4, 8)
    with pytest.raises(ValueError, match="--pilot-spacings"):
        parse_ints("2,x", "--pilot-spacings")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--mask-antennas", "2,x"], "--mask-antennas"),
        (["--weight-denoise", "0.5", "--noise", "none"], "weight_denoise"),
    ],
)
def test_cli_rejects_bad_objective_options_in_one_line(tmp_path, args, match):
    # Prepare
    from typer.testing import CliRunner

    from rantune.simulations.cli import app

    # Execute: rejected before any data is loaded
    result = CliRunner().invoke(app, ["pretrain", "--out", str(tmp_path), *args])

    # Assert
    assert result.exit_code == 2
    assert match in result.output and "Traceback" not in result.output

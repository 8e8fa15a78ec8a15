"""Channel encoder: shapes per geometry, masking without leaks, checkpoints, offline loading."""

from __future__ import annotations

import json
import socket

import pytest
import torch

from rantune.model import (
    MODEL_SIZES,
    ChannelEncoder,
    ModelConfig,
    csi_to_real,
    load_checkpoint,
    load_pretrained,
    model_config,
    real_to_csi,
    save_checkpoint,
)
from rantune.presets import builtin_presets, load_preset

# (antennas, subcarriers): every built-in preset's geometry plus the LWM 1.1 range.
PRESET_SHAPES = sorted(
    {
        (load_preset(n).radio.num_bs_antennas, load_preset(n).radio.num_subcarriers)
        for n in builtin_presets()
    }
)
SHAPES = sorted(set(PRESET_SHAPES) | {(8, 32), (16, 32), (32, 32), (32, 64), (64, 64), (128, 64)})


@pytest.fixture(scope="module")
def tiny() -> ChannelEncoder:
    torch.manual_seed(0)
    return ChannelEncoder(model_config("tiny")).eval()


def test_named_sizes_have_the_documented_parameter_counts():
    # Prepare
    counts = {
        name: sum(p.numel() for p in ChannelEncoder(cfg).parameters())
        for name, cfg in MODEL_SIZES.items()
    }

    # Assert
    assert 0.3e6 <= counts["tiny"] <= 0.6e6
    assert 2.0e6 <= counts["small"] <= 3.0e6


@pytest.mark.parametrize(("antennas", "subcarriers"), SHAPES)
def test_encoder_shapes_for_every_geometry(tiny, antennas, subcarriers):
    # Prepare
    x = torch.randn(3, 2, antennas, subcarriers) / (antennas * subcarriers) ** 0.5
    num_patches = (antennas // 4) * (subcarriers // 4)

    # Execute
    with torch.no_grad():
        cls, patches = tiny(x)

    # Assert
    assert cls.shape == (3, 64)
    assert patches.shape == (3, num_patches, 64)
    assert torch.isfinite(patches).all()


def test_preset_geometries_are_covered():
    # Assert: the default/pretrain geometry is among the tested shapes
    assert (16, 32) in PRESET_SHAPES


@pytest.mark.parametrize(
    ("antennas", "subcarriers"), [(15, 32), (16, 30), (2, 32), (256, 32), (16, 256)]
)
def test_unpatchable_shape_raises_value_error(tiny, antennas, subcarriers):
    # Prepare
    x = torch.randn(1, 2, antennas, subcarriers)

    # Execute / Assert
    with pytest.raises(ValueError, match="patch|maximum"):
        tiny(x)


def test_complex_input_or_missing_channel_axis_raises(tiny):
    with pytest.raises(ValueError, match="csi_to_real"):
        tiny(torch.randn(2, 16, 32))


def test_patchify_round_trip_and_real_imag_share_a_patch(tiny):
    # Prepare: one complex entry at (antenna 5, subcarrier 9)
    csi = torch.zeros(1, 16, 32, dtype=torch.complex64)
    csi[0, 5, 9] = 1.0 + 2.0j
    x = csi_to_real(csi)

    # Execute
    patches = tiny.patchify(x)
    back = tiny.unpatchify(patches, 16, 32)

    # Assert: exact inverse; both parts land in the single patch (row 1, col 2)
    assert torch.equal(back, x)
    assert torch.equal(real_to_csi(back), csi)
    nonzero_patches = patches.abs().sum(-1).nonzero()[:, 1].tolist()
    assert nonzero_patches == [1 * 8 + 2]
    assert sorted(patches[0, 10][patches[0, 10] != 0].tolist()) == [1.0, 2.0]


def test_masked_patch_content_never_leaks(tiny):
    # Prepare: two inputs that differ only inside masked patches (real and imaginary)
    torch.manual_seed(1)
    x = torch.randn(2, 2, 16, 32) / 512**0.5
    mask = torch.zeros(2, 32, dtype=torch.bool)
    mask[0, [0, 5, 17]] = True
    mask[1, [3, 31]] = True
    patches = tiny.patchify(x)
    other = patches.clone()
    other[mask] = torch.randn(int(mask.sum()), patches.shape[-1]) * 10.0
    x_other = tiny.unpatchify(other, 16, 32)

    # Execute
    with torch.no_grad():
        cls_a, tokens_a = tiny(x, mask)
        cls_b, tokens_b = tiny(x_other, mask)
        cls_c, _ = tiny(x_other)  # same change, nothing masked

    # Assert: identical outputs everywhere when masked; the change is visible otherwise
    assert not torch.equal(x, x_other)
    assert torch.equal(cls_a, cls_b)
    assert torch.equal(tokens_a, tokens_b)
    assert not torch.allclose(cls_a, cls_c, atol=1e-4)


def test_mask_of_wrong_shape_raises(tiny):
    with pytest.raises(ValueError, match="mask"):
        tiny(torch.randn(2, 2, 16, 32), torch.zeros(2, 31, dtype=torch.bool))


def test_frobenius_input_norm_is_a_fixed_sqrt_as_scale():
    # Prepare: same weights, one model scaling internally, one fed pre-scaled input
    torch.manual_seed(0)
    scaled = ChannelEncoder(ModelConfig(num_layers=1)).eval()
    raw = ChannelEncoder(ModelConfig(num_layers=1, input_norm="none")).eval()
    raw.load_state_dict(scaled.state_dict())
    x = torch.randn(2, 2, 8, 32) / 256**0.5

    # Execute
    with torch.no_grad():
        a = scaled(x)[0]
        b = raw(x * 256**0.5)[0]

    # Assert
    assert scaled.input_scale(8, 32) == pytest.approx(16.0)
    assert torch.allclose(a, b, atol=1e-5)


def test_invalid_model_config_raises():
    with pytest.raises(ValueError, match="input_norm"):
        ModelConfig(input_norm="batch")
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(d_model=30, num_heads=4)
    with pytest.raises(ValueError, match="unknown"):
        model_config("huge")


def test_checkpoint_round_trip_is_exact(tmp_path, tiny):
    # Prepare
    x = torch.randn(2, 2, 16, 32) / 512**0.5
    path = tmp_path / "enc.safetensors"

    # Execute
    save_checkpoint(tiny, path, {"note": "test"})
    loaded, card = load_checkpoint(path, expect=model_config("tiny"))

    # Assert
    assert card["note"] == "test" and card["model_config"] == tiny.config.to_dict()
    for key, value in tiny.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x)[1], tiny(x)[1])


def test_checkpoint_config_mismatch_raises(tmp_path, tiny):
    # Prepare
    path = tmp_path / "enc.safetensors"
    save_checkpoint(tiny, path)

    # Execute / Assert: expected another size
    with pytest.raises(ValueError, match="expected"):
        load_checkpoint(path, expect=model_config("small"))

    # Execute / Assert: the card claims another config than the weights hold
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["model_config"]["ffn_dim"] = 128
    card_path.write_text(json.dumps(card))
    with pytest.raises(ValueError, match="does not fit"):
        load_checkpoint(path)


def test_corrupted_checkpoint_raises(tmp_path, tiny):
    path = tmp_path / "enc.safetensors"
    save_checkpoint(tiny, path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_checkpoint(path)


def test_load_pretrained_works_without_network(monkeypatch):
    # Prepare: any attempt to open a socket fails the test
    def no_network(*args, **kwargs):
        raise AssertionError("load_pretrained tried to use the network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    x = torch.randn(2, 2, 16, 32) / 512**0.5

    # Execute
    encoder = load_pretrained("tiny")
    with torch.no_grad():
        cls, _ = encoder(x)

    # Assert
    assert encoder.config == model_config("tiny")
    assert not encoder.training
    assert torch.isfinite(cls).all()


def test_shipped_checkpoint_is_small_and_documented():
    # Prepare
    from rantune.model.checkpoint import SHIPPED_DIR, shipped_card

    # Execute
    card = shipped_card("tiny")
    size = (SHIPPED_DIR / "tiny.safetensors").stat().st_size

    # Assert
    assert size < 5 * 2**20
    assert card["data"]["preset"] == "pretrain"
    assert card["results"]["masked_nmse_db_held_out_sites"] < -3.0
    assert card["reproduce"].startswith("rantune pretrain")


def test_unknown_shipped_name_raises():
    with pytest.raises(ValueError, match="no shipped checkpoint"):
        load_pretrained("enormous")

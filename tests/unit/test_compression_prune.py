"""Structured pruning really shrinks matrices; magnitude pruning; distillation trains a student."""

from __future__ import annotations

import pytest
import torch
from compression_runs import smoke_onnx

from rantune.compression.distill import (
    DistillSettings,
    build_student,
    distill,
    student_config,
    teacher_layers,
)
from rantune.compression.prune import (
    PruneSettings,
    importance_scores,
    magnitude_prune,
    slice_ffn,
    slice_heads,
    structured_prune,
)
from rantune.federated import splits
from rantune.lora import count_parameters


@pytest.fixture(scope="module")
def los(tmp_path_factory):
    return smoke_onnx(tmp_path_factory.getbasetemp() / "compression", "los")


def test_slicing_heads_keeps_the_kept_heads_exact(los):
    # Prepare: one block; zero the o_proj columns of heads 1 and 3 so that removing
    # them must not change the block's attention output
    import copy

    attn = copy.deepcopy(los["run"].model.encoder.blocks[0].attn)
    hd = attn.head_dim
    with torch.no_grad():
        for head in (1, 3):
            attn.o_proj.weight[:, head * hd : (head + 1) * hd] = 0
    x = torch.randn(3, 9, attn.q_proj.in_features)
    before = attn(x)
    # Execute
    slice_heads(attn, torch.tensor([2, 0]))
    # Assert
    assert attn.num_heads == 2
    assert attn.q_proj.weight.shape == (2 * hd, attn.q_proj.in_features)
    assert attn.o_proj.weight.shape == (attn.o_proj.out_features, 2 * hd)
    torch.testing.assert_close(attn(x), before, atol=1e-5, rtol=1e-5)


def test_slicing_ffn_channels_with_zero_contribution_is_exact(los):
    # Prepare
    import copy

    ffn = copy.deepcopy(los["run"].model.encoder.blocks[0].ffn)
    with torch.no_grad():
        ffn.fc2.weight[:, 10:] = 0
    x = torch.randn(2, 5, ffn.fc1.in_features)
    before = ffn(x)
    # Execute
    slice_ffn(ffn, torch.arange(10))
    # Assert
    assert ffn.fc1.out_features == 10 and ffn.fc2.in_features == 10
    torch.testing.assert_close(ffn(x), before, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("importance", ["taylor", "activation"])
def test_structured_prune_reduces_parameters_and_stays_finite(los, importance):
    # Prepare
    teacher = los["run"].model
    x, y = los["train_x"][:128], los["train_y"][:128]
    settings = PruneSettings(head_ratio=0.5, ffn_ratio=0.5, importance=importance)
    # Execute
    pruned, summary = structured_prune(teacher, x, y, los["run"].task, settings)
    out = pruned(los["x"])
    # Assert
    assert summary["importance"] == importance
    assert summary["params_after"] == count_parameters(pruned) < count_parameters(teacher)
    for block, layer in zip(pruned.encoder.blocks, summary["layers"], strict=True):
        assert block.attn.num_heads == layer["heads"] == 2
        assert block.ffn.fc1.out_features == layer["ffn"] == 32
    assert torch.isfinite(out).all() and out.shape == (len(los["x"]), 2)
    assert count_parameters(teacher) == summary["params_before"]  # teacher untouched


def test_importance_without_labels_falls_back_to_activation(los):
    # Prepare / Execute
    heads, channels, used = importance_scores(los["run"].model, los["train_x"][:32])
    # Assert
    assert used == "activation"
    assert [len(h) for h in heads] == [4, 4] and [len(c) for c in channels] == [64, 64]
    assert all(torch.all(h >= 0) for h in heads)
    with pytest.raises(ValueError, match="needs labels"):
        importance_scores(los["run"].model, los["train_x"][:8], method="taylor")


def test_prune_settings_are_validated():
    with pytest.raises(ValueError, match="head_ratio"):
        PruneSettings(head_ratio=1.0)
    with pytest.raises(ValueError, match="importance"):
        PruneSettings(importance="random")


def test_magnitude_prune_zeroes_weights_only(los):
    # Prepare
    teacher = los["run"].model
    # Execute
    sparse, summary = magnitude_prune(teacher, 0.5)
    # Assert: same shapes and parameter count, half the encoder weights zero
    assert count_parameters(sparse) == count_parameters(teacher)
    assert 0.49 <= summary["sparsity"] <= 0.52
    assert torch.isfinite(sparse(los["x"])).all()
    with pytest.raises(ValueError, match="sparsity"):
        magnitude_prune(teacher, 1.0)


def test_student_from_teacher_layers_and_distillation_lowers_the_loss(los):
    # Prepare: a 1-layer student of the 2-layer teacher
    teacher, task = los["run"].model, los["run"].task
    radio = splits.preset(los["run"].config.data).radio
    cfg = student_config(teacher.encoder.config, num_layers=1, ffn_dim=32)
    student, init = build_student(teacher, task, radio, cfg)
    x, y = los["train_x"][:128], los["train_y"][:128]
    labelled = torch.arange(len(x)) % 2 == 0  # half the rows unlabelled
    settings = DistillSettings(epochs=1, batch_size=32, lr=3e-3)
    # Execute
    first = distill(teacher, student, task, x, y, labelled, settings)
    second = distill(teacher, student, task, x, y, labelled, settings)
    # Assert
    assert init == {"init": "teacher", "teacher_layers": [0]}
    assert count_parameters(student) < count_parameters(teacher)
    assert student.encoder.blocks[0].ffn.fc1.out_features == 32
    assert second["loss"] < first["loss"]
    assert first["labelled"] == 64
    assert torch.isfinite(student(los["x"])).all()


def test_student_of_other_width_and_prediction_kd(tmp_path_factory):
    # Prepare: prediction task, narrower student (random init, projection 16 -> 32)
    pred = smoke_onnx(tmp_path_factory.getbasetemp() / "compression", "prediction")
    teacher, task = pred["run"].model, pred["run"].task
    radio = splits.preset(pred["run"].config.data).radio
    cfg = student_config(teacher.encoder.config, num_layers=1, d_model=16, num_heads=2)
    student, init = build_student(teacher, task, radio, cfg, seed=3)
    # Execute: unlabelled rows only (y=None)
    history = distill(teacher, student, task, pred["train_x"][:32], None, None,
                      DistillSettings(epochs=1, batch_size=16))  # fmt: skip
    # Assert
    assert init["init"] == "random"
    assert history["labelled"] == 0 and history["steps"] == 2
    assert student(pred["x"][:4]).shape == (4, 2, 16, 32)


def test_teacher_layers_are_evenly_spaced():
    assert teacher_layers(6, 2) == [0, 5]
    assert teacher_layers(6, 3) == [0, 2, 5]
    assert teacher_layers(6, 6) == list(range(6))
    with pytest.raises(ValueError, match="exceeds"):
        from rantune.model import ModelConfig

        student_config(ModelConfig(num_layers=2), num_layers=3)

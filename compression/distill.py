"""Knowledge distillation of the merged teacher into a smaller student.

Loss per batch::

    kd_weight     * T^2 KL(softmax(t / T) || softmax(s / T))      classification logits
                    (prediction: per-sample NMSE of the student output vs the teacher's)
  + hidden_weight * MSE(proj(h_s), h_t)                            encoder outputs
                    (CLS + patch tokens; ``proj``: Linear d_s -> d_t, trained along)
  + label_weight  * task loss on the rows that carry labels

so unlabelled local channels teach through the teacher and labels help where present.
A student of the teacher's width starts from the teacher: evenly spaced blocks
(first and last kept), embeddings, final norm and head; fewer heads or FFN channels
are chosen by weight norm. Other widths start from a seeded random init.

:func:`distill` is one participant's pass over the rows it holds; where the rows are
(each base station's own, or channels the server generates) and how the students are
combined is :mod:`rantune.compression.federated_distill`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rantune.config import RadioConfig
from rantune.errors import InputError
from rantune.model import ChannelEncoder, ModelConfig
from rantune.schema import setting
from rantune.tasks import Task, TaskModel, build_task_model
from rantune.training import OptimizerSettings


@dataclass(frozen=True)
class DistillSettings(OptimizerSettings):
    """Distillation hyper-parameters (see the module docstring for the loss):
    :class:`rantune.training.OptimizerSettings` (3 epochs by default) plus the loss terms."""

    epochs: int = setting(3, "passes over the rows", low=1)
    temperature: float = setting(2.0, "softening temperature of the KD loss", low=0.0, low_open=True)
    kd_weight: float = setting(1.0, "weight of the output (KD) loss", low=0.0)
    hidden_weight: float = setting(1.0, "weight of the hidden-state loss", low=0.0)
    label_weight: float = setting(0.5, "weight of the label loss (own labels only)", low=0.0)
    scope: ClassVar[str] = "distill"


def student_config(
    teacher: ModelConfig,
    num_layers: int = 2,
    d_model: int | None = None,
    num_heads: int | None = None,
    ffn_dim: int | None = None,
) -> ModelConfig:
    """The teacher's config with fewer layers and optionally a smaller width."""
    if num_layers > teacher.num_layers:
        raise InputError(
            f"student num_layers={num_layers} exceeds the teacher's {teacher.num_layers}"
        )
    return replace(
        teacher,
        num_layers=num_layers,
        d_model=d_model or teacher.d_model,
        num_heads=num_heads or teacher.num_heads,
        ffn_dim=ffn_dim or teacher.ffn_dim,
        dropout=0.0,
    )


def teacher_layers(num_teacher: int, num_student: int) -> list[int]:
    """Evenly spaced teacher block indices, first and last included."""
    return [int(round(v)) for v in np.linspace(0, num_teacher - 1, num_student)]


def build_student(
    teacher: TaskModel, task: Task, radio: RadioConfig, cfg: ModelConfig, seed: int = 0
) -> tuple[TaskModel, dict]:
    """A student task model for ``cfg`` and how it was initialised (the shipped encoder
    only: the student is a smaller one of its kind)."""
    from rantune.compression.prune import shipped_encoder_only, slice_ffn, slice_heads

    shipped_encoder_only(teacher, "a distilled student (a smaller shipped encoder)")
    t_cfg = teacher.encoder.config
    torch.manual_seed(seed)
    student = build_task_model(task, ChannelEncoder(cfg), radio)
    same_width = cfg.d_model == t_cfg.d_model and cfg.head_dim == t_cfg.head_dim
    if not same_width:
        return student.eval(), {"init": "random", "seed": seed}
    layers = teacher_layers(len(teacher.encoder.blocks), cfg.num_layers)
    encoder = copy.deepcopy(teacher.encoder)
    encoder.blocks = nn.ModuleList(copy.deepcopy(encoder.blocks[i]) for i in layers)
    encoder.config = cfg
    for block in encoder.blocks:
        if block.attn.num_heads > cfg.num_heads:
            w = block.attn.o_proj.weight.detach()
            norms = w.reshape(w.shape[0], block.attn.num_heads, -1).norm(dim=(0, 2))
            slice_heads(block.attn, torch.topk(norms, cfg.num_heads).indices)
        if block.ffn.fc1.out_features > cfg.ffn_dim:
            score = block.ffn.fc1.weight.detach().norm(dim=1) * block.ffn.fc2.weight.detach().norm(
                dim=0
            )
            slice_ffn(block.ffn, torch.topk(score, cfg.ffn_dim).indices)
    student.encoder = encoder
    student.head = copy.deepcopy(teacher.head)
    return student.eval(), {"init": "teacher", "teacher_layers": layers}


class _EncoderTap:
    """Forward hook on ``model.encoder`` keeping ``[B', 1 + P, d]`` (CLS + patches)."""

    def __init__(self, model: nn.Module) -> None:
        self.hidden: Tensor | None = None
        self.handle = model.encoder.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple, output: tuple[Tensor, Tensor]) -> None:
        cls, patches = output
        self.hidden = torch.cat([cls[:, None], patches], dim=1)

    def close(self) -> None:
        self.handle.remove()


def kd_loss(student_out: Tensor, teacher_out: Tensor, task: Task, temperature: float) -> Tensor:
    """Temperature KD on logits; the task loss to the teacher's output for regression tasks."""
    if task.regression:
        return task.loss(student_out, teacher_out)
    t = temperature
    return F.kl_div(
        F.log_softmax(student_out / t, dim=-1),
        F.log_softmax(teacher_out / t, dim=-1),
        log_target=True,
        reduction="batchmean",
    ) * (t * t)


def hidden_projection(student: nn.Module, teacher: nn.Module) -> nn.Linear:
    """The ``Linear(d_s -> d_t)`` of the hidden-state loss: identity when the widths match,
    else a seeded random init (trained along with the student)."""
    d_t, d_s = teacher.encoder.d_model, student.encoder.d_model
    proj = nn.Linear(d_s, d_t)
    if d_s == d_t:
        with torch.no_grad():
            proj.weight.copy_(torch.eye(d_t))
            proj.bias.zero_()
    return proj


def distill(
    teacher: nn.Module,
    student: nn.Module,
    task: Task,
    x: Tensor,
    y: Tensor | None = None,
    labelled: Tensor | None = None,
    settings: DistillSettings = DistillSettings(),
    proj: nn.Linear | None = None,
) -> dict:
    """Train ``student`` in place to mimic ``teacher`` on ``x``.

    Parameters
    ----------
    teacher : frozen fp32 teacher (eval mode).
    student : the model being trained (all parameters train).
    task : gives the label loss.
    x : inputs ``[N, ...]`` (unlabelled rows welcome).
    y : targets ``[N, ...]`` or ``None`` (no labels at all).
    labelled : bool ``[N]``: which rows of ``y`` are real labels (default: all).
    settings : see :class:`DistillSettings`.
    proj : the hidden-state projection ``Linear(d_s -> d_t)``, trained in place (kept
        between calls by a caller that distils in rounds); default a fresh
        :func:`hidden_projection`.

    Returns
    -------
    dict
        ``loss`` (mean of the last epoch), ``steps``, ``epochs``, ``rows``, ``labelled``.
    """
    if len(x) == 0:
        raise InputError("distillation needs at least one input row")
    if y is not None and labelled is None:
        labelled = torch.ones(len(x), dtype=torch.bool)
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    teacher = teacher.eval()
    for param in student.parameters():
        param.requires_grad_(True)
    t_tap, s_tap = _EncoderTap(teacher), _EncoderTap(student)
    proj = proj if proj is not None else hidden_projection(student, teacher)
    params = list(student.parameters()) + list(proj.parameters())
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(x) / settings.batch_size)
    total_steps = settings.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )
    student.train()
    epoch_loss = 0.0
    try:
        for _ in range(settings.epochs):
            order = torch.randperm(len(x), generator=generator)
            epoch_loss = 0.0
            for start in range(0, len(x), settings.batch_size):
                batch = order[start : start + settings.batch_size]
                xb = x[batch]
                with torch.no_grad():
                    t_out = teacher(xb)
                    t_hidden = t_tap.hidden
                s_out = student(xb)
                loss = settings.kd_weight * kd_loss(s_out, t_out, task, settings.temperature)
                if settings.hidden_weight > 0:
                    loss = loss + settings.hidden_weight * F.mse_loss(proj(s_tap.hidden), t_hidden)
                if y is not None and settings.label_weight > 0:
                    mask = labelled[batch]
                    if bool(mask.any()):
                        loss = loss + settings.label_weight * task.loss(s_out[mask], y[batch][mask])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if settings.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
                optimizer.step()
                schedule.step()
                epoch_loss += float(loss.detach())
    finally:
        t_tap.close()
        s_tap.close()
        student.eval()
    for param in student.parameters():
        param.requires_grad_(False)
    return {
        "loss": epoch_loss / steps_per_epoch,
        "steps": total_steps,
        "epochs": settings.epochs,
        "rows": int(len(x)),
        "labelled": int(labelled.sum()) if labelled is not None else 0,
    }

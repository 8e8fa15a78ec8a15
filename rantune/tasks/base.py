"""Task interface and the task model (encoder + small head)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch
from torch import Tensor, nn

from rantune.channels.dataset import ChannelDataset
from rantune.config import RadioConfig
from rantune.model.interface import Encoder, TokenLayout, token_layout


class Task(ABC):
    """A downstream task: which data it reads, its head, loss, metrics and baseline.

    Subclasses set ``name``, ``primary_metric`` and ``higher_is_better``; ``input_rank``
    is 4 for snapshot inputs ``[B, 2, A, S]`` and 5 for slot sequences ``[B, T, 2, A, S]``;
    ``regression`` tasks output values (CSI, positions), the others class logits.
    """

    name: str
    primary_metric: str
    higher_is_better: bool = True
    label_names: tuple[str, ...] = ()
    input_rank: int = 4
    regression: bool = False

    @abstractmethod
    def tensors(self, data: ChannelDataset, index: np.ndarray) -> tuple[Tensor, Tensor]:
        """Model inputs and targets of rows ``index`` (see each task for shapes)."""

    @abstractmethod
    def build_head(self, cfg: TokenLayout, radio: RadioConfig) -> nn.Module:
        """Head ``head(x, cls, patches) -> output`` for data of the given radio geometry.

        ``cfg``: the encoder's token width and patch extent (a ``ModelConfig`` has the
        same fields); heads never depend on the encoder's architecture."""

    @abstractmethod
    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """Scalar training loss."""

    @abstractmethod
    def metrics(self, output: Tensor, target: Tensor) -> dict[str, float]:
        """Evaluation metrics over a whole split (``primary_metric`` among them)."""

    @abstractmethod
    def baseline(
        self, data: ChannelDataset, train: np.ndarray, test: np.ndarray
    ) -> dict[str, float]:
        """Classical (non-learned) baselines fitted on ``train`` rows, scored on ``test``.

        Keys ``{method}_{metric}`` for every method, and the plain metric names for the
        method best on ``primary_metric`` (see :func:`rantune.tasks.baselines.best_of`).
        """

    def input_gate(self, radio: RadioConfig) -> nn.Module | None:
        """Module the task model applies to its input first (the task's partial observation,
        :class:`rantune.tasks.observation.ObservationGate`); ``None`` = the input as is."""
        return None

    def subsets(self, data: ChannelDataset, index: np.ndarray) -> dict[str, np.ndarray]:
        """Named bool masks over rows ``index`` scored separately (e.g. speed bands)."""
        return {}

    def better(self, a: float, b: float) -> bool:
        """Whether metric value ``a`` is better than ``b``."""
        return a > b if self.higher_is_better else a < b


class TaskModel(nn.Module):
    """An encoder (:class:`rantune.model.Encoder`: the shipped one or a custom one) plus a
    task head, after the task's observation gate (if any).

    ``forward(x)``: ``x`` is ``[B, 2, A, S]`` for snapshot tasks or ``[B, T, 2, A, S]``
    for sequence tasks (each slot is encoded by the shared encoder). The gate is
    idempotent, so inputs that already are the observation pass unchanged and an exported
    model applies the same partial observation to a full CSI estimate.
    """

    def __init__(
        self,
        encoder: Encoder,
        head: nn.Module,
        task_name: str,
        gate: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.task_name = task_name
        self.gate = gate

    def forward(self, x: Tensor) -> Tensor:
        if self.gate is not None:
            x = self.gate(x)  # same shape: the task's observation of x
        if x.dim() == 5:
            batch, slots = x.shape[:2]
            cls, patches = self.encoder(x.flatten(0, 1))  # [B*T, d], [B*T, P, d]
            cls = cls.view(batch, slots, -1)  # [B, T, d]
            patches = patches.view(batch, slots, *patches.shape[1:])  # [B, T, P, d]
        else:
            cls, patches = self.encoder(x)  # [B, d], [B, P, d]
        return self.head(x, cls, patches)


def build_task_model(task: Task, encoder: Encoder, radio: RadioConfig) -> TaskModel:
    """Attach ``task``'s head (fresh, seeded by the caller's torch RNG) to ``encoder``."""
    layout = token_layout(encoder, radio.num_bs_antennas, radio.num_subcarriers)  # fails early
    head = task.build_head(layout, radio)
    return TaskModel(encoder, head, task.name, task.input_gate(radio))


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """Model outputs for all rows of ``x`` in eval mode, batched."""
    was_training = model.training
    model.eval()
    outputs = [model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(outputs)

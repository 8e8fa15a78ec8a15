"""Local training and evaluation loops shared by centralized and federated training."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from rantune.errors import InputError
from rantune.schema import check_settings, setting
from rantune.tasks.base import Task, predict

AfterEpoch = Callable[[int, float], bool]
"""``after_epoch(epoch index, mean task loss of that epoch) -> stop training?``"""


@dataclass(frozen=True)
class OptimizerSettings:
    """What every optimisation loop of rantune takes (training, distillation).

    Attributes
    ----------
    epochs : passes over the rows.
    batch_size : mini-batch size.
    lr : AdamW learning rate.
    weight_decay : AdamW weight decay.
    max_grad_norm : gradient clipping norm (0 = off).
    seed : seeds shuffling and dropout.
    """

    epochs: int = setting(1, "passes over the rows", low=1)
    batch_size: int = setting(64, "mini-batch size", low=1)
    lr: float = setting(1e-3, "AdamW learning rate", low=0.0, low_open=True)
    weight_decay: float = setting(0.0, "AdamW weight decay", low=0.0)
    max_grad_norm: float = setting(1.0, "gradient clipping norm (0 = off)", low=0.0)
    seed: int = setting(0, "seeds shuffling and dropout", low=0)
    scope: ClassVar[str] = "training"  # names the settings in error messages

    def __post_init__(self) -> None:
        check_settings(self, self.scope)


@dataclass(frozen=True)
class TrainSettings(OptimizerSettings):
    """Optimisation settings of one local training call: :class:`OptimizerSettings` plus

    Attributes
    ----------
    prox_mu : FedProx proximal coefficient; adds ``mu / 2 * ||w - w_ref||^2``.
    max_steps : stop after this many optimizer steps (0 = no cap; a compute budget).
    """

    prox_mu: float = setting(0.0, "FedProx proximal coefficient", low=0.0)
    max_steps: int = setting(0, "optimizer step cap (0 = none)", low=0)


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def train(
    model: nn.Module,
    task: Task,
    x: Tensor,
    y: Tensor,
    settings: TrainSettings,
    reference: dict[str, Tensor] | None = None,
    after_epoch: AfterEpoch | None = None,
) -> dict[str, float]:
    """Train ``model``'s trainable parameters on ``(x, y)`` in place.

    Parameters
    ----------
    model : task model (possibly peft-wrapped); only ``requires_grad`` params train.
    task : gives the loss.
    x, y : inputs and targets of the local training rows (shapes per task).
    settings : optimisation settings.
    reference : ``{parameter name: tensor}`` anchor of the proximal term (FedProx);
        defaults to the parameters at the start of this call.
    after_epoch : called after each epoch with ``(epoch, mean task loss of that epoch)``;
        returning True stops training (early stopping, :func:`fit`).

    Returns
    -------
    dict
        ``loss`` (mean over steps, task loss only), ``num_examples``, ``steps``.
    """
    if len(x) == 0:
        raise InputError("no training rows: this client's training split is empty")
    params = trainable_parameters(model)
    if settings.prox_mu > 0:
        anchor = {n: (reference[n] if reference else p.detach().clone()) for n, p in params.items()}

    def step(batch: Tensor) -> tuple[Tensor, Tensor]:
        loss = task.loss(model(x[batch]), y[batch])
        if settings.prox_mu <= 0:
            return loss, loss
        prox = sum((p - anchor[n]).pow(2).sum() for n, p in params.items())
        return loss, loss + 0.5 * settings.prox_mu * prox

    return _optimise(model, list(params.values()), len(x), step, settings, after_epoch)


def _optimise(
    model: nn.Module,
    params: list[nn.Parameter],
    num_rows: int,
    step: Callable[[Tensor], tuple[Tensor, Tensor]],
    settings: TrainSettings,
    after_epoch: AfterEpoch | None = None,
) -> dict[str, float]:
    """The loop of :func:`train` and :func:`train_probe`: seeded shuffling, AdamW,
    clipping, ``max_steps``; ``step(batch indices) -> (task loss, objective)``;
    ``after_epoch(epoch, epoch loss) -> stop?`` (the model is in eval mode during it)."""
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    model.train()
    total, steps = 0.0, 0
    for epoch in range(settings.epochs):
        order = torch.randperm(num_rows, generator=generator)
        epoch_total, epoch_steps = 0.0, 0
        for start in range(0, num_rows, settings.batch_size):
            if settings.max_steps and steps + epoch_steps >= settings.max_steps:
                break
            loss, objective = step(order[start : start + settings.batch_size])
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            if settings.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            optimizer.step()
            epoch_total += float(loss.detach())
            epoch_steps += 1
        total, steps = total + epoch_total, steps + epoch_steps
        if after_epoch is not None:
            model.eval()
            stop = after_epoch(epoch, epoch_total / max(epoch_steps, 1))
            model.train()
            if stop:
                break
        if settings.max_steps and steps >= settings.max_steps:
            break
    model.eval()
    return {"loss": total / max(steps, 1), "num_examples": int(num_rows), "steps": steps}


def evaluate(
    model: nn.Module, task: Task, x: Tensor, y: Tensor, batch_size: int = 512
) -> dict[str, float]:
    """Task metrics plus ``loss`` and ``num_examples`` on ``(x, y)``."""
    if len(x) == 0:
        return {"num_examples": 0}
    output = predict(model, x, batch_size)
    result = task.metrics(output, y)
    result["loss"] = float(task.loss(output, y))
    result["num_examples"] = int(len(x))
    return result


def label_budget(rows: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded random share ``fraction`` (0 < f <= 1) of ``rows``, at least 2 rows, sorted.

    The labelled-data budget of centralized reference runs (1%, 10%, 100%).
    """
    if not 0.0 < fraction <= 1.0:
        raise InputError(f"label budget {fraction} is invalid: expected 0 < budget <= 1")
    count = min(len(rows), max(2, int(round(fraction * len(rows)))))
    chosen = np.random.default_rng([seed, 7]).choice(len(rows), size=count, replace=False)
    return np.sort(rows[chosen])


@torch.no_grad()
def encode(encoder: nn.Module, x: Tensor, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """Frozen-encoder features of ``x`` in eval mode.

    ``x``: ``[N, 2, A, S]`` -> (``[N, d]``, ``[N, P, d]``); or ``[N, T, 2, A, S]`` ->
    (``[N, T, d]``, ``[N, T, P, d]``), as :class:`~rantune.tasks.TaskModel` passes them.
    """
    was_training = encoder.training
    encoder.eval()
    cls_parts, patch_parts = [], []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        flat = batch.flatten(0, 1) if batch.dim() == 5 else batch
        cls, patches = encoder(flat)  # [b, d], [b, P, d]
        if batch.dim() == 5:
            cls = cls.view(*batch.shape[:2], -1)  # [B, T, d]
            patches = patches.view(*batch.shape[:2], *patches.shape[1:])  # [B, T, P, d]
        cls_parts.append(cls)
        patch_parts.append(patches)
    encoder.train(was_training)
    return torch.cat(cls_parts), torch.cat(patch_parts)


def train_probe(
    model: nn.Module,
    task: Task,
    x: Tensor,
    y: Tensor,
    settings: TrainSettings,
    features: tuple[Tensor, Tensor] | None = None,
    after_epoch: AfterEpoch | None = None,
) -> dict[str, float]:
    """Linear probe: train only ``model.head`` on the frozen encoder's features.

    The encoder runs once (``features`` may pass its outputs for ``x`` in, see
    :func:`encode`), then each step costs a head forward/backward only. Equivalent to
    :func:`train` with a frozen, dropout-free encoder.
    """
    if len(x) == 0:
        raise InputError("no training rows: the training split is empty")
    cls, patches = features if features is not None else encode(model.encoder, x)
    params = [p for p in model.head.parameters() if p.requires_grad]

    def step(batch: Tensor) -> tuple[Tensor, Tensor]:
        loss = task.loss(model.head(x[batch], cls[batch], patches[batch]), y[batch])
        return loss, loss

    model.eval()  # the encoder stays in eval mode (no dropout); only the head trains
    return _optimise(model.head, params, len(x), step, settings, after_epoch)


@torch.no_grad()
def predict_from_features(
    model: nn.Module, x: Tensor, features: tuple[Tensor, Tensor], batch_size: int = 512
) -> Tensor:
    """The head's outputs for ``x`` from precomputed encoder ``features`` of ``x``
    (see :func:`encode`), batched: what :func:`predict` gives with a frozen encoder."""
    model.eval()
    cls, patches = features
    return torch.cat(
        [
            model.head(x[i : i + batch_size], cls[i : i + batch_size], patches[i : i + batch_size])
            for i in range(0, len(x), batch_size)
        ]
    )


# ------------------------------------------------------------------ early stopping
@dataclass(frozen=True)
class StoppingSettings:
    """Early stopping on a validation share of the labelled rows (:func:`fit`).

    Attributes
    ----------
    patience : epochs without a validation improvement before training stops
        (0 = off: train ``max_epochs`` epochs on every labelled row, no validation).
    max_epochs : epoch cap.
    val_share : share of the labelled rows held out for validation (seeded; 0 = none:
        the training loss is monitored).
    min_val_rows : at least this many validation rows; with fewer than twice as many
        labelled rows there is no validation split and the training loss is monitored.
    """

    patience: int = setting(5, "epochs without validation improvement before stopping (0 = off)", low=0)
    max_epochs: int = setting(50, "epoch cap", low=1)
    val_share: float = setting(
        0.2, "share of the labelled rows that validates (0 = none: the training loss)",
        low=0.0,
        high=0.5,
    )
    min_val_rows: int = setting(4, "at least this many validation rows", low=1)
    scope: ClassVar[str] = "early stopping"

    def __post_init__(self) -> None:
        check_settings(self, self.scope)


def validation_split(
    rows: np.ndarray, settings: StoppingSettings, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ``(training rows, validation rows)`` of the labelled ``rows``, both sorted.

    ``max(min_val_rows, round(val_share * n))`` rows validate; with patience 0, val_share
    0 or fewer than ``2 * min_val_rows`` labelled rows the validation part is empty (every
    row trains and :func:`fit` monitors the training loss).
    """
    if not settings.patience or not settings.val_share or len(rows) < 2 * settings.min_val_rows:
        return np.sort(rows), rows[:0]
    count = max(settings.min_val_rows, int(round(settings.val_share * len(rows))))
    chosen = np.zeros(len(rows), dtype=bool)
    chosen[np.random.default_rng([seed, 11]).choice(len(rows), size=count, replace=False)] = True
    return np.sort(rows[~chosen]), np.sort(rows[chosen])


def fit(
    model: nn.Module,
    task: Task,
    train_xy: tuple[Tensor, Tensor],
    val_xy: tuple[Tensor, Tensor] | None,
    settings: TrainSettings,
    stopping: StoppingSettings,
    features: tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor] | None] | None = None,
) -> dict:
    """Train with early stopping: score ``val_xy`` after every epoch, keep the best state.

    The monitor is the task's primary metric on the validation rows, ties broken by the
    validation loss; the validation loss alone when the metric is NaN there (e.g. a
    single LoS class among few rows); the epoch's training loss without validation rows
    (``val_xy`` None or empty). Training stops after ``stopping.patience`` epochs without
    improvement or at ``stopping.max_epochs`` (``settings.epochs`` is ignored); the
    trainable parameters of the best epoch are restored. With validation rows the state
    before training competes too (epoch 0: a prediction head starts as sample-and-hold).

    Parameters
    ----------
    model, task, settings : as :func:`train`.
    train_xy, val_xy : inputs and targets of the training and validation rows.
    stopping : patience and epoch cap.
    features : for a probe (:func:`train_probe`): the frozen encoder's features of the
        training and validation inputs (see :func:`encode`).

    Returns
    -------
    dict
        :func:`train`'s log plus ``epochs`` (run), ``best_epoch`` (0 = the initial state),
        ``stopped_early``, ``monitor`` (``"val:<metric>"``, ``"val:loss"`` or
        ``"train:loss"``), ``best`` (the monitored value of the restored state) and
        ``history`` (the monitored value after every epoch).
    """
    x, y = train_xy
    has_val = val_xy is not None and len(val_xy[0]) > 0
    params = trainable_parameters(model)

    def val_scores() -> tuple[float, float]:
        if features is not None:
            output = predict_from_features(model, val_xy[0], features[1])
        else:
            output = predict(model, val_xy[0])
        metric = task.metrics(output, val_xy[1])[task.primary_metric]
        return float(metric), float(task.loss(output, val_xy[1]))

    sign = 1.0 if task.higher_is_better else -1.0
    initial = val_scores() if has_val else None
    use_metric = initial is not None and bool(np.isfinite(initial[0]))
    monitor = f"val:{task.primary_metric}" if use_metric else "val:loss" if has_val else "train:loss"
    state: dict = {"best": None, "key": None, "epoch": 0, "history": [], "epochs": 0}

    def consider(epoch: int, metric: float, loss: float) -> None:
        """Keep the state after ``epoch`` (0 = before training) if it is the best so far."""
        key = (sign * metric, -loss) if use_metric else (-loss,)  # larger is better
        if state["key"] is None or key > state["key"]:
            state.update(key=key, best=metric if use_metric else loss, epoch=epoch)
            state["params"] = {n: p.detach().clone() for n, p in params.items()}

    if initial is not None:  # the initial state competes (a head that starts as hold)
        consider(0, *initial)

    def after_epoch(epoch: int, train_loss: float) -> bool:
        metric, loss = val_scores() if has_val else (float("nan"), train_loss)
        state["history"].append(metric if use_metric else loss)
        state["epochs"] = epoch + 1
        consider(epoch + 1, metric, loss)
        return stopping.patience > 0 and epoch + 1 - state["epoch"] >= stopping.patience

    epoch_settings = replace(settings, epochs=stopping.max_epochs)
    if features is not None:
        log = train_probe(model, task, x, y, epoch_settings, features[0], after_epoch)
    else:
        log = train(model, task, x, y, epoch_settings, after_epoch=after_epoch)
    if "params" in state:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state["params"][name])
    return {
        **log,
        "epochs": state["epochs"],
        "best_epoch": state["epoch"],
        "stopped_early": state["epochs"] < stopping.max_epochs,
        "monitor": monitor,
        "best": state["best"],
        "history": state["history"],
    }

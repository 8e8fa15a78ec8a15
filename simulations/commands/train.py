"""``rantune train``: centralized reference training of one task (the federated upper bound).

Data: the pooled training rows of a preset's natural split (union of every client's
train rows, :mod:`rantune.partition`), a seeded ``--budget`` share of them labelled;
scores on the global test set, next to the task's classical baseline on the same rows.

Modes: ``scratch`` (random encoder, everything trains), ``probe`` (pretrained encoder
frozen, head only), ``lora`` (pretrained encoder + peft adapters, adapters and head
train), ``full`` (pretrained encoder, everything trains).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from rantune.errors import InputError
from rantune.lora import PROJECTION_NAMES, LoraSettings, shipped_targets
from rantune.simulations.commands import set_torch_threads
from rantune.simulations.errors import cli_errors, ensure_output_dir
from rantune.tasks.settings import TaskSettings
from rantune.training import StoppingSettings

console = Console()
MODES = ("scratch", "probe", "lora", "full")
# Learning rates per mode that worked on the default preset (tiny model, batch 32).
DEFAULT_LR = {"scratch": 1e-3, "probe": 3e-3, "lora": 5e-3, "full": 5e-4}
STOPPING = StoppingSettings()  # the CLI's defaults (one source: the dataclass)


@dataclass(frozen=True)
class CentralizedSettings:
    """One centralized experiment: a task, a mode and a labelled-data budget.

    Attributes
    ----------
    task, mode : what to train and how (see the module docstring).
    preset : data preset name or .toml path.
    budget : labelled share of the pooled training rows, 0 < budget <= 1.
    seeds : one run per seed (seeds the budget subset, init and batch order).
    checkpoint : pretrained encoder, a shipped name or a ``.safetensors`` path.
    size : model size; the checkpoint must match it.
    stopping : early stopping (:class:`rantune.training.StoppingSettings`): a seeded
        ``val_share`` of the labelled rows validates after every epoch, training stops
        after ``patience`` epochs without improvement or at ``max_epochs`` and keeps the
        best epoch's weights.
    max_steps : if > 0, at most this many optimizer steps (a compute cap).
    batch_size, lr, weight_decay : optimisation (``lr`` None = per-mode default).
    lora : LoRA settings for ``lora`` mode.
    partition_seed : seed of the natural split (fixed across runs so all share rows).
    task_options : the task's options (``task-options.*``: observation, horizon).
    """

    task: str
    mode: str
    preset: str = "default"
    budget: float = 1.0
    seeds: tuple[int, ...] = (0,)
    checkpoint: str = "tiny"
    size: str = "tiny"
    stopping: StoppingSettings = field(default_factory=StoppingSettings)
    max_steps: int = 0
    batch_size: int = 32
    lr: float | None = None
    weight_decay: float = 0.0
    lora: LoraSettings = field(default_factory=LoraSettings)
    partition_seed: int = 0
    task_options: TaskSettings = field(default_factory=TaskSettings)

    def __post_init__(self) -> None:
        from rantune.model import model_config
        from rantune.tasks import get_task

        get_task(self.task, self.task_options)  # unknown task -> ValueError
        model_config(self.size)
        if self.mode not in MODES:
            raise InputError(f"mode {self.mode!r} is unknown: choose one of {', '.join(MODES)}")
        if not 0.0 < self.budget <= 1.0:
            raise InputError(f"--budget={self.budget} is invalid: expected 0 < budget <= 1")
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if not self.seeds:
            raise InputError("give at least one seed")
        if self.max_steps < 0 or self.batch_size < 1:
            raise InputError(
                f"--batch-size={self.batch_size} / --max-steps={self.max_steps} are invalid: "
                "expected batch_size >= 1 and max_steps >= 0"
            )

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.mode]


def pooled_split(data, partition_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train rows (union of the natural split's client train rows) and global-test rows."""
    from rantune.partition import PartitionConfig, partition

    parts = partition(
        data["site_index"],
        {"beam": data["beam_index"], "los": data["los"]},
        PartitionConfig(scheme="natural", seed=partition_seed),
    )
    train = np.sort(np.concatenate([c.train for c in parts.clients]))
    return train, parts.global_test


def load_encoder(mode: str, checkpoint: str, size: str):
    """Random encoder for ``scratch``; the pretrained one (checked against ``size``) otherwise."""
    from rantune.model import ChannelEncoder, load_checkpoint, model_config
    from rantune.model.checkpoint import SHIPPED_DIR

    cfg = model_config(size)
    if mode == "scratch":
        return ChannelEncoder(cfg)
    path = Path(checkpoint)
    if path.suffix != ".safetensors":
        path = SHIPPED_DIR / f"{checkpoint}.safetensors"
        if not path.exists():
            shipped = sorted(p.stem for p in SHIPPED_DIR.glob("*.safetensors"))
            raise InputError(
                f"no checkpoint {checkpoint!r}: give a shipped name {shipped} or a "
                ".safetensors path (make one with `rantune pretrain`)"
            )
    encoder, _ = load_checkpoint(path, expect=cfg)
    return encoder


def mode_model(mode: str, task, encoder, radio, lora: LoraSettings):
    """Task model for ``mode``: which parameters train is decided here."""
    from rantune.lora import apply_lora
    from rantune.tasks import build_task_model

    model = build_task_model(task, encoder, radio)
    if mode == "probe":
        for p in model.encoder.parameters():
            p.requires_grad_(False)
    elif mode == "lora":
        model = apply_lora(model, lora)
    return model


def run_one(
    settings: CentralizedSettings,
    seed: int,
    data,
    radio,
    split,
    cache: dict | None = None,
    subsets: dict[str, np.ndarray] | None = None,
) -> dict:
    """Train and score one seed.

    ``cache`` may hold the frozen encoder's features for ``probe`` mode (filled on
    first use); ``subsets`` maps a name to a bool mask over the test rows, scored
    separately (e.g. low-SNR rows) under ``subset_metrics``.
    """
    import torch

    from rantune.tasks import get_task, predict
    from rantune.training import (
        TrainSettings,
        encode,
        fit,
        label_budget,
        predict_from_features,
        validation_split,
    )

    task = get_task(settings.task, settings.task_options)
    train_rows, test_rows = split
    rows = label_budget(train_rows, settings.budget, seed)
    fit_rows, val_rows = validation_split(rows, settings.stopping, seed)
    torch.manual_seed(seed)
    encoder = load_encoder(settings.mode, settings.checkpoint, settings.size)
    model = mode_model(settings.mode, task, encoder, radio, settings.lora)
    train_settings = TrainSettings(
        batch_size=settings.batch_size,
        lr=settings.learning_rate,
        weight_decay=settings.weight_decay,
        seed=seed,
        max_steps=settings.max_steps,
    )
    x_test, y_test = task.tensors(data, test_rows)
    started = time.perf_counter()
    train_xy = task.tensors(data, fit_rows)
    val_xy = task.tensors(data, val_rows) if len(val_rows) else None  # None: train loss
    if settings.mode == "probe":
        cache = cache if cache is not None else {}
        if "train" not in cache:
            cache["train"] = encode(model.encoder, task.tensors(data, train_rows)[0])
            cache["test"] = encode(model.encoder, x_test)

        def cached(part: np.ndarray) -> tuple:
            where = np.searchsorted(train_rows, part)
            return cache["train"][0][where], cache["train"][1][where]

        features = (cached(fit_rows), cached(val_rows) if len(val_rows) else None)
        log = fit(model, task, train_xy, val_xy, train_settings, settings.stopping, features)
        output = predict_from_features(model, x_test, cache["test"])
    else:
        log = fit(model, task, train_xy, val_xy, train_settings, settings.stopping)
        output = predict(model, x_test)
    metrics = task.metrics(output, y_test)
    metrics["loss"] = float(task.loss(output, y_test))
    subset_metrics = {
        name: task.metrics(output[torch.as_tensor(mask)], y_test[torch.as_tensor(mask)])
        for name, mask in (subsets or {}).items()
        if mask.any()
    }
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "seed": seed,
        "num_train": int(len(rows)),
        "num_val": int(len(val_rows)),
        "epochs": log["epochs"],
        "best_epoch": log["best_epoch"],
        "stopped_early": log["stopped_early"],
        "monitor": log["monitor"],
        "history": log["history"],
        "steps": log["steps"],
        "train_loss": log["loss"],
        "seconds": round(time.perf_counter() - started, 2),
        "trainable_parameters": int(trainable),
        "metrics": {k: float(v) for k, v in metrics.items()},
        "subset_metrics": subset_metrics,
    }


def summarize(runs: list[dict]) -> dict[str, dict[str, float]]:
    """``{metric: {"mean", "std"}}`` over seeds (population std, 0 for one seed)."""
    names = [k for k in runs[0]["metrics"] if k != "num_examples"]
    values = {k: np.array([r["metrics"][k] for r in runs], dtype=float) for k in names}
    return {k: {"mean": float(v.mean()), "std": float(v.std())} for k, v in values.items()}


def run_centralized(settings: CentralizedSettings, data=None, radio=None, cache=None) -> dict:
    """All seeds of one experiment plus the classical baseline on the same test rows."""
    from rantune.channels import load_pooled
    from rantune.presets import load_preset
    from rantune.tasks import get_task

    if data is None or radio is None:
        cfg = load_preset(settings.preset)
        data, radio = load_pooled(cfg), cfg.radio
    task = get_task(settings.task, settings.task_options)
    split = pooled_split(data, settings.partition_seed)
    subsets = task.subsets(data, split[1])
    runs = [run_one(settings, seed, data, radio, split, cache, subsets) for seed in settings.seeds]
    result = asdict(settings)
    result["lora"] = {**asdict(settings.lora), "targets": list(settings.lora.targets)}
    result["stopping"] = asdict(settings.stopping)
    result["lr"] = settings.learning_rate
    result.update(
        primary_metric=task.primary_metric,
        higher_is_better=task.higher_is_better,
        num_train_pool=int(len(split[0])),
        num_test=int(len(split[1])),
        runs=runs,
        summary=summarize(runs),
        baseline=task.baseline(data, split[0], split[1]),
    )
    return result


def print_result(result: dict) -> None:
    """Per-seed rows, mean ± std and the baseline as a rich table."""
    metrics = list(result["summary"])
    table = Table(
        title=f"{result['task']} / {result['mode']} / budget {result['budget']:g} "
        f"({result['runs'][0]['num_train']} labelled rows, test {result['num_test']})"
    )
    table.add_column("run")
    for name in metrics:
        table.add_column(name, justify="right")
    for run in result["runs"]:
        table.add_row(f"seed {run['seed']}", *(f"{run['metrics'][m]:.4f}" for m in metrics))
    summary = result["summary"]
    table.add_row(
        "mean ± std", *(f"{summary[m]['mean']:.4f} ± {summary[m]['std']:.4f}" for m in metrics)
    )
    base = result["baseline"]
    table.add_row("baseline", *(f"{base[m]:.4f}" if m in base else "-" for m in metrics))
    console.print(table)


def parse_task_options(pairs: list[str]) -> TaskSettings:
    """``["observation=csi", "antennas=4"]`` -> :class:`TaskSettings` (checked like the run
    config's ``task-options.*`` keys)."""
    from rantune.federated.run_config import parse_override_pairs, resolve_run_config

    flat = parse_override_pairs([f"task-options.{p.strip()}" for p in pairs])
    return resolve_run_config(flat).task_options


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError as err:
        raise InputError(f"--seeds={text!r} is invalid: expected e.g. 0,1,2") from err


def register(app: typer.Typer) -> None:
    @app.command("train")
    @cli_errors
    def train_command(
        task: str = typer.Option(
            ..., help="los, beam, beam-spatial, beam-temporal, prediction or positioning."
        ),
        task_option: list[str] = typer.Option(
            [],
            "--task-option",
            help="Task option key=value, repeatable (e.g. observation=csi, antennas=4, "
            "horizon=2; the task-options.* keys of `rantune simulate --list-keys`).",
        ),
        mode: str = typer.Option("lora", help="scratch, probe, lora or full."),
        preset: str = typer.Option("default", help="Preset name or .toml path."),
        budget: float = typer.Option(1.0, help="Labelled share of the training rows (0-1]."),
        seeds: str = typer.Option("0", help="Comma-separated seeds, one run each."),
        checkpoint: str = typer.Option("tiny", help="Shipped name or .safetensors path."),
        size: str = typer.Option("tiny", help="Model size (must match the checkpoint)."),
        patience: int = typer.Option(
            STOPPING.patience,
            help="Stop after this many epochs without validation improvement (0 = off).",
        ),
        max_epochs: int = typer.Option(STOPPING.max_epochs, help="Epoch cap."),
        val_share: float = typer.Option(
            STOPPING.val_share,
            help=f"Share of the labelled rows that validates (at least {STOPPING.min_val_rows} "
            "rows; with fewer labelled rows the training loss is monitored).",
        ),
        max_steps: int = typer.Option(0, help="At most this many optimizer steps (0 = no cap)."),
        batch_size: int = typer.Option(32, help="Mini-batch size."),
        lr: float | None = typer.Option(None, help="Learning rate (default per mode)."),
        lora_r: int = typer.Option(8, help="LoRA rank."),
        lora_alpha: float = typer.Option(16.0, help="LoRA alpha."),
        lora_dropout: float = typer.Option(0.0, help="LoRA dropout."),
        lora_targets: str = typer.Option(
            "q_proj,v_proj", help=f"Comma-separated subset of {','.join(PROJECTION_NAMES)}."
        ),
        out: Path = typer.Option(Path("runs/train"), help="Directory for the result JSON."),
        threads: int = typer.Option(1, help="torch CPU threads."),
    ) -> None:
        """Centralized training of one task (the upper bound of federated runs)."""
        from rantune.fileio import atomic_write_json

        set_torch_threads(threads)
        lora = LoraSettings(
            r=lora_r,
            alpha=lora_alpha,
            dropout=lora_dropout,
            targets=tuple(t.strip() for t in lora_targets.split(",") if t.strip()),
        )
        shipped_targets(lora.targets)  # before any data is built
        settings = CentralizedSettings(
            task=task,
            task_options=parse_task_options(task_option),
            mode=mode,
            preset=preset,
            budget=budget,
            seeds=parse_seeds(seeds),
            checkpoint=checkpoint,
            size=size,
            stopping=StoppingSettings(
                patience=patience, max_epochs=max_epochs, val_share=val_share
            ),
            max_steps=max_steps,
            batch_size=batch_size,
            lr=lr,
            lora=lora,
        )
        out = ensure_output_dir(out)
        result = run_centralized(settings)
        print_result(result)
        path = out / f"{task}-{mode}-budget{budget:g}.json"
        atomic_write_json(path, result)
        console.print(f"wrote {path}")


__all__ = [
    "MODES",
    "CentralizedSettings",
    "mode_model",
    "load_encoder",
    "pooled_split",
    "register",
    "run_centralized",
    "run_one",
]

"""Pretraining of the channel encoder: masked channel modeling on the tasks' observations.

Each sample of a batch is hidden in one way, drawn with configurable weights
(:mod:`rantune.pretrain_objective`): random patches behind the mask token (LWM-style
MCM, optional 80/10/10 replacement), the tasks' partial observations -- a subset of
antennas, of pilot subcarriers, Set B beam RSRPs, built by the tasks' own
``BeamObservation`` and fed as the tasks feed them (zeros where unobserved) -- and
denoising of the full noisy LS estimate. A linear reconstruction head predicts the
clean channel; the loss is the per-sample NMSE over the hidden entries only.

>>> settings = PretrainSettings(preset="pretrain", size="tiny", steps=3000)
>>> card = pretrain(settings, run_dir="runs/pretrain", out_dir="runs/pretrain", name="tiny")

Resumable: ``run_dir/state.pt`` holds model, optimizer, step and history; a rerun
with the same settings continues from it. Every random draw (batch order, kinds,
masks, noise) is a function of ``(seed, step)``, so a resumed run gives the same
numbers as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from rantune.errors import InputError
from rantune.model.checkpoint import save_checkpoint
from rantune.model.config import model_config
from rantune.model.encoder import ChannelEncoder, csi_to_real
from rantune.model.masking import (
    MaskedChannelModel,
    ReconstructionHead,
    evaluate_masked_nmse,
    load_masked_model,
    masked_nmse,
    save_reconstruction_head,
    step_generator,
)
from rantune.pretrain_objective import Objective, ObjectiveBatch, evaluate_objective
from rantune.pretrain_settings import (
    PretrainSettings,
    learning_rate,
    objective_description,
    reproduce_command,
)

__all__ = [
    "MaskedChannelModel",
    "PretrainData",
    "PretrainSettings",
    "ReconstructionHead",
    "evaluate_masked_nmse",
    "learning_rate",
    "load_masked_model",
    "load_pretrain_data",
    "pretrain",
    "reproduce_command",
]

def training_batch(
    x_train: Tensor,
    noisy_train: Tensor | None,
    step: int,
    settings: PretrainSettings,
    objective: Objective,
    encoder: ChannelEncoder,
) -> ObjectiveBatch:
    """The objective's batch of one step: rows of the step's epoch order, draws of ``step``."""
    per_epoch = max(len(x_train) // settings.batch_size, 1)
    epoch, position = divmod(step, per_epoch)
    order = torch.randperm(len(x_train), generator=step_generator(settings.seed, epoch, 1))
    rows = order[position * settings.batch_size : (position + 1) * settings.batch_size]
    noisy = noisy_train[rows] if settings.noise == "dataset" and noisy_train is not None else None
    generator = step_generator(settings.seed, step, 2)
    return objective.batch(x_train[rows], generator, encoder, noisy=noisy)


def _atomic_torch_save(payload: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class PretrainData:
    """Pretraining tensors: train and held-out splits by site (float ``[N, 2, A, S]``).

    ``num_beams``: the preset's codebook size (Set A of the rsrp kind);
    ``site_scenarios``: ``{site: scenario}`` (``rt`` for ray-traced stations).
    """

    train: Tensor
    train_noisy: Tensor | None
    held_out: Tensor
    train_sites: list[str]
    held_out_sites: list[str]
    config_hash: str
    preset_name: str
    num_beams: int
    site_scenarios: dict[str, str] = field(default_factory=dict)


def load_pretrain_data(settings: PretrainSettings, progress: bool = True) -> PretrainData:
    """Load the preset and split it by site: the last ``held_out_sites`` are held out."""
    from rantune.channels import load_pooled
    from rantune.presets import load_preset

    cfg = load_preset(settings.preset)
    if settings.held_out_sites >= len(cfg.sites):
        raise InputError(
            f"preset {cfg.name!r} has {len(cfg.sites)} sites; held_out_sites="
            f"{settings.held_out_sites} leaves none to train on: lower it"
        )
    data = load_pooled(cfg, progress=progress)
    first_held = len(cfg.sites) - settings.held_out_sites
    held = data["site_index"] >= first_held
    return PretrainData(
        train=csi_to_real(data["csi"][~held]),
        train_noisy=csi_to_real(data["csi_noisy"][~held]) if settings.noise == "dataset" else None,
        held_out=csi_to_real(data["csi"][held]),
        train_sites=[s.name for s in cfg.sites[:first_held]],
        held_out_sites=[s.name for s in cfg.sites[first_held:]],
        config_hash=cfg.config_hash(),
        preset_name=cfg.name,
        num_beams=cfg.radio.num_beams,
        site_scenarios={s.name: s.scenario for s in cfg.sites},
    )


def initial_model(settings: PretrainSettings) -> MaskedChannelModel:
    """A fresh model seeded by the caller's torch RNG, or the ``init`` checkpoint's weights."""
    model = MaskedChannelModel(ChannelEncoder(model_config(settings.size)))
    if settings.init.strip().lower() == "none":
        return model
    start = load_masked_model(settings.init)
    if start.encoder.config != model.encoder.config:
        raise InputError(
            f"init checkpoint {settings.init!r} is not a {settings.size!r} model: pass "
            "--size to match it or --init none"
        )
    model.load_state_dict(start.state_dict())
    return model


def held_out_scores(
    model: MaskedChannelModel, objective: Objective, data: PretrainData, mask_ratio: float
) -> dict:
    """A model card's scores (dB, 3 decimals): the MCM metric (random patches, clean
    inputs) on the held-out sites and a train subset, and each objective variant's NMSE
    on the held-out sites (:func:`rantune.pretrain_objective.evaluate_objective`)."""
    held = evaluate_masked_nmse(model, data.held_out, mask_ratio, seed=12345)
    train = evaluate_masked_nmse(model, data.train[:2048], mask_ratio, seed=12345)
    by_variant = evaluate_objective(model, objective, data.held_out, seed=12345)
    return {
        "masked_nmse_db_held_out_sites": round(held, 3),
        "masked_nmse_db_train_subset": round(train, 3),
        "held_out_nmse_db_by_variant": {k: round(v, 3) for k, v in by_variant.items()},
    }


def pretrain(
    settings: PretrainSettings,
    run_dir: Path | str,
    out_dir: Path | str,
    name: str = "tiny",
    data: PretrainData | None = None,
    progress: bool = True,
    fresh: bool = False,
    log=print,
    stop_after: int | None = None,
) -> dict | None:
    """Run (or resume) masked channel modeling and write the checkpoint and its card.

    Parameters
    ----------
    settings : the run's settings.
    run_dir : directory of the resumable ``state.pt``.
    out_dir : where ``<name>.safetensors``, ``<name>.json`` (the model card) and
        ``<name>.head.safetensors`` (reconstruction head) are written.
    data : pre-loaded data (default: load ``settings.preset``).
    fresh : ignore an existing ``state.pt`` and start over.
    stop_after : stop (with a saved state, no card) once this call made that many
        steps; a later call resumes. ``None``: run to ``settings.steps``.

    Returns
    -------
    dict or None
        The model card, or ``None`` when ``stop_after`` stopped the run early.

    Raises
    ------
    ValueError
        If ``run_dir`` holds the state of a run with other settings (use another
        directory or ``fresh``), or the data cannot be patched by the model.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    data = data or load_pretrain_data(settings, progress=progress)
    state_path = run_dir / "state.pt"
    torch.manual_seed(settings.seed)
    model = initial_model(settings)
    shape = (int(data.train.shape[2]), int(data.train.shape[3]))
    model.encoder.grid(*shape)  # fails early if the data cannot be patched
    objective = settings.objective(shape, data.num_beams)
    labels = objective.labels
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or "embed" in n]
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay}],
        lr=settings.lr,
        weight_decay=0.0,
    )
    step, train_seconds, history = 0, 0.0, []
    # running means since the last history entry (saved, so a resume logs the same history)
    window: list[float] = []
    sums = {label: [0.0, 0] for label in labels}
    if state_path.exists() and not fresh:
        state = torch.load(state_path, weights_only=False)
        if state["settings"] != settings.to_dict() or state["config_hash"] != data.config_hash:
            raise InputError(
                f"{state_path} belongs to a run with other settings or data; pass --fresh "
                "to start over or choose another --run-dir"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, train_seconds, history = state["step"], state["train_seconds"], state["history"]
        window, sums = state.get("window", window), state.get("sums", sums)
        log(f"resuming from step {step} ({state_path})")

    def checkpoint() -> None:
        payload = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "train_seconds": train_seconds,
            "history": history,
            "window": window,
            "sums": sums,
            "settings": settings.to_dict(),
            "config_hash": data.config_hash,
        }
        _atomic_torch_save(payload, state_path)

    model.train()
    columns = (TextColumn("MCM"), BarColumn(), TextColumn("{task.completed}/{task.total}"))
    columns += (TextColumn("{task.fields[info]}"), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("pretrain", total=settings.steps, completed=step, info="")
        last = settings.steps if stop_after is None else min(settings.steps, step + stop_after)
        while step < last:
            started = time.perf_counter()
            batch = training_batch(
                data.train, data.train_noisy, step, settings, objective, model.encoder
            )
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, settings)
            scored = model.encoder.patchify(batch.scored.float())  # [B, P, D]
            output = model(batch.inputs, batch.token_mask)  # [B, P, D]
            per_sample = masked_nmse(output, model.target(batch.target), scored)  # [B]
            loss = per_sample.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            train_seconds += time.perf_counter() - started
            step += 1
            window.append(float(loss.detach()))
            for index, label in enumerate(labels):
                sel = batch.variant == index
                sums[label][0] += float(per_sample.detach()[sel].sum())
                sums[label][1] += int(sel.sum())
            if step % 50 == 0 or step == settings.steps:
                mean = sum(window) / len(window)
                by_kind = {k: 10 * math.log10(v / n) for k, (v, n) in sums.items() if n and v > 0}
                history.append(
                    {"step": step, "train_nmse_db": 10 * math.log10(mean), "by_variant": by_kind}
                )
                window, sums = [], {label: [0.0, 0] for label in labels}
                bar.update(task, info=f"train NMSE {10 * math.log10(mean):6.2f} dB")
            bar.update(task, completed=step)
            if step % settings.checkpoint_every == 0 or step == last:
                checkpoint()
    if step < settings.steps:
        log(f"stopped at step {step}/{settings.steps}; rerun to resume ({state_path})")
        return None
    scores = held_out_scores(model, objective, data, settings.mask_ratio)
    held_db, train_db = scores["masked_nmse_db_held_out_sites"], scores["masked_nmse_db_train_subset"]
    if settings.init.strip().lower() != "none":  # what the starting point scores on the same rows
        start = load_masked_model(settings.init)
        scores["init_checkpoint"] = {
            "name": settings.init,
            **held_out_scores(start, objective, data, settings.mask_ratio),
        }
    card = {
        "name": name,
        "model_size": settings.size,
        "num_parameters": sum(p.numel() for p in model.encoder.parameters()),
        "objective": objective_description(settings),
        "pretraining": settings.to_dict(),
        "data": {
            "preset": data.preset_name,
            "config_hash": data.config_hash,
            "csi_shape": list(shape),
            "num_beams": data.num_beams,
            "train_sites": data.train_sites,
            "held_out_sites": data.held_out_sites,
            "site_scenarios": data.site_scenarios,
            "train_samples": int(len(data.train)),
            "held_out_samples": int(len(data.held_out)),
            "samples_seen": step * settings.batch_size,
        },
        "results": {
            "steps": step,
            **scores,
            "throughput_samples_per_s": round(step * settings.batch_size / train_seconds, 1),
            "train_seconds": round(train_seconds, 1),
            "torch_threads": torch.get_num_threads(),
            "torch_version": torch.__version__,
        },
        "history": history,
        "reproduce": reproduce_command(settings, out_dir, name),
    }
    weights = out_dir / f"{name}.safetensors"
    head_path = out_dir / f"{name}.head.safetensors"
    card["reconstruction_head"] = {
        "file": head_path.name,
        "sha256": save_reconstruction_head(model.head, head_path),
    }
    save_checkpoint(model.encoder, weights, card)
    card = json.loads(weights.with_suffix(".json").read_text())
    log(
        f"masked NMSE on held-out sites {held_db:.2f} dB (train subset {train_db:.2f} dB); "
        f"{card['results']['throughput_samples_per_s']} samples/s; wrote {weights}"
    )
    return card

"""The model a federated run trains: frozen base encoder + LoRA adapters + task head.

A :class:`ModelSpec` says everything a model is made of (task and head, the shipped
encoder's checkpoint or a custom encoder's entry point and weights, random-encoder
seed, radio geometry, LoRA settings, init seed), so a
model built from one spec can never stand in for another: whoever keeps models
between rounds keys them by their spec (:class:`rantune.federated.downlink.ModelPool`).
Nothing here is cached: every call builds afresh.

>>> from rantune.federated.run_config import resolve_run_config
>>> spec = model_spec(resolve_run_config({"model.pretrained": "none"}))
>>> model = build_model(spec)           # peft model, eval mode
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from rantune.config import RadioConfig
from rantune.errors import InputError
from rantune.federated.run_config import RunConfig
from rantune.federated.splits import preset
from rantune.lora import LoraSettings, apply_lora, trainable_state
from rantune.model import ChannelEncoder, Encoder, load_checkpoint, model_config
from rantune.model.checkpoint import SHIPPED_DIR
from rantune.seeding import derive_seed
from rantune.tasks import Task, TaskSettings, build_task_model, get_task


def apply_threads(threads: int) -> None:
    """Use ``threads`` torch intra-op threads (the run's ``torch-threads``; 0 = leave
    torch's default).

    One thread is the default: on small models several threads per process gain
    little, and on a loaded machine their spin-waits cost 10x or more.
    """
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def resolve_checkpoint(name: str) -> Path:
    """Path of a pretrained encoder: a shipped name (``tiny``) or a .safetensors path.

    Inside ``flwr run`` the app runs from a FAB copy of this repository, which holds
    only text files; the shipped weights are then found in the installed package
    (site-packages or the editable checkout).
    """
    path = Path(name).expanduser()
    if path.suffix == ".safetensors":
        if not path.exists():
            raise InputError(f"model.pretrained={name!r}: file not found")
        return path
    candidates = [SHIPPED_DIR / f"{name}.safetensors"]
    try:
        from importlib import metadata

        dist = metadata.distribution("rantune")
        candidates.append(Path(str(dist.locate_file(f"rantune/checkpoints/{name}.safetensors"))))
        direct = dist.read_text("direct_url.json")
        if direct:
            url = json.loads(direct).get("url", "")
            if url.startswith("file://"):
                root = Path(url.removeprefix("file://"))
                candidates.append(root / "rantune" / "checkpoints" / f"{name}.safetensors")
    except Exception:  # noqa: BLE001 - not installed as a distribution: only SHIPPED_DIR
        pass
    for candidate in candidates:
        if candidate.exists() and candidate.with_suffix(".json").exists():
            return candidate
    raise InputError(
        f"model.pretrained={name!r}: no shipped checkpoint found (looked in "
        f"{sorted({str(c.parent) for c in candidates})}); give a .safetensors path, or set "
        'model.pretrained="none" for a seeded random encoder (no pretraining)'
    )


@dataclass(frozen=True)
class ModelSpec:
    """Everything one task model is built from (hashable: a key for kept models).

    Attributes
    ----------
    task, head : the task and its head (``model.head``; ``rantune.tasks.HEADED_TASKS``).
    pretrained : shipped checkpoint name or ``.safetensors`` path; ``none`` = random.
    size : encoder size of a random encoder.
    base_seed : seed of a random encoder (0 with a checkpoint).
    radio : the preset's radio geometry (input layout, number of beams).
    lora : rank, alpha, dropout and targets of the adapters.
    init_seed : seeds the head and the adapter initialisation.
    task_options : the task's options (``task-options.*``: observation, horizon).
    encoder : custom encoder entry point (``model.encoder``; ``""`` = the shipped one,
        then ``pretrained`` and ``size`` say which).
    checkpoint : the custom encoder's ``.safetensors`` weights (``""`` = seeded init).
    """

    task: str
    head: str
    pretrained: str
    size: str
    base_seed: int
    radio: RadioConfig
    lora: LoraSettings
    init_seed: int
    task_options: TaskSettings = field(default_factory=TaskSettings)
    encoder: str = ""
    checkpoint: str = ""

    @property
    def is_random(self) -> bool:
        if self.encoder:
            return not self.checkpoint
        return self.pretrained.strip().lower() in ("", "none")


def model_spec(cfg: RunConfig, rank: int | None = None) -> ModelSpec:
    """The run's model (``task``, ``model.*``, ``lora.*``, the preset's radio), at LoRA
    rank ``rank`` (default ``lora.r``); the init seed is derived from the run seed."""
    lora = cfg.lora
    return ModelSpec(
        task=cfg.task,
        head=cfg.model.head,
        pretrained=cfg.model.pretrained,
        size=cfg.model.size,
        base_seed=cfg.seed if cfg.model.is_random else 0,
        radio=preset(cfg.data).radio,
        lora=LoraSettings(
            r=lora.r if rank is None else int(rank),
            alpha=lora.alpha,
            dropout=lora.dropout,
            targets=lora.targets,
        ),
        init_seed=derive_seed(cfg.seed, "init"),
        task_options=cfg.task_options,
        encoder=cfg.model.encoder.strip(),
        checkpoint=cfg.model.checkpoint.strip(),
    )


def model_task(task: str, head: str, options: TaskSettings | None = None) -> Task:
    """The task with its options and configured head (``model.head`` applies to the
    tasks with a classification head, ``rantune.tasks.HEADED_TASKS``)."""
    return get_task(task, options, head)


def base_encoder(spec: ModelSpec) -> Encoder:
    """A frozen base encoder: the custom one ``spec.encoder`` names
    (:func:`rantune.model.custom.build_encoder`, its weights from ``spec.checkpoint``),
    else the shipped checkpoint's; a random one is seeded by ``base_seed`` (the global
    torch RNG is left as it was)."""
    if spec.encoder:
        from rantune.model.custom import build_encoder

        encoder = build_encoder(
            spec.encoder,
            spec.radio.num_bs_antennas,
            spec.radio.num_subcarriers,
            checkpoint=spec.checkpoint,
            seed=derive_seed(spec.base_seed, "random-base"),
        )
    elif spec.is_random:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(spec.base_seed, "random-base"))
            encoder = ChannelEncoder(model_config(spec.size))
    else:
        encoder, _ = load_checkpoint(resolve_checkpoint(spec.pretrained))
    encoder.eval()
    for param in encoder.parameters():
        param.requires_grad_(False)
    return encoder


def build_model(spec: ModelSpec, encoder: Encoder | None = None):
    """A fresh peft task model: frozen base + LoRA adapters + trainable head, eval mode.

    ``encoder`` (default :func:`base_encoder`) is deep-copied, never modified; the
    head and adapters are drawn from ``spec.init_seed`` (the global torch RNG is left
    as it was), so the server's initial global state is reproducible.
    """
    encoder = copy.deepcopy(encoder) if encoder is not None else base_encoder(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.init_seed)
        task_model = build_task_model(
            model_task(spec.task, spec.head, spec.task_options), encoder, spec.radio
        )
        model = apply_lora(task_model, spec.lora)
    model.eval()
    return model


def check_custom_model(cfg: RunConfig) -> None:
    """Build the run's model once if ``model.encoder`` names a custom encoder, so a bad
    entry point, encoder contract, checkpoint or LoRA target fails (InputError) before
    anything is written; the shipped encoder's settings are checked by the schema."""
    if cfg.model.custom:
        build_model(model_spec(cfg))


def initial_global_state(spec: ModelSpec) -> dict[str, Tensor]:
    """The global adapters + head before round 1."""
    return trainable_state(build_model(spec))


def full_model_parameters(spec: ModelSpec) -> dict[str, Tensor]:
    """Every parameter of the un-adapted task model (encoder + head): what full-model
    FedAvg would send each way."""
    with torch.random.fork_rng(devices=[]):  # the head's values do not matter here
        model = build_task_model(
            model_task(spec.task, spec.head, spec.task_options), base_encoder(spec), spec.radio
        )
    return {k: v.detach() for k, v in model.named_parameters()}

"""Load a fine-tuning run directory and merge its LoRA adapter into an fp32 task model.

A run directory (federated, or centralized in the same format) holds::

    RUN/config.json                  run config: nested sections plus "flat" (Flower's
                                     flat run_config) and "config-hash" when federated
    RUN/global_adapter.safetensors   trainable state: LoRA adapters + head (peft keys)
    RUN/global_dense_deltas.safetensors   FLoRA / FedEx-LoRA only: the cumulative dense
                                     update of each adapted projection (base = W0 + it)

The model is rebuilt exactly as the run built it (:mod:`rantune.federated.workload`:
same base encoder, shipped or the custom ``model.encoder`` with its
``model.checkpoint``, same LoRA targets), the adapter and head are loaded, and peft's
``merge_and_unload`` folds ``B A`` into the frozen weights: the result is a plain
:class:`~rantune.tasks.TaskModel` that compression works on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file

from rantune.aggregation.dense import DENSE_FILE, DENSE_SUFFIX
from rantune.errors import InputError
from rantune.federated import workload
from rantune.federated.downlink import ModelPool
from rantune.federated.run_config import DEFAULTS, RunConfig, resolve_run_config
from rantune.federated.rundir import RunDir
from rantune.federated.splits import FederatedData
from rantune.lora import load_trainable_state, trainable_state
from rantune.tasks import Task, TaskModel, get_task
from rantune.training import TrainSettings, train

CONFIG_NAME = "config.json"
ADAPTER_NAME = "global_adapter.safetensors"


@dataclass
class SourceRun:
    """A loaded run: its config and the merged fp32 teacher.

    Attributes
    ----------
    run_dir : the run directory (absolute).
    config : the parsed run configuration.
    config_hash : the run's config hash (``config-hash`` in config.json, else computed).
    task : the run's task.
    model : merged fp32 :class:`TaskModel` in eval mode (LoRA folded in).
    """

    run_dir: Path
    config: RunConfig
    config_hash: str
    task: Task
    model: TaskModel

    def source_info(self) -> dict:
        """The ``source`` section of an artifact manifest."""
        cfg = self.config
        custom = cfg.model.custom
        return {
            "run_dir": str(self.run_dir),
            "config_hash": self.config_hash,
            # a custom model.encoder: its entry point and weights (pretrained = its checkpoint)
            "encoder": cfg.model.encoder if custom else "shipped",
            "pretrained": (cfg.model.checkpoint or "none") if custom else cfg.model.pretrained,
            "model_size": "custom" if custom else cfg.model.size,
            "data_preset": cfg.data.preset,
            "data_seed": cfg.data.seed,
            "seed": cfg.seed,
            "lora": {
                "r": cfg.lora.r,
                "alpha": cfg.lora.alpha,
                "targets": list(cfg.lora.targets),
            },
            # what the task observes; the artifact applies it itself (rantune.tasks.observation)
            "task_options": asdict(cfg.task_options),
        }


def _flatten(nested: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def read_run_config(run_dir: Path | str) -> tuple[RunConfig, dict]:
    """Parse ``RUN/config.json`` into a :class:`RunConfig` (and return the raw JSON).

    The ``flat`` section is used when present (federated runs); otherwise the nested
    sections are flattened and missing keys take their defaults (centralized runs
    that write only ``task``, ``seed``, ``data``, ``model`` and ``lora``).

    Raises
    ------
    ValueError
        If the directory or its config is missing, unreadable or invalid.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"--run {run_dir} is not a directory: pass a fine-tuning run directory")
    path = run_dir / CONFIG_NAME
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(
            f"run directory {run_dir} has no {CONFIG_NAME}: pass the directory written by "
            "`rantune federate` (or a centralized run in the same format)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path} is not readable JSON ({err})") from err
    if not isinstance(raw, dict):
        raise InputError(f"{path} is not a JSON object")
    flat = raw.get("flat")
    if not isinstance(flat, dict):
        nested = {k: v for k, v in raw.items() if k not in ("config-hash", "format-version")}
        flat = _flatten(nested)
        if isinstance(flat.get("lora.targets"), list):
            flat["lora.targets"] = ",".join(flat["lora.targets"])
        flat = {k: v for k, v in flat.items() if k in DEFAULTS or k.startswith("strategy.")}
    else:
        flat = dict(flat)
    for key in ("task",):
        if key not in flat:
            raise InputError(f"{path} does not name the run's {key}: it is not a rantune run")
    try:
        cfg = resolve_run_config(
            {k: v for k, v in flat.items() if k in DEFAULTS},
        )
    except ValueError as err:
        raise InputError(f"{path}: {err}") from err
    return cfg, raw


def load_adapter(run_dir: Path | str) -> dict[str, np.ndarray]:
    """The run's ``global_adapter.safetensors`` tensors; ``ValueError`` if absent/corrupt."""
    path = Path(run_dir) / ADAPTER_NAME
    if not path.exists():
        raise InputError(
            f"run directory {run_dir} has no {ADAPTER_NAME}: the run did not finish (or is "
            "not a fine-tuning run); finish or resume it before compressing"
        )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"{path} cannot be read ({err}): the adapter file is damaged") from err


def load_dense_deltas(run_dir: Path | str) -> dict[str, np.ndarray] | None:
    """A FLoRA / FedEx-LoRA run's cumulative dense update per adapted projection,
    ``{module prefix: [d_out, d_in]}`` (``RUN/global_dense_deltas.safetensors``); ``None``
    for runs without one."""
    path = Path(run_dir) / DENSE_FILE
    if not path.exists():
        return None
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"{path} cannot be read ({err}): the dense-update file is damaged") from err
    return {k.removesuffix(DENSE_SUFFIX): v for k, v in tensors.items() if k.endswith(DENSE_SUFFIX)}


def merge_lora(peft_model) -> TaskModel:
    """Fold LoRA into the base weights (peft ``merge_and_unload``); eval mode, fp32."""
    merged = peft_model.merge_and_unload()
    if not isinstance(merged, TaskModel):
        raise InputError(f"merging gave {type(merged).__name__}, not a TaskModel")
    merged = merged.float().eval()
    for param in merged.parameters():
        param.requires_grad_(False)
    return merged


def load_run(run_dir: Path | str) -> SourceRun:
    """Rebuild a run's model, load its global adapter + head and merge LoRA.

    Raises
    ------
    ValueError
        If the config or the adapter is missing, damaged or does not fit the model.
    """
    run_dir = Path(run_dir).expanduser().resolve()
    cfg, raw = read_run_config(run_dir)
    tensors = load_adapter(run_dir)
    deltas = load_dense_deltas(run_dir)
    spec = workload.model_spec(cfg)
    # FLoRA / FedEx-LoRA: the global model's base is W0 + the cumulative dense update
    model = workload.build_model(spec) if deltas is None else ModelPool().model(spec, deltas)
    try:
        load_trainable_state(model, {k: torch.from_numpy(v.copy()) for k, v in tensors.items()})
    except (ValueError, RuntimeError) as err:
        raise InputError(
            f"{run_dir / ADAPTER_NAME} does not fit the model its config describes: {err}"
        ) from err
    config_hash = str(raw.get("config-hash") or cfg.identity_hash())
    return SourceRun(
        run_dir, cfg, config_hash, get_task(cfg.task, cfg.task_options), merge_lora(model)
    )


def write_run_dir(run_dir: Path | str, cfg: RunConfig, peft_model, extra: dict | None = None):
    """Write a (centralized) run in the federated run-directory format.

    ``config.json`` comes from :class:`rantune.federated.rundir.RunDir` (same keys and
    config hash as a federated run); the adapter file holds :func:`trainable_state`.
    """
    run = RunDir(run_dir)
    run.root.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().numpy() for k, v in trainable_state(peft_model).items()}
    run.write_adapter(state, metadata={"mode": "centralized"})
    run.write_config(cfg, extra={"mode": "centralized", **(extra or {})})
    return run.root


def train_centralized_run(
    run_dir: Path | str,
    overrides: dict,
    settings: TrainSettings,
    max_train_rows: int | None = None,
    clients: Sequence[int] | None = None,
) -> dict:
    """Fine-tune LoRA + head on every client's training rows pooled, and write a run dir.

    Parameters
    ----------
    run_dir : output directory (config.json + global_adapter.safetensors).
    overrides : flat run-config keys (``{"task": "los", "data.preset": "smoke", ...}``).
    settings : optimisation settings of :func:`rantune.training.train`.
    max_train_rows : cap on the pooled training rows (seeded random subset).
    clients : partition ids whose training rows are pooled (default all); one id gives
        the local-only reference of that client.

    Returns
    -------
    dict
        Training summary plus global-test metrics of the trained model (``test``) and,
        with ``clients``, the metrics on those clients' own test rows (``own-test``).
    """
    from rantune.compression.data import pooled_split
    from rantune.training import evaluate

    cfg = resolve_run_config(overrides)
    task = get_task(cfg.task, cfg.task_options)
    model = workload.build_model(workload.model_spec(cfg))
    data = FederatedData.load(cfg.data, cfg.partition)
    x, y = pooled_split(
        cfg, "train", max_rows=max_train_rows, seed=cfg.seed, clients=clients, data=data
    )
    summary = train(model, task, x, y, settings)
    summary["test"] = evaluate(model, task, *data.tensors(task, None, "test"))
    if clients is not None:
        own = pooled_split(cfg, "test", clients=clients, data=data)
        summary["own-test"] = evaluate(model, task, *own)
    write_run_dir(run_dir, cfg, model, extra={"centralized": {"summary": summary}})
    return summary

"""Small run directories for tests and examples (seconds on a 2-core CPU).

A run here uses a miniature seeded encoder saved as a checkpoint file and named by
path in ``model.pretrained`` (the run-config contract allows a .safetensors path),
LoRA on q/v, a few optimisation steps on the ``smoke`` preset, and is written in the
federated run-directory format by :func:`compression.merge.train_centralized_run`.
Results are cached per process and directory, so several test modules share one.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rantune.model import ChannelEncoder, ModelConfig, save_checkpoint
from rantune.training import TrainSettings

MINI_CONFIG = ModelConfig(d_model=32, num_layers=2, num_heads=4, ffn_dim=64)
_CACHE: dict[tuple, Path] = {}


def mini_checkpoint(path: Path, seed: int = 0, cfg: ModelConfig = MINI_CONFIG) -> Path:
    """Save a seeded random encoder of ``cfg`` (+ card) at ``path`` (.safetensors)."""
    torch.manual_seed(seed)
    encoder = ChannelEncoder(cfg)
    save_checkpoint(encoder, path, card={"purpose": "tests", "seed": seed})
    return path


def smoke_run(
    root: Path | str, task: str = "los", epochs: int = 2, preset: str = "smoke", seed: int = 0
) -> Path:
    """A finished centralized LoRA run of ``task`` under ``root`` (cached per process)."""
    from compression.merge import train_centralized_run

    root = Path(root)
    key = (str(root.resolve()), task, epochs, preset, seed)
    if key in _CACHE and (_CACHE[key] / "global_adapter.safetensors").exists():
        return _CACHE[key]
    checkpoint = root / "mini-encoder.safetensors"
    if not checkpoint.exists():
        mini_checkpoint(checkpoint, seed)
    run_dir = root / f"run-{task}-{preset}-{epochs}-{seed}"
    overrides = {
        "task": task,
        "seed": seed,
        "data.preset": preset,
        "model.pretrained": str(checkpoint),
        "lora.r": 4,
        "lora.alpha": 8.0,
        "lora.targets": "q_proj,v_proj",
    }
    train_centralized_run(
        run_dir, overrides, TrainSettings(epochs=epochs, batch_size=32, lr=3e-3, seed=seed)
    )
    _CACHE[key] = run_dir
    return run_dir

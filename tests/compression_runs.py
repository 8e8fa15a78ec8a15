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

from rantune.compression.distill import DistillSettings
from rantune.compression.pipeline import CompressSettings
from rantune.model import ChannelEncoder, ModelConfig, save_checkpoint
from rantune.training import TrainSettings

# Compression settings small enough for unit tests (one-epoch students, few rows).
FAST_COMPRESS = CompressSettings(
    recover=DistillSettings(epochs=1, batch_size=32),
    distill=DistillSettings(epochs=1, batch_size=32),
    student_layers=1,
    bench_warmup=1,
    bench_repeats=3,
    max_calib=32,
    max_eval=64,
)

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
    from rantune.compression.merge import train_centralized_run

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


def smoke_onnx(root: Path | str, task: str = "los") -> dict:
    """The merged model of :func:`smoke_run` exported once per process.

    Returns ``{"run": SourceRun, "onnx": fp32 path, "pre": pre-processed path,
    "x": eval inputs, "y": eval targets, "calib": calibration rows}``.
    """
    from rantune.compression.data import pooled_split, run_data
    from rantune.compression.export import export_onnx
    from rantune.compression.merge import load_run
    from rantune.compression.quantize_edge import preprocess

    root = Path(root)
    key = ("onnx", str(root.resolve()), task)
    if key in _EXPORTS:
        return _EXPORTS[key]
    run = load_run(smoke_run(root, task, epochs=2 if task != "prediction" else 1))
    data = run_data(run.config, max_eval=128, distill="off", calibrate=False)
    # rows for the unit tests of prune/distill/quantize functions (the pipeline's students
    # and calibration use rantune.compression.federated_distill / calibrate, never pooled rows)
    train_x, train_y = pooled_split(run.config, "train", max_rows=256)
    path = root / f"{task}-fp32.onnx"
    export_onnx(run.model, data.eval_x[:2], path)
    pre = preprocess(path, root / f"{task}-fp32.pre.onnx")
    _EXPORTS[key] = {
        "run": run,
        "onnx": path,
        "pre": pre,
        "x": data.eval_x,
        "y": data.eval_y,
        "calib": train_x[:64].numpy(),
        "train_x": train_x,
        "train_y": train_y,
    }
    return _EXPORTS[key]


_EXPORTS: dict[tuple, dict] = {}


def edge_artifact(
    directory: Path, onnx_path: Path, task: str = "los", labels: tuple[str, ...] = ("nlos", "los")
) -> Path:
    """An edge artifact folder (model + manifest, unsigned) around an existing ONNX file."""
    import shutil

    from rantune.compression.export import describe_onnx
    from rantune.fileio import sha256_file
    from rantune_edge.manifest import (
        MODEL_NAME,
        Manifest,
        normalization_for,
        output_kind,
        write_manifest,
    )

    directory.mkdir(parents=True, exist_ok=True)
    model = directory / MODEL_NAME
    shutil.copyfile(onnx_path, model)
    info = describe_onnx(model)
    output = {**info["output"], "kind": output_kind(info["output"])}
    manifest = Manifest(
        task=task,
        variant="fp32",
        input=info["input"],
        output=output,
        normalization=normalization_for(info["input"]["shape"]),
        label_names=list(labels) if output["kind"] == "logits" else [],
        model={
            "file": MODEL_NAME,
            "sha256": sha256_file(model),
            "size_bytes": info["size_bytes"],
            "opset": info["opset"],
            "max_batch": info["max_batch"],
        },
        source={"run_dir": "test", "config_hash": "0" * 16},
    )
    write_manifest(directory, manifest)
    return directory

"""Server-side quantization with torchao: the global model keeps PyTorch kernels.

Modes
-----
``fp32``              no quantization (reference, and the CPU default).
``int8-weight-only``  ``Int8WeightOnlyConfig``; CPU and CUDA.
``int8-dynamic``      ``Int8DynamicActivationInt8WeightConfig``; CPU and CUDA.
``float8``            ``Float8DynamicActivationFloat8WeightConfig`` (per row), bf16
                      model; CUDA with compute capability >= 8.9 (Ada, Hopper).
``int4-weight-only``  ``Int4WeightOnlyConfig`` (group 32, tinygemm layout), bf16 model;
                      CUDA >= 8.0.

:func:`pick_device` chooses CUDA when torch sees one and falls back to the CPU;
:func:`default_mode` picks the mode per device: float8 (or int8 weight-only before
Ada) on CUDA, with ``torch.compile`` on, which turns torchao's tensor subclasses into
fused kernels. On the CPU the default is fp32 eager: on this project's 2-core x86
CPUs (no VNNI) torchao's int8 modes run slower than fp32 at these model sizes, with
or without ``torch.compile``, and compiling costs up to minutes
(benchmarks/results/compression.md, "Server core"); the int8 modes remain available
when memory matters more than latency.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from rantune.errors import InputError

SERVER_MODES = ("fp32", "int8-weight-only", "int8-dynamic", "float8", "int4-weight-only")
# Minimum CUDA compute capability of the CUDA-only modes.
CUDA_ONLY = {"float8": (8, 9), "int4-weight-only": (8, 0)}
INT4_GROUP_SIZE = 32


def cuda_capability() -> tuple[int, int] | None:
    """Compute capability of CUDA device 0, or ``None`` without CUDA."""
    if not torch.cuda.is_available():
        return None
    return tuple(torch.cuda.get_device_capability(0))  # type: ignore[return-value]


def pick_device(device: str | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA if available, else the CPU. ``"cuda"`` without CUDA fails."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            "device 'cuda' was asked for but torch sees no CUDA GPU: use device='cpu' or 'auto'"
        )
    if resolved.type not in ("cpu", "cuda"):
        raise InputError(f"device {device!r} is not supported: use auto, cpu or cuda")
    return resolved


def default_mode(device: torch.device) -> str:
    """float8 on CUDA >= 8.9, int8 weight-only on older CUDA, fp32 on the CPU."""
    if device.type == "cuda":
        capability = cuda_capability() or (0, 0)
        return "float8" if capability >= CUDA_ONLY["float8"] else "int8-weight-only"
    return "fp32"


def check_mode(mode: str, device: torch.device) -> None:
    """Raise ``ValueError`` if ``mode`` is unknown or cannot run on ``device``."""
    if mode not in SERVER_MODES:
        raise InputError(f"server mode {mode!r} is unknown: choose one of {list(SERVER_MODES)}")
    if mode in CUDA_ONLY:
        need = CUDA_ONLY[mode]
        capability = cuda_capability() if device.type == "cuda" else None
        if capability is None or capability < need:
            have = "no CUDA device" if capability is None else f"compute capability {capability}"
            raise InputError(
                f"server mode {mode} needs a CUDA GPU with compute capability >= "
                f"{need[0]}.{need[1]} ({have} here): use int8-dynamic or int8-weight-only on CPU"
            )


def _linear_filter(multiple: int):
    def accept(module: nn.Module, fqn: str) -> bool:
        return (
            isinstance(module, nn.Linear)
            and module.in_features % multiple == 0
            and module.out_features % multiple == 0
        )

    return accept


def torchao_config(mode: str):
    """``(torchao config, filter_fn or None, model dtype)`` for a quantized mode."""
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Int4WeightOnlyConfig,
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
        PerRow,
    )

    if mode == "int8-weight-only":
        return Int8WeightOnlyConfig(), None, torch.float32
    if mode == "int8-dynamic":
        return Int8DynamicActivationInt8WeightConfig(), None, torch.float32
    if mode == "float8":
        # _scaled_mm needs both matrix sides divisible by 16: tiny heads stay bf16.
        config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
        return config, _linear_filter(16), torch.bfloat16
    if mode == "int4-weight-only":
        # tinygemm layout: plain torch CUDA kernels on sm80+ (no fbgemm-genai needed).
        config = Int4WeightOnlyConfig(
            group_size=INT4_GROUP_SIZE, int4_packing_format="tile_packed_to_4d"
        )
        return config, _linear_filter(INT4_GROUP_SIZE), torch.bfloat16
    raise InputError(f"server mode {mode!r} has no torchao config")


@dataclass
class ServerModel:
    """A task model prepared for serving.

    Attributes
    ----------
    module : the (quantized, possibly compiled) model on ``device``.
    device : where it runs.
    dtype : its floating dtype (inputs are cast to it).
    mode : one of :data:`SERVER_MODES`.
    compiled : whether ``torch.compile`` wraps it.
    """

    module: nn.Module
    device: torch.device
    dtype: torch.dtype
    mode: str
    compiled: bool

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        """``x`` float ``[B, ...]`` (any device) -> float32 CPU output ``[B, ...]``."""
        out = self.module(x.to(self.device, self.dtype, non_blocking=True))
        return out.float().cpu()

    def predict(self, x: np.ndarray | Tensor, batch_size: int = 256) -> np.ndarray:
        """Batched outputs for all rows of ``x`` as float32 numpy."""
        x = torch.as_tensor(np.asarray(x, dtype=np.float32) if isinstance(x, np.ndarray) else x)
        parts = [self(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return torch.cat(parts).numpy()


def quantize_for_server(
    model: nn.Module,
    mode: str | None = None,
    device: str | torch.device | None = None,
    compile: bool | None = None,
) -> ServerModel:
    """Copy ``model``, move it to the device and quantize it with torchao.

    Parameters
    ----------
    model : merged fp32 task model (left untouched).
    mode : one of :data:`SERVER_MODES`; ``None``/``"auto"`` = :func:`default_mode`.
    device : ``auto``/``None``, ``cpu`` or ``cuda``.
    compile : wrap with ``torch.compile``; ``None`` = on for CUDA, off for CPU.

    Raises
    ------
    ValueError
        On an unknown mode or a CUDA-only mode without a suitable GPU.
    """
    resolved = device if isinstance(device, torch.device) else pick_device(device)
    mode = default_mode(resolved) if mode in (None, "auto") else mode
    check_mode(mode, resolved)
    module = copy.deepcopy(model).eval()
    for param in module.parameters():
        param.requires_grad_(False)
    dtype = torch.float32
    if mode != "fp32":
        from torchao.quantization import quantize_

        config, filter_fn, dtype = torchao_config(mode)
        module = module.to(device=resolved, dtype=dtype)
        quantize_(module, config, filter_fn=filter_fn)
    else:
        module = module.to(resolved)
    compiled = resolved.type == "cuda" if compile is None else bool(compile)
    if compiled:
        module = torch.compile(module, dynamic=True)
    return ServerModel(module, resolved, dtype, mode, compiled)

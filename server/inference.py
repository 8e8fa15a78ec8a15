"""Server-side inference of the global model through torchao kernels.

The server keeps the full merged model and serves it on the GPU when torch sees one
(float8 on Ada/Hopper, int8 weight-only on older GPUs, ``torch.compile`` on), and
falls back to the CPU otherwise (fp32 eager by default, the fastest there; torchao's
``int8-weight-only`` / ``int8-dynamic`` on request, e.g. to save memory). The work
is done by :mod:`compression.merge` (run directory -> merged model) and
:mod:`compression.quantize_server` (torchao); this class is the serving surface.

>>> service = ServerInference.from_run("runs/federated")
>>> service.predict(x)          # float32 numpy [B, ...] -> [B, K] logits / [B, 2, A, S]
>>> service.describe()           # device, mode, compiled, task, labels
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from rantune.compression.merge import load_run
from rantune.compression.quantize_server import ServerModel, quantize_for_server
from rantune.errors import InputError
from rantune.lora import count_parameters
from rantune.tasks import Task, get_task


class ServerInference:
    """Batched inference of a merged task model on the best available device.

    Parameters
    ----------
    model : merged fp32 task model (e.g. ``compression.merge.load_run(...).model``).
    task : its task (input/output shapes, label names).
    device : ``auto`` (CUDA if present, else CPU), ``cpu`` or ``cuda``.
    mode : torchao mode (see :data:`compression.quantize_server.SERVER_MODES`) or
        ``auto`` (per device).
    compile : ``torch.compile`` the model; ``None`` = on CUDA only.
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task | str,
        device: str | None = "auto",
        mode: str | None = "auto",
        compile: bool | None = None,
    ) -> None:
        self.task = get_task(task) if isinstance(task, str) else task
        self.parameters = count_parameters(model)
        self.server: ServerModel = quantize_for_server(model, mode, device, compile)
        self.source: dict = {}

    @classmethod
    def from_run(cls, run_dir: Path | str, **kwargs) -> ServerInference:
        """Load a run directory (global adapter merged into the base) and prepare it."""
        run = load_run(run_dir)
        service = cls(run.model, run.task, **kwargs)
        service.source = run.source_info()
        return service

    def predict(self, x: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """Outputs for float32 inputs ``[B, 2, A, S]`` (``[B, T, 2, A, S]`` for prediction).

        Raises
        ------
        ValueError
            On an empty batch or an input of the wrong rank.
        """
        rank = self.task.input_rank
        if x.ndim != rank or len(x) == 0:
            raise InputError(
                f"input of shape {list(x.shape)} does not fit task {self.task.name}: expected "
                f"{rank} axes with batch first and at least one row"
            )
        return self.server.predict(x, batch_size)

    def classify(self, x: np.ndarray | torch.Tensor) -> list[str]:
        """Label names of the argmax class (LoS task); beam index strings otherwise."""
        if self.task.regression:
            raise InputError("classify() is for classification tasks; use predict()")
        index = self.predict(x).argmax(axis=1)
        names = self.task.label_names
        return [names[i] if names else str(int(i)) for i in index]

    def describe(self) -> dict:
        """Device, mode, compile flag, parameters and source run of the served model."""
        return {
            "task": self.task.name,
            "device": str(self.server.device),
            "mode": self.server.mode,
            "dtype": str(self.server.dtype).removeprefix("torch."),
            "compiled": self.server.compiled,
            "parameters": self.parameters,
            "cuda_available": torch.cuda.is_available(),
            "source": self.source,
        }

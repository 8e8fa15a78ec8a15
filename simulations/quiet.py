"""Third-party import noise off at CLI start-up, unless ``rantune --verbose``.

Importing peft imports torchao, whose ``__init__`` logs "Failed to load ..._C_mxfp8...so"
and "..._C_cutlass_90a.abi3.so" (CUDA-only kernels) through the ``torchao`` logger, and
torchao's ``register_constant`` calls make torch log an ``_pytree`` deprecation through
``torch.utils._pytree``; torch's ONNX exporter logs "torchvision is not installed.
Skipping torchvision::nms" (ops this project never exports) on every export. All are
ordinary :mod:`logging` loggers: raising their level to ERROR before the import hides
those lines and nothing else (real errors still show).
Worker processes (``spawn``) call :func:`quiet_third_party` too; they inherit
``RANTUNE_VERBOSE`` from the CLI.
"""

from __future__ import annotations

import logging
import os

VERBOSE_ENV = "RANTUNE_VERBOSE"
NOISY_LOGGERS = ("torchao", "torch.utils._pytree", "torch.onnx._internal.exporter._registration")


def verbose_enabled() -> bool:
    """Whether ``rantune --verbose`` (or ``RANTUNE_VERBOSE=1``) asked for the noise."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes")


def quiet_third_party(verbose: bool | None = None) -> None:
    """Hide the import-time warnings of :data:`NOISY_LOGGERS` (``verbose`` shows them;
    ``None`` reads ``RANTUNE_VERBOSE``)."""
    if verbose is None:
        verbose = verbose_enabled()
    elif verbose:
        os.environ[VERBOSE_ENV] = "1"  # worker processes inherit it
    level = logging.NOTSET if verbose else logging.ERROR
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(level)

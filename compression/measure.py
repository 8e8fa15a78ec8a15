"""Latency of several models measured side by side (interleaved rounds).

On a shared CPU the load drifts over minutes; timing one model after another lets
that drift masquerade as a speed-up. Here every model gets its calls in short
turns, round after round (order reversed every other round), so all of them see
the same conditions; p50/p95 are taken over all of a model's calls.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import Tensor, nn

from rantune.compression.edge import session_options, summarize_latencies
from rantune.compression.export import INPUT_NAME
from rantune.errors import InputError

TORCH_REFERENCE = "torch-fp32-teacher"


def interleaved(
    calls: dict[str, Callable[[], object]], repeats: int, warmup: int, turns: int = 10
) -> dict[str, dict[str, float]]:
    """``{name: p50/p95/mean/runs}`` of each call, timed in ``turns`` interleaved rounds."""
    if repeats < 1:
        raise InputError(f"repeats={repeats} must be >= 1")
    for call in calls.values():
        for _ in range(warmup):
            call()
    per_turn = max(1, math.ceil(repeats / turns))
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    while min(len(t) for t in times.values()) < repeats:
        for name in names:
            call = calls[name]
            for _ in range(per_turn):
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
        names.reverse()
    return {name: summarize_latencies(t) for name, t in times.items()}


def latency_table(
    teacher: nn.Module,
    models: dict[str, Path],
    batches: dict[str, Tensor],
    threads: int = 1,
    repeats: int = 50,
    warmup: int = 5,
) -> dict[str, dict]:
    """p50/p95 of the PyTorch eager teacher and every ONNX model, per batch.

    Returns
    -------
    dict
        ``{name: {"b1": {"p50_ms", "p95_ms"}, "b64": {...}, "threads": n}}`` with
        ``name`` = :data:`TORCH_REFERENCE` or a key of ``models``.
    """
    sessions = {
        name: ort.InferenceSession(
            str(path), session_options(threads), providers=["CPUExecutionProvider"]
        )
        for name, path in models.items()
    }
    table: dict[str, dict] = {name: {"threads": threads} for name in [TORCH_REFERENCE, *models]}
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for label, x in batches.items():
                feed = {INPUT_NAME: np.ascontiguousarray(x.numpy())}
                calls: dict[str, Callable[[], object]] = {TORCH_REFERENCE: lambda x=x: teacher(x)}
                for name, session in sessions.items():
                    calls[name] = lambda s=session, f=feed: s.run(None, f)
                for name, stats in interleaved(calls, repeats, warmup).items():
                    table[name][label] = {"p50_ms": stats["p50_ms"], "p95_ms": stats["p95_ms"]}
    finally:
        torch.set_num_threads(previous)
    return table

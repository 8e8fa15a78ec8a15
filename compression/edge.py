"""The edge runtime, as the training side imports it: :mod:`rantune_edge.runtime`.

The code lives once, in the ``rantune_edge`` package (``edge/rantune_edge``), which
both the small ``rantune-edge`` distribution and ``rantune`` itself install; this
module re-exports it for ``rantune.compression`` users.
"""

from __future__ import annotations

from rantune_edge.io import model_input
from rantune_edge.runtime import (
    DEFAULT_MAX_BATCH,
    EdgeModel,
    session_options,
    summarize_latencies,
    time_calls,
)

__all__ = [
    "DEFAULT_MAX_BATCH",
    "EdgeModel",
    "model_input",
    "session_options",
    "summarize_latencies",
    "time_calls",
]

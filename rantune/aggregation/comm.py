"""Communication accounting: bytes that travel per round (tensor data only).

Sizes count tensor data as ``ArrayRecord.count_bytes()`` does (FlowerTune's measure),
so the same numbers come out whether a round ran through Flower or in-process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import Tensor

from rantune.aggregation.lora_keys import state_nbytes

MB = 1_000_000
"""Bytes per MB in every report (decimal megabytes)."""


@dataclass(frozen=True)
class RoundBytes:
    """Payload sizes of one round in bytes.

    Attributes
    ----------
    up : uploads summed over the participating clients.
    down : downloads summed over the participating clients.
    """

    up: int
    down: int

    def __add__(self, other: RoundBytes) -> RoundBytes:
        return RoundBytes(self.up + other.up, self.down + other.down)


def round_bytes(
    uploads: Sequence[Mapping[str, Tensor]],
    downloads: Sequence[Mapping[str, Tensor]] | Mapping[str, Tensor],
) -> RoundBytes:
    """Bytes of one round: every client's upload; ``downloads`` per client, or one payload broadcast to all uploaders."""
    up = sum(state_nbytes(s) for s in uploads)
    if isinstance(downloads, Mapping):
        down = state_nbytes(downloads) * len(uploads)
    else:
        down = sum(state_nbytes(s) for s in downloads)
    return RoundBytes(up=up, down=down)

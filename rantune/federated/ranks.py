"""Per-client LoRA ranks: from a node's ``lora-r`` or the run config's rank schedule.

A deployment sets each base station's rank in its node config (``lora-r``, e.g.
chosen from its compute budget). Simulations set ``lora.client-ranks = "4,8,16"``:
partition ``i`` trains rank ``ranks[i % len(ranks)]``; an empty schedule gives every
client ``lora.r``. A node config's ``lora-r`` wins over the schedule.

>>> parse_client_ranks("4, 8,16")
(4, 8, 16)
"""

from __future__ import annotations

from rantune.errors import InputError
from rantune.federated.run_config import RunConfig

KEY = "lora.client-ranks"


def parse_client_ranks(text: object) -> tuple[int, ...]:
    """``"4,8,16"`` -> ``(4, 8, 16)``; ``""`` -> ``()``. Raises ``ValueError`` with a hint."""
    if not isinstance(text, str):
        raise InputError(f'run config {KEY}={text!r} is invalid: expected a string like "4,8,16"')
    ranks = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise InputError(
                f"run config {KEY}={text!r} is invalid: {part!r} is not an integer >= 1 "
                '(write comma-separated ranks, e.g. "4,8,16")'
            )
        ranks.append(int(part))
    return tuple(ranks)


def rank_schedule(cfg: RunConfig) -> tuple[int, ...]:
    """The run's schedule (empty when every client trains ``lora.r``)."""
    return parse_client_ranks(cfg.flat_dict().get(KEY, ""))


def scheduled_rank(cfg: RunConfig, partition_id: int) -> int:
    """LoRA rank of partition ``partition_id`` under the schedule (``lora.r`` without one)."""
    schedule = rank_schedule(cfg)
    return schedule[partition_id % len(schedule)] if schedule else cfg.lora.r


def client_ranks(cfg: RunConfig, num_clients: int) -> dict[int, int]:
    """``{partition id: rank}`` for every partition (schedule or ``lora.r``)."""
    return {pid: scheduled_rank(cfg, pid) for pid in range(num_clients)}

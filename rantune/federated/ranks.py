"""Per-client LoRA ranks: from a node's ``lora-r`` or the run config's rank schedule.

A deployment sets each base station's rank in its node config (``lora-r``, e.g.
chosen from its compute budget). Simulations set ``lora.client-ranks = "4,8,16"``:
partition ``i`` trains rank ``ranks[i % len(ranks)]``; an empty schedule gives every
client ``lora.r``. A node config's ``lora-r`` wins over the schedule.

>>> from rantune.federated.run_config import resolve_run_config
>>> scheduled_rank(resolve_run_config({"lora.client-ranks": "4, 8,16"}), 4)
8
"""

from __future__ import annotations

from rantune.federated.run_config import RunConfig


def scheduled_rank(cfg: RunConfig, partition_id: int) -> int:
    """LoRA rank of partition ``partition_id`` under the schedule (``lora.r`` without one)."""
    schedule = cfg.lora.client_ranks
    return schedule[partition_id % len(schedule)] if schedule else cfg.lora.r


def client_ranks(cfg: RunConfig, num_clients: int) -> dict[int, int]:
    """``{partition id: rank}`` for every partition (schedule or ``lora.r``)."""
    return {pid: scheduled_rank(cfg, pid) for pid in range(num_clients)}

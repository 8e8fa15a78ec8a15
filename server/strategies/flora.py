"""``flora``: FLoRA (Wang et al. 2024): stack client adapters, exact aggregate, mixed ranks.

Round flow on Flower's FedAvg sampling:

1. the server asks sampled nodes their rank once (``query``) and sends each node
   fresh adapters of its own rank (seeded ``lora_A``, zero ``lora_B``), the global
   head and the cumulative dense update ``{prefix}.dense_delta`` ``[d_out, d_in]``;
2. the client rebuilds its model as ``W0 + cumulative`` (pretrained base plus every
   aggregated update so far; :mod:`rantune.federated.downlink`), trains the fresh
   adapters + head and sends them back (never the dense part: ``freeze_pattern``);
3. the server stacks the adapters along the rank dimension
   (:func:`rantune.aggregation.flora_aggregate`) so the update is exactly
   ``sum_i w_i (alpha / r_i) B_i A_i`` and adds it to the cumulative delta.

The downlink is dense (fixed size, independent of the number of clients) and
cumulative, so partial participation needs no catch-up logic. The server's global
state holds the head and rank-``lora.r`` adapters that stay at their zero-B init;
the model is ``W0 + cumulative`` + head (evaluated with :mod:`server.strategies.hooks`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid

from rantune.aggregation import derive_seed, flora_aggregate, group_state, seeded_lora_a
from rantune.aggregation.lora_keys import a_key, b_key
from rantune.federated.messages import record_to_state
from rantune.federated.run_config import RunConfig, Scalar
from rantune.server.strategies import StrategySpec, register
from rantune.server.strategies.lora_base import (
    DenseDeltaMixin,
    LoraStrategy,
    client_updates,
    to_record,
)


def fresh_adapters(
    shapes: Mapping[str, tuple[int, int]], rank: int, seed: int
) -> dict[str, np.ndarray]:
    """Fresh adapters of ``rank`` per module: A ``[rank, d_in]`` seeded, B ``[d_out, rank]`` zero.

    ``shapes``: ``{module prefix: (d_in, d_out)}``.
    """
    out = {}
    for prefix, (d_in, d_out) in shapes.items():
        out[a_key(prefix)] = seeded_lora_a((rank, d_in), seed, a_key(prefix)).numpy()
        out[b_key(prefix)] = np.zeros((d_out, rank), dtype=np.float32)
    return out


class FLoRA(DenseDeltaMixin, LoraStrategy):
    """FLoRA with a cumulative dense downlink."""

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        self._init_dense()

    def _payloads(
        self,
        server_round: int,
        arrays: ArrayRecord,
        messages,
        grid: Grid,
        kind: str,
        adapters: bool,
    ) -> list[Message]:
        state = record_to_state(arrays)
        groups = group_state(state)
        shapes = {p: (pair.d_in, pair.d_out) for p, pair in groups.pairs.items()}
        common = {**{k: v.numpy() for k, v in groups.other.items()}, **self.dense_state()}
        messages = list(messages)
        info = (
            self.query_nodes(grid, [m.metadata.dst_node_id for m in messages]) if adapters else {}
        )
        out = []
        for message in messages:
            node = message.metadata.dst_node_id
            payload = dict(common)
            if adapters:
                if node not in info:
                    continue
                pid, rank = info[node]
                seed = derive_seed("flora-fresh", self.cfg.seed, server_round, pid) & 0x7FFFFFFF
                payload.update(fresh_adapters(shapes, rank, seed))
            out.append(self.message(node, payload, message.content.config_records["config"], kind))
        return out

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = super().configure_train(server_round, arrays, config, grid)
        return self._payloads(server_round, arrays, messages, grid, MessageType.TRAIN, True)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        # The global model is W0 + cumulative + head: adapters (zero B) need not travel.
        messages = super().configure_evaluate(server_round, arrays, config, grid)
        return self._payloads(server_round, arrays, messages, grid, MessageType.EVALUATE, False)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        aggregate = flora_aggregate(client_updates(valid), alpha=self.cfg.lora.alpha)
        self.add_dense(aggregate.dense_deltas())
        return to_record(aggregate.other), self.aggregate_metrics(valid)


def _factory(cfg: RunConfig, params: Mapping[str, Scalar]) -> FLoRA:
    return FLoRA(cfg)


register(
    StrategySpec(
        "flora",
        _factory,
        (),
        "FLoRA: adapters stacked along the rank (exact sum of B_i A_i), mixed ranks, "
        "dense downlink",
        heterogeneous_ranks=True,
        lora_aware=True,
    )
)

"""``flora``: FLoRA (Wang et al. 2024): stack client adapters, exact aggregate, mixed ranks.

Round flow:

1. the loop asks the nodes their rank once (``needs_ranks``); each sampled node
   receives fresh adapters of its own rank (seeded ``lora_A``, zero ``lora_B``), the
   global head and the cumulative dense update ``{prefix}.dense_delta`` ``[d_out, d_in]``;
2. the client rebuilds its model as ``W0 + cumulative`` (pretrained base plus every
   aggregated update so far; :mod:`rantune.federated.downlink`), trains the fresh
   adapters + head and sends them back (never the dense part: ``freeze``);
3. the server stacks the adapters along the rank dimension
   (:func:`rantune.aggregation.flora_aggregate`) so the update is exactly
   ``sum_i w_i (alpha / r_i) B_i A_i`` and adds it to the cumulative delta.

The downlink is dense (fixed size, independent of the number of clients) and
cumulative, so partial participation needs no catch-up logic. The server's global
state holds the head and rank-``lora.r`` adapters that stay at their zero-B init;
the model is ``W0 + cumulative`` + head (evaluated with :mod:`server.strategies.hooks`).
Adapters are re-initialised every round, so compressed-update error feedback is
refused (``reinitializes_adapters``).
"""

from __future__ import annotations

from collections.abc import Mapping

from rantune.aggregation import (
    ClientUpdate,
    derive_seed,
    flora_aggregate,
    fresh_adapters,
    group_state,
)
from rantune.server.strategies.registry import StrategySpec
from rantune.server.strategies.template import TRAIN, DenseLoraRule, Node, Payload, Round, State

DESCRIPTION = (
    "FLoRA: adapters stacked along the rank (exact sum of B_i A_i), mixed ranks, dense downlink"
)


class FLoRA(DenseLoraRule):
    """FLoRA with a cumulative dense downlink."""

    needs_ranks = True

    def payload(self, rnd: Round, node: Node) -> Payload:
        groups = group_state(rnd.state)
        payload = {**groups.other, **self.cumulative.downlink()}
        if rnd.phase == TRAIN:  # evaluation: W0 + cumulative + head; zero-B adapters stay home
            seed = derive_seed("flora-fresh", self.seed, rnd.number, node.partition_id)
            shapes = {p: (pair.d_in, pair.d_out) for p, pair in groups.pairs.items()}
            payload.update(fresh_adapters(shapes, node.rank, seed & 0x7FFFFFFF))
        return Payload(payload)

    def aggregate(self, updates: list[ClientUpdate], state: State) -> Mapping[str, object]:
        aggregate = flora_aggregate(updates, alpha=self.lora.alpha)
        self.cumulative.add(aggregate.dense_deltas())
        return aggregate.other


SPECS = (
    StrategySpec(
        "flora",
        FLoRA.from_config,
        (),
        DESCRIPTION,
        heterogeneous_ranks=True,
        lora_aware=True,
        reinitializes_adapters=True,
    ),
)

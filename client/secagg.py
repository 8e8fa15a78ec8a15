"""Client side of SecAgg+: Flower's ``secaggplus_mod`` around rantune's train handler.

Flower 1.41 ships SecAgg+ only for the legacy workflow: the server
(``server/secagg.py``) runs ``SecAggPlusWorkflow``, which sends four kinds of
``train`` messages per round (setup, share keys, collect masked vectors, unmask)
and, in the third, a legacy ``FitIns`` record set. On the client:

- :func:`secagg_mod` runs ``secaggplus_mod`` for messages that carry the SecAgg+
  config record and passes everything else through;
- :func:`legacy_fit_mod` turns the ``FitIns`` into rantune's train message
  (``"arrays"`` keyed by adapter/head names, ``"config"``), calls the normal train
  handler, and turns its reply into the ``FitRes`` that ``secaggplus_mod`` masks.
  The legacy format carries no tensor names: both sides order them by name (the
  model's ``trainable_state`` keys, sorted) and the server sends a hash of the
  names, checked here.

:func:`default_mods` is the mod list of the shipped ClientApp (SecAgg+, then the
FitIns adapter, then DP clipping); each is inert unless the run asks for it.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat

from rantune.client.jobs import JOBS
from rantune.client.privacy import dp_clipping_mod, is_train
from rantune.errors import InputError
from rantune.federated.messages import ARRAYS, CONFIG, NUM_EXAMPLES, state_to_record
from rantune.federated.privacy import KEYS_HASH, keys_hash
from rantune.seeding import derive_seed

FITINS_ARRAYS = "fitins.parameters"


def secagg_mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """``secaggplus_mod`` for SecAgg+ protocol messages; a pass-through otherwise."""
    if is_train(message) and RECORD_KEY_CONFIGS in message.content.config_records:
        return secaggplus_mod(message, context, call_next)
    return call_next(message, context)


def legacy_fit_mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Serve a legacy ``FitIns`` (as SecAgg+ sends it) with rantune's train handler."""
    if not is_train(message) or FITINS_ARRAYS not in message.content.array_records:
        return call_next(message, context)
    original = message.content
    fitins = compat.recorddict_to_fitins(original, keep_input=True)
    arrays = parameters_to_ndarrays(fitins.parameters)
    config = dict(fitins.config)
    # The tensors a FitIns carries, in order: the node's model's trainable keys, sorted.
    job = JOBS.job(context)
    keys = job.trainable_keys
    if len(keys) != len(arrays) or config.get(KEYS_HASH) not in (None, keys_hash(keys)):
        raise InputError(
            f"SecAgg+ FitIns holds {len(arrays)} tensors but this node's model has "
            f"{len(keys)} adapter/head tensors (or other names): server and client must "
            "run the same model and LoRA config"
        )
    config.pop(KEYS_HASH, None)
    message.content = RecordDict(
        {
            ARRAYS: state_to_record(dict(zip(keys, arrays, strict=True))),
            CONFIG: ConfigRecord(config),
        }
    )
    try:
        reply = call_next(message, context)
    finally:
        message.content = original
    if reply.has_error():
        return reply
    content = reply.content
    trained = next(iter(content.array_records.values()))
    metrics = dict(next(iter(content.metric_records.values())))
    if sorted(trained) != keys:
        raise InputError("SecAgg+ needs the full update: the reply lacks some tensors")
    fitres = FitRes(
        status=Status(code=Code.OK, message=""),
        parameters=ndarrays_to_parameters([trained[k].numpy() for k in keys]),
        num_examples=int(metrics.pop(NUM_EXAMPLES)),
        metrics={k: v for k, v in metrics.items() if isinstance(v, int | float)},
    )
    # secaggplus_mod quantizes with stochastic rounding from numpy's global generator:
    # seed it per (run, round, base station) so SecAgg+ runs are repeatable.
    server_round = int(config.get("server-round", 0))
    np.random.seed(
        derive_seed(job.cfg.seed, "secagg-quantize", server_round, job.node.partition_id)
    )
    reply.content = compat.fitres_to_recorddict(fitres, keep_input=True)
    return reply


def default_mods() -> list:
    """Mods of the shipped ClientApp: SecAgg+, the FitIns adapter, DP clipping."""
    return [secagg_mod, legacy_fit_mod, dp_clipping_mod]

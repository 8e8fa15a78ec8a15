"""Flower ServerApp of rantune: ``[tool.flwr.app.components] serverapp = "rantune.server.app:app"``.

A thin adapter: parse ``context.run_config`` once, build the rule by name
(:mod:`server.strategies`) and hand both to the round loop
(:func:`server.loop.run_server`). ``dp.mode`` runs the rule inside a Flower DP
wrapper with Poisson client sampling and accounting (:mod:`server.privacy`);
``secagg.enabled`` runs the training rounds through SecAgg+ (:mod:`server.secagg`). The same ``main`` runs
under ``flwr run`` (Ray simulation or deployment) and in the in-process engine of
``simulations.engine``.
"""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from rantune.federated.run_config import parse_run_config
from rantune.server.loop import run_server
from rantune.server.privacy import with_privacy
from rantune.server.secagg import run_secagg_server, secagg_enabled
from rantune.server.strategies import build_strategy

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run (or resume) the federated LoRA fine-tuning described by the run config."""
    cfg = parse_run_config(context.run_config)
    rule = with_privacy(cfg, build_strategy(cfg))  # dp.mode (server/privacy.py)
    if secagg_enabled(cfg):  # secagg.enabled: SecAgg+ training rounds (server/secagg.py)
        run_secagg_server(grid, cfg, rule)
        return
    run_server(grid, cfg, rule)

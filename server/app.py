"""Flower ServerApp of rantune: ``[tool.flwr.app.components] serverapp = "server.app:app"``.

A thin adapter: parse ``context.run_config`` once, build the strategy by name and
hand both to the round loop (:func:`server.loop.run_server`). The same ``main`` runs
under ``flwr run`` (Ray simulation or deployment) and in the in-process engine of
``simulations.engine``.
"""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from rantune.federated.run_config import parse_run_config
from server.loop import run_server
from server.strategies import build_strategy

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run (or resume) the federated LoRA fine-tuning described by the run config."""
    cfg = parse_run_config(context.run_config)
    strategy = build_strategy(cfg)
    run_server(grid, cfg, strategy)

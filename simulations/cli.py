"""The ``rantune`` command: one typer app, one module per command group."""

from __future__ import annotations

import os

import typer

from rantune.simulations.commands import compare as compare_command
from rantune.simulations.commands import compress as compress_command
from rantune.simulations.commands import data as data_command
from rantune.simulations.commands import demo as demo_command
from rantune.simulations.commands import edge as edge_command
from rantune.simulations.commands import federation as federation_command
from rantune.simulations.commands import pretrain as pretrain_command
from rantune.simulations.commands import simulate as simulate_command
from rantune.simulations.commands import train as train_command
from rantune.simulations.errors import DEBUG_ENV
from rantune.simulations.quiet import quiet_third_party

quiet_third_party()  # before any command imports peft (and with it torchao)

app = typer.Typer(
    name="rantune",
    help="Federated LoRA fine-tuning and edge deployment of wireless channel foundation models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
demo_command.register(app)
data_command.register(app)
compress_command.register(app)
edge_command.register(app)
pretrain_command.register(app)
train_command.register(app)
simulate_command.register(app)
compare_command.register(app)
federation_command.register(app)


@app.callback()
def _root(
    debug: bool = typer.Option(
        False, "--debug", help="Show the traceback of input errors too (RANTUNE_DEBUG=1)."
    ),
    verbose: bool = typer.Option(
        False, "--verbose", help="Show third-party import warnings (torchao, torch)."
    ),
) -> None:
    """Federated LoRA fine-tuning and edge deployment of wireless channel foundation models."""
    if debug:
        os.environ[DEBUG_ENV] = "1"
    quiet_third_party(verbose or None)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

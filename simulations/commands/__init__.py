"""The ``rantune`` subcommands, one module each; shared option handling below."""

from __future__ import annotations

import typer

from rantune.errors import InputError


def command_group(app: typer.Typer, name: str, help_text: str) -> typer.Typer:
    """A ``rantune NAME ...`` sub-command group added to ``app`` (help when called bare)."""
    group = typer.Typer(name=name, help=help_text, no_args_is_help=True)
    app.add_typer(group, name=name)
    return group


def set_torch_threads(threads: int) -> None:
    """Apply a command's ``--threads`` (torch CPU threads, >= 1)."""
    import torch

    if threads < 1:
        raise InputError(f"--threads={threads} is invalid: expected >= 1")
    torch.set_num_threads(threads)

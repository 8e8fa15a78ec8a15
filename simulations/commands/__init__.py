"""The ``rantune`` subcommands, one module each; shared option handling below."""

from __future__ import annotations

from rantune.errors import InputError


def set_torch_threads(threads: int) -> None:
    """Apply a command's ``--threads`` (torch CPU threads, >= 1)."""
    import torch

    if threads < 1:
        raise InputError(f"--threads={threads} is invalid: expected >= 1")
    torch.set_num_threads(threads)

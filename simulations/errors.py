"""One-line CLI errors: the project's own :class:`~rantune.errors.InputError` becomes a
message plus a hint and exit status 2; anything else (a bug, a failure inside a
dependency) keeps its traceback. ``rantune --debug`` (or ``RANTUNE_DEBUG=1``) shows
the traceback of input errors too."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from rantune.errors import InputError
from rantune_edge.errors import EdgeError

err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on stderr and exit with ``code``."""
    # escape: messages name TOML tables and array keys in brackets ([radio], [csi])
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


DEBUG_ENV = "RANTUNE_DEBUG"


def debug_enabled() -> bool:
    """Whether input errors keep their traceback (``rantune --debug`` sets the variable)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes")


def cli_errors(func: Callable) -> Callable:
    """Decorator: :class:`InputError` (and the edge runtime's :class:`EdgeError`) ->
    ``error: message`` on stderr and exit 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (InputError, EdgeError) as err:
            if debug_enabled():
                raise
            fail(str(err))
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: finished work is kept; rerun to resume")
            sys.exit(130)

    return wrapper


def ensure_output_dir(path: Path) -> Path:
    """Create ``path`` as a directory or fail clearly if it is a file or unwritable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(
            f"--out {path} is a file; give a directory path (it is created if missing)"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".rantune-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise InputError(
            f"--out {path} is not writable ({err.strerror}); choose another directory"
        ) from err
    return path

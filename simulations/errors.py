"""One-line CLI errors: every command turns ``ValueError`` into a message plus a hint."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console

err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on stderr and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def cli_errors(func: Callable) -> Callable:
    """Decorator: ``ValueError``/``FileNotFoundError``/``PermissionError`` -> clean exit 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (ValueError, FileNotFoundError, PermissionError, NotADirectoryError) as err:
            fail(str(err))
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: finished work is kept; rerun to resume")
            sys.exit(130)

    return wrapper


def ensure_output_dir(path: Path) -> Path:
    """Create ``path`` as a directory or fail clearly if it is a file or unwritable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(
            f"--out {path} is a file; give a directory path (it is created if missing)"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".rantune-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ValueError(
            f"--out {path} is not writable ({err.strerror}); choose another directory"
        ) from err
    return path

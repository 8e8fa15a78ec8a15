"""The ``flwr`` CLI's view of a federation: ``[superlink.NAME]`` in ``$FLWR_HOME/config.toml``.

Flower 1.41 keeps connections out of ``pyproject.toml``; ``flwr run . NAME``,
``flwr supernode register KEY NAME`` and ``flwr supernode list NAME`` read::

    [superlink.NAME]
    address = "127.0.0.1:PORT"                  # SuperLink --port (Control API)
    root-certificates = "/abs/path/ca.pem"      # TLS; or: insecure = true
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import tomli_w

from rantune.errors import InputError
from rantune.simulations.federation.files import atomic_write

CONFIG_FILE = "config.toml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def flwr_home(explicit: Path | None = None) -> Path:
    """Return the Flower CLI home: ``explicit``, else ``$FLWR_HOME``, else ``~/.flwr``."""
    if explicit is not None:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get("FLWR_HOME")
    return Path(env).expanduser().resolve() if env else Path.home() / ".flwr"


def check_connection_name(name: str) -> str:
    """Return ``name`` if it is usable as a TOML table key and ``flwr`` argument."""
    if not _NAME.match(name):
        raise InputError(
            f"invalid connection name {name!r}; use letters, digits, '_' and '-' "
            "(e.g. --name rantune-local)"
        )
    return name


def _read(path: Path) -> dict:
    if not path.exists():
        # Start from what `flwr` writes when it creates the file, so creating it here
        # does not hide Flower's default connections (`local`, `supergrid`).
        try:
            from flwr.cli.constant import DEFAULT_FLOWER_CONFIG_TOML

            return tomllib.loads(DEFAULT_FLOWER_CONFIG_TOML)
        except (ImportError, tomllib.TOMLDecodeError):
            return {"superlink": {}}
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise InputError(
            f"{path} is not valid TOML ({err}); fix or remove it (Flower recreates defaults)"
        ) from err


def write_connection(
    home: Path, name: str, address: str, root_certificates: Path | None
) -> dict[str, object]:
    """Add or replace ``[superlink.NAME]`` in ``home/config.toml`` (atomic write).

    Parameters
    ----------
    home : Path
        Flower CLI home (see :func:`flwr_home`).
    name : str
        Connection name for ``flwr run . NAME``.
    address : str
        ``host:port`` of the SuperLink.
    root_certificates : Path, optional
        CA certificate for TLS (stored as an absolute path, as Flower requires);
        ``None`` writes ``insecure = true``.

    Returns
    -------
    dict
        The table that was written.
    """
    check_connection_name(name)
    path = Path(home) / CONFIG_FILE
    config = _read(path)
    superlink = config.setdefault("superlink", {})
    if not isinstance(superlink, dict):
        raise InputError(f"{path}: 'superlink' is not a table; fix or remove the file")
    table: dict[str, object] = {"address": address}
    if root_certificates is None:
        table["insecure"] = True
    else:
        table["root-certificates"] = str(Path(root_certificates).resolve())
    superlink[name] = table
    atomic_write(path, tomli_w.dumps(config), 0o600)
    return table


def remove_connection(home: Path, name: str, address: str) -> bool:
    """Remove ``[superlink.NAME]`` if it still points at ``address``; return whether it did."""
    path = Path(home) / CONFIG_FILE
    if not path.exists():
        return False
    config = _read(path)
    superlink = config.get("superlink", {})
    table = superlink.get(name) if isinstance(superlink, dict) else None
    if not isinstance(table, dict) or table.get("address") != address:
        return False
    del superlink[name]
    if superlink.get("default") == name:
        del superlink["default"]
    atomic_write(path, tomli_w.dumps(config), 0o600)
    return True


def read_connection(home: Path, name: str) -> dict | None:
    """Return the ``[superlink.NAME]`` table, or ``None`` if absent."""
    path = Path(home) / CONFIG_FILE
    if not path.exists():
        return None
    table = _read(path).get("superlink", {}).get(name)
    return table if isinstance(table, dict) else None

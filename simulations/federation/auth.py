"""SuperNode authentication keys and their registration with a SuperLink.

Flower 1.41 authenticates SuperNodes with EC keys on a NIST curve in OpenSSH
format (what ``ssh-keygen -t ecdsa -b 384`` writes):

- ``flower-supernode --auth-supernode-private-key node.key`` reads the private
  key with ``load_ssh_private_key`` (the public key is derived from it);
- ``flwr supernode register node.pub <connection>`` sends the public key
  (``load_ssh_public_key``) to the SuperLink's Control API;
- ``flower-superlink --enable-supernode-auth`` (TLS required) admits only
  SuperNodes whose public key was registered.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from rantune.errors import InputError
from rantune.simulations.federation.files import atomic_write

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class NodeKeys:
    """One SuperNode's key pair.

    Attributes
    ----------
    name : str
        Node name (also the key comment and the ``--name`` it is registered under).
    private_key : Path
        OpenSSH private key (mode 0600): ``--auth-supernode-private-key``.
    public_key : Path
        OpenSSH public key line: ``flwr supernode register PUBLIC_KEY``.
    """

    name: str
    private_key: Path
    public_key: Path


def generate_node_keys(out_dir: Path, name: str) -> NodeKeys:
    """Create an EC P-384 key pair for one SuperNode under ``out_dir``.

    Parameters
    ----------
    out_dir : Path
        Directory for ``<name>.key`` (0600) and ``<name>.pub`` (created if missing).
    name : str
        Node name: letters, digits, ``_ . -``; at most 64 characters.

    Returns
    -------
    NodeKeys
        Resolved paths of the written files.
    """
    if not _NAME.match(name):
        raise InputError(
            f"invalid node name {name!r}; use letters, digits, '_', '.', '-' (e.g. 'bs-0')"
        )
    out_dir = Path(out_dir)
    key = ec.generate_private_key(ec.SECP384R1())
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public_line = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    private_path = atomic_write(out_dir / f"{name}.key", private_pem, 0o600)
    public_path = atomic_write(out_dir / f"{name}.pub", public_line + f" {name}\n".encode(), 0o644)
    return NodeKeys(name=name, private_key=private_path.resolve(), public_key=public_path.resolve())


def load_node_keys(private_key: Path) -> ec.EllipticCurvePrivateKey:
    """Load a SuperNode private key the way ``flower-supernode`` does, or fail clearly."""
    path = Path(private_key)
    if not path.is_file():
        raise InputError(
            f"SuperNode private key {path} does not exist; generate one with "
            "`ssh-keygen -t ecdsa -b 384 -N '' -f node.key` or let "
            "`rantune federation up --auth` create it"
        )
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as err:
        raise InputError(
            f"{path} is not an unencrypted OpenSSH private key ({err}); Flower 1.41 expects "
            "an ECDSA key in OpenSSH format"
        ) from err
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InputError(f"{path} is a {type(key).__name__}; SuperNode auth needs an EC key")
    return key


def public_key_of(private_key: Path) -> bytes:
    """Return the OpenSSH public key line (no comment) that belongs to ``private_key``."""
    return (
        load_node_keys(private_key)
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )


def register_node(
    public_key: Path,
    connection: str,
    flwr_home: Path,
    flwr_bin: str = "flwr",
    name: str | None = None,
    timeout_s: float = 60.0,
) -> int:
    """Register a SuperNode public key with a running SuperLink.

    Runs ``flwr supernode register PUBLIC_KEY CONNECTION --format json`` with
    ``FLWR_HOME=flwr_home``, so the SuperLink is reached through the
    ``[superlink.CONNECTION]`` table there (address, TLS root certificate).

    Parameters
    ----------
    public_key : Path
        OpenSSH public key file.
    connection : str
        Name of the SuperLink connection in ``$FLWR_HOME/config.toml``.
    flwr_home : Path
        Flower CLI home directory holding ``config.toml``.
    flwr_bin : str
        The ``flwr`` executable.
    name : str, optional
        Name shown by ``flwr supernode list``.
    timeout_s : float
        Upper bound for the CLI call.

    Returns
    -------
    int
        The node id the SuperLink assigned.

    Raises
    ------
    RuntimeError
        If the CLI fails or the SuperLink refuses the key (message includes its output).
    """
    command = [flwr_bin, "supernode", "register", str(public_key), connection, "--format", "json"]
    if name is not None:
        command += ["--name", name]
    result = run_flwr(command, flwr_home, timeout_s)
    payload = _last_json(result.stdout)
    if result.returncode != 0 or not payload or not payload.get("success"):
        raise RuntimeError(
            f"`{' '.join(command)}` failed (exit {result.returncode}): "
            f"{(result.stdout + result.stderr).strip()[-800:]}"
        )
    return int(payload["node-id"])


def list_nodes(
    connection: str, flwr_home: Path, flwr_bin: str = "flwr", timeout_s: float = 60.0
) -> list[dict]:
    """Return ``flwr supernode list CONNECTION --format json`` as a list of dicts.

    Each dict has at least ``node-id`` and ``status`` (``registered``,
    ``online``, ``offline``, ``unregistered``).
    """
    command = [flwr_bin, "supernode", "list", connection, "--format", "json"]
    result = run_flwr(command, flwr_home, timeout_s)
    payload = _last_json(result.stdout)
    if result.returncode != 0 or payload is None or not payload.get("success", False):
        raise RuntimeError(
            f"`{' '.join(command)}` failed (exit {result.returncode}): "
            f"{(result.stdout + result.stderr).strip()[-800:]}"
        )
    return list(payload.get("nodes", []))


def run_flwr(command: list[str], flwr_home: Path, timeout_s: float) -> subprocess.CompletedProcess:
    """Run a ``flwr`` CLI command with ``FLWR_HOME`` set and output captured."""
    env = {**os.environ, "FLWR_HOME": str(flwr_home), "NO_COLOR": "1", "TERM": "dumb"}
    try:
        return subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except FileNotFoundError as err:
        raise InputError(
            f"{command[0]!r} not found; install flwr (`pip install 'flwr[simulation]==1.41.0'`) "
            "or activate the environment that has it"
        ) from err


def _last_json(text: str) -> dict | None:
    """Parse the JSON object printed last on stdout (the CLI may print lines before it)."""
    start = text.find("{")
    while start != -1:
        try:
            value = json.loads(text[start:])
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        return value if isinstance(value, dict) else None
    return None

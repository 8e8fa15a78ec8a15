"""Ed25519 signatures over an artifact's ``manifest.json`` (which carries the model's sha256).

The sha256 in the manifest only catches accidents: whoever can replace the model can
rewrite the manifest. A signature made with the builder's private key ties the manifest,
and through its sha256 the model, to that key; a device holding the public key refuses
any other manifest. The signature is detached, in ``signature.json`` next to the
manifest, over the manifest file's exact bytes::

    {"algorithm": "ed25519", "signed_file": "manifest.json",
     "public_key_sha256": "<hex of the raw 32-byte public key>", "signature": "<base64>"}

Keys are PEM files: a PKCS#8 private key (``rantune-edge keygen`` or
``openssl genpkey -algorithm ed25519 -out key.pem``) and its SubjectPublicKeyInfo public
key (``openssl pkey -in key.pem -pubout -out key.pub.pem``). ``cryptography`` is needed
only here (``pip install 'rantune-edge[verify]'``); the runtime imports it lazily.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from pathlib import Path

from rantune_edge.errors import EdgeError
from rantune_edge.manifest import MANIFEST_NAME, atomic_write, read_manifest_bytes

SIGNATURE_NAME = "signature.json"
ALGORITHM = "ed25519"
PASSPHRASE_ENV = "RANTUNE_KEY_PASSPHRASE"
_INSTALL_HINT = "signature checks need the cryptography package: pip install 'rantune-edge[verify]'"


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as err:
        raise EdgeError(_INSTALL_HINT) from err
    return serialization, ed25519, InvalidSignature


def _read_key_file(path: Path | str, what: str) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise EdgeError(f"{what} {path} does not exist: give a PEM file")
    try:
        return path.read_bytes()
    except OSError as err:
        raise EdgeError(f"{what} {path} cannot be read ({err.strerror})") from err


def load_private_key(path: Path | str, passphrase: bytes | None = None):
    """The Ed25519 private key in PEM file ``path`` (``passphrase`` for an encrypted one;
    by default from ``$RANTUNE_KEY_PASSPHRASE`` if set)."""
    serialization, ed25519, _ = _crypto()
    if passphrase is None and os.environ.get(PASSPHRASE_ENV):
        passphrase = os.environ[PASSPHRASE_ENV].encode()
    data = _read_key_file(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError as err:  # encrypted without a passphrase, or a passphrase for a plain key
        raise EdgeError(
            f"signing key {path}: {err} (set ${PASSPHRASE_ENV} for an encrypted key)"
        ) from err
    except ValueError as err:
        raise EdgeError(
            f"signing key {path} is not a readable PEM private key ({err}): create one with "
            "rantune-edge keygen or openssl genpkey -algorithm ed25519"
        ) from err
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise EdgeError(
            f"signing key {path} is a {type(key).__name__}, not an Ed25519 key: create one "
            "with rantune-edge keygen or openssl genpkey -algorithm ed25519"
        )
    return key


def load_public_key(path: Path | str):
    """The Ed25519 public key in PEM file ``path``."""
    serialization, ed25519, _ = _crypto()
    data = _read_key_file(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as err:
        raise EdgeError(
            f"public key {path} is not a readable PEM public key ({err}): export it with "
            "rantune-edge keygen or openssl pkey -in key.pem -pubout"
        ) from err
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise EdgeError(f"public key {path} is a {type(key).__name__}, not an Ed25519 key")
    return key


def fingerprint(public_key) -> str:
    """Hex sha256 of the raw 32-byte public key (names the key in ``signature.json``)."""
    serialization, _, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def sign_artifact(directory: Path | str, private_key) -> Path:
    """Sign ``directory/manifest.json``; writes ``directory/signature.json`` atomically."""
    data, _ = read_manifest_bytes(directory)
    payload = {
        "algorithm": ALGORITHM,
        "signed_file": MANIFEST_NAME,
        "public_key_sha256": fingerprint(private_key.public_key()),
        "signature": base64.b64encode(private_key.sign(data)).decode("ascii"),
    }
    path = Path(directory) / SIGNATURE_NAME
    atomic_write(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())
    return path


def is_signed(directory: Path | str) -> bool:
    return (Path(directory) / SIGNATURE_NAME).exists()


def _read_signature(directory: Path) -> dict:
    path = directory / SIGNATURE_NAME
    if not path.is_file():
        raise EdgeError(
            f"artifact {directory} is not signed (no {SIGNATURE_NAME}) but a public key was "
            "given: refusing it; sign it with rantune compress --sign KEY"
        )
    try:
        payload = json.loads(path.read_text())
        signature = base64.b64decode(payload["signature"], validate=True)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, binascii.Error) as err:
        raise EdgeError(f"{path} is damaged ({err}): refusing the artifact") from err
    if payload.get("algorithm") != ALGORITHM or payload.get("signed_file") != MANIFEST_NAME:
        raise EdgeError(
            f"{path} is a {payload.get('algorithm')!r} signature of "
            f"{payload.get('signed_file')!r}; this runtime checks {ALGORITHM} over {MANIFEST_NAME}"
        )
    return {**payload, "signature": signature}


def verify_manifest_signature(directory: Path | str, public_key, manifest_bytes: bytes) -> str:
    """Check ``signature.json`` over ``manifest_bytes`` with ``public_key``.

    Returns the key's fingerprint. Raises :class:`EdgeError` when the artifact is
    unsigned, the signature file is damaged, or the signature does not verify (the
    manifest was changed, or it was signed by another key).
    """
    _, _, invalid = _crypto()
    directory = Path(directory)
    payload = _read_signature(directory)
    key_id = fingerprint(public_key)
    try:
        public_key.verify(payload["signature"], manifest_bytes)
    except invalid as err:
        other_key = payload.get("public_key_sha256") not in (None, key_id)
        reason = (
            f"it was signed by another key ({str(payload['public_key_sha256'])[:12]}..., "
            f"given {key_id[:12]}...)"
            if other_key
            else "the manifest was changed after signing"
        )
        raise EdgeError(
            f"artifact {directory}: the signature of {MANIFEST_NAME} does not verify with the "
            f"given public key: {reason}; refusing it"
        ) from err
    return key_id


def generate_keypair(private_path: Path | str, public_path: Path | str | None = None) -> tuple:
    """Write a new Ed25519 private key (PEM, mode 0600) and its public key (PEM).

    ``public_path`` defaults to ``<private_path stem>.pub.pem``. Refuses to overwrite an
    existing file. Returns ``(private_path, public_path)``.
    """
    serialization, ed25519, _ = _crypto()
    private_path = Path(private_path)
    public_path = (
        Path(public_path)
        if public_path is not None
        else private_path.with_name(private_path.name.removesuffix(".pem") + ".pub.pem")
    )
    for path in (private_path, public_path):
        if path.exists():
            raise EdgeError(f"{path} exists: keygen never overwrites a key; choose another path")
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    atomic_write(public_path, public_pem)
    return private_path, public_path

"""TLS and SuperNode-auth helpers: real handshakes, Flower's own key loaders, clear errors."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from rantune.simulations.federation import auth, tls
from rantune.simulations.federation.files import atomic_write


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _handshake(files: tls.TlsFiles, ca_for_client: Path, server_hostname: str) -> str:
    """Serve one TLS connection with ``files`` and connect to it verifying with ``ca_for_client``.

    Returns the negotiated protocol on success; raises ``ssl.SSLError`` on failure.
    """
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files.server_cert, files.server_key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls_conn:
                tls_conn.recv(1)
        except (OSError, ssl.SSLError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        client_ctx = ssl.create_default_context(cafile=str(ca_for_client))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls_conn:
                version = tls_conn.version() or ""
                tls_conn.sendall(b"x")
                return version
    finally:
        listener.close()
        thread.join(timeout=5)


# ---------------------------------------------------------------- TLS


def test_generate_tls_writes_ca_and_server_cert_with_private_keys(tmp_path: Path) -> None:
    # Prepare / Execute
    files = tls.generate_tls(tmp_path / "tls", extra_hosts=["superlink.lab.example", "10.0.0.5"])

    # Assert
    assert _mode(files.server_key) == 0o600
    assert _mode(tmp_path / "tls" / tls.CA_KEY) == 0o600
    assert not [p for p in (tmp_path / "tls").iterdir() if p.name.endswith(".tmp")]
    hosts = tls.certificate_hosts(files.server_cert)
    assert {"127.0.0.1", "localhost", "superlink.lab.example", "10.0.0.5"} <= set(hosts)
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    assert tls.load_tls_files(files.ca_cert, files.server_cert, files.server_key) == files


@pytest.mark.parametrize("hostname", ["127.0.0.1", "localhost"])
def test_generated_certificate_passes_a_real_tls_handshake(tmp_path: Path, hostname: str) -> None:
    files = tls.generate_tls(tmp_path)

    version = _handshake(files, files.ca_cert, hostname)

    assert version.startswith("TLS")


def test_handshake_fails_with_another_ca_or_an_unlisted_host(tmp_path: Path) -> None:
    files = tls.generate_tls(tmp_path / "a")
    other = tls.generate_tls(tmp_path / "b")

    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(files, other.ca_cert, "127.0.0.1")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(files, files.ca_cert, "not-in-the-san.example")


def test_superlink_args_are_flowers_tls_flags(tmp_path: Path) -> None:
    files = tls.generate_tls(tmp_path)

    args = files.superlink_args()

    assert args == [
        "--ssl-ca-certfile",
        str(files.ca_cert),
        "--ssl-certfile",
        str(files.server_cert),
        "--ssl-keyfile",
        str(files.server_key),
    ]


def test_load_tls_files_names_a_missing_path(tmp_path: Path) -> None:
    files = tls.generate_tls(tmp_path)
    missing = tmp_path / "nope.pem"

    with pytest.raises(ValueError, match=r"nope\.pem does not exist.*--tls-ca-cert"):
        tls.load_tls_files(missing, files.server_cert, files.server_key)


def test_load_tls_files_rejects_mismatched_key_foreign_ca_and_garbage(tmp_path: Path) -> None:
    a = tls.generate_tls(tmp_path / "a")
    b = tls.generate_tls(tmp_path / "b")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")

    with pytest.raises(ValueError, match="does not belong to server certificate"):
        tls.load_tls_files(a.ca_cert, a.server_cert, b.server_key)
    with pytest.raises(ValueError, match="was not issued by CA"):
        tls.load_tls_files(b.ca_cert, a.server_cert, a.server_key)
    with pytest.raises(ValueError, match="not a PEM certificate"):
        tls.load_tls_files(garbage, a.server_cert, a.server_key)
    with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
        tls.load_tls_files(a.ca_cert, a.server_cert, garbage)


@pytest.mark.parametrize("host", ["https://x.example", "a b", "host:8000", ""])
def test_generate_tls_rejects_bad_host_names(tmp_path: Path, host: str) -> None:
    with pytest.raises(ValueError, match="invalid TLS host name"):
        tls.generate_tls(tmp_path, extra_hosts=[host])
    assert not (tmp_path / tls.SERVER_CERT).exists()


def test_atomic_write_replaces_and_sets_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "secret.key"
    atomic_write(target, "old", 0o644)

    atomic_write(target, b"new", 0o600)

    assert target.read_bytes() == b"new"
    assert _mode(target) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["secret.key"]


# ---------------------------------------------------------------- SuperNode auth keys


def test_node_keys_load_with_flowers_own_loaders(tmp_path: Path) -> None:
    # Prepare
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    # Execute
    keys = auth.generate_node_keys(tmp_path, "bs-0")

    # Assert: the calls flower-supernode and `flwr supernode register` make in 1.41
    private = serialization.load_ssh_private_key(keys.private_key.read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.curve.name == "secp384r1"
    registered = try_load_public_key(keys.public_key)
    assert registered == public_key_to_bytes(private.public_key())
    assert _mode(keys.private_key) == 0o600
    assert keys.public_key.read_text().startswith("ecdsa-sha2-nistp384 ")
    assert keys.public_key.read_text().strip().endswith(" bs-0")
    assert keys.public_key.read_bytes().startswith(auth.public_key_of(keys.private_key))


def test_each_node_gets_its_own_key(tmp_path: Path) -> None:
    a = auth.generate_node_keys(tmp_path, "bs-0")
    b = auth.generate_node_keys(tmp_path, "bs-1")

    assert a.public_key.read_bytes() != b.public_key.read_bytes()


@pytest.mark.parametrize("name", ["", "../x", "a b", "x" * 65])
def test_node_key_names_are_checked(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="invalid node name"):
        auth.generate_node_keys(tmp_path, name)


def test_load_node_keys_errors_are_clear(tmp_path: Path) -> None:
    pem = tmp_path / "pkcs8.pem"
    pem.write_bytes(
        ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )

    with pytest.raises(ValueError, match="does not exist"):
        auth.load_node_keys(tmp_path / "missing.key")
    with pytest.raises(ValueError, match="not an unencrypted OpenSSH private key"):
        auth.load_node_keys(pem)


def test_cli_json_is_found_after_other_output() -> None:
    text = 'Loading...\n{\n  "success": true,\n  "node-id": 42\n}\n'

    assert auth._last_json(text) == {"success": True, "node-id": 42}
    assert auth._last_json("no json here") is None

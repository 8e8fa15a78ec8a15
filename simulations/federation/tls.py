"""TLS material for a SuperLink: a private CA and a server certificate signed by it.

SuperLink takes ``--ssl-ca-certfile ca.pem --ssl-certfile server.pem
--ssl-keyfile server.key``; SuperNodes take ``--root-certificates ca.pem`` and
the ``flwr`` CLI reads ``root-certificates = "/abs/ca.pem"`` from its
``[superlink.NAME]`` connection. Keys are EC P-256, written with mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rantune.errors import InputError
from rantune.simulations.federation.files import atomic_write

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
DEFAULT_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the PEM files SuperLink and its clients need.

    Attributes
    ----------
    ca_cert : Path
        CA certificate: ``--ssl-ca-certfile`` (SuperLink), ``--root-certificates``
        (SuperNode), ``root-certificates`` (``flwr`` connection).
    server_cert : Path
        SuperLink certificate (``--ssl-certfile``), signed by the CA.
    server_key : Path
        SuperLink private key (``--ssl-keyfile``), mode 0600.
    """

    ca_cert: Path
    server_cert: Path
    server_key: Path

    def superlink_args(self) -> list[str]:
        """Return the ``flower-superlink`` TLS flags for these files."""
        return [
            "--ssl-ca-certfile",
            str(self.ca_cert),
            "--ssl-certfile",
            str(self.server_cert),
            "--ssl-keyfile",
            str(self.server_key),
        ]


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "rantune"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


_KEY_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


def _key_usage(*allowed: str) -> x509.KeyUsage:
    """An X.509 KeyUsage extension allowing exactly ``allowed`` (the rest false)."""
    return x509.KeyUsage(**{usage: usage in allowed for usage in _KEY_USAGES})


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for host in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(entries)


def _hosts(extra_hosts: list[str] | tuple[str, ...]) -> list[str]:
    hosts: list[str] = []
    for host in (*DEFAULT_HOSTS, *extra_hosts):
        host = host.strip()
        if not host or any(c in host for c in " /:") and not _is_ip(host):
            raise InputError(
                f"invalid TLS host name {host!r}; give a bare DNS name or IP address "
                "(no scheme, port or spaces), e.g. --tls-host superlink.lab.example"
            )
        if host not in hosts:
            hosts.append(host)
    return hosts


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def generate_tls(
    out_dir: Path,
    extra_hosts: list[str] | tuple[str, ...] = (),
    valid_days: int = 30,
) -> TlsFiles:
    """Create a CA and a SuperLink server certificate under ``out_dir``.

    Parameters
    ----------
    out_dir : Path
        Directory for ``ca.pem``, ``ca.key``, ``server.pem``, ``server.key``
        (created if missing; existing files are replaced atomically).
    extra_hosts : sequence of str
        Host names or IP addresses added to the server certificate's SAN, on top
        of ``127.0.0.1`` and ``localhost`` (the SuperLink host as SuperNodes on
        other machines address it).
    valid_days : int
        Validity of both certificates, counted from one hour ago (clock skew).

    Returns
    -------
    TlsFiles
        The written paths (keys with mode 0600).
    """
    if valid_days < 1:
        raise InputError(f"valid_days must be >= 1, got {valid_days}")
    hosts = _hosts(extra_hosts)
    out_dir = Path(out_dir)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    until = now + dt.timedelta(days=valid_days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("rantune federation CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage("digital_signature", "key_cert_sign", "crl_sign"),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[1] if len(hosts) > 1 else hosts[0]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            _key_usage("digital_signature", "key_agreement"),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    key_format = serialization.PrivateFormat.PKCS8
    no_pass = serialization.NoEncryption()
    atomic_write(out_dir / CA_KEY, ca_key.private_bytes(pem, key_format, no_pass), 0o600)
    atomic_write(out_dir / CA_CERT, ca_cert.public_bytes(pem), 0o644)
    atomic_write(out_dir / SERVER_KEY, server_key.private_bytes(pem, key_format, no_pass), 0o600)
    atomic_write(out_dir / SERVER_CERT, server_cert.public_bytes(pem), 0o644)
    return TlsFiles(
        ca_cert=(out_dir / CA_CERT).resolve(),
        server_cert=(out_dir / SERVER_CERT).resolve(),
        server_key=(out_dir / SERVER_KEY).resolve(),
    )


def _read_pem(path: Path, what: str, flag: str) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"{what} {path} does not exist or is not a file; pass an existing PEM file to "
            f"{flag}, or omit the TLS file options so `rantune federation up --tls` "
            "generates a CA and server certificate"
        )
    return path.read_bytes()


def load_tls_files(ca_cert: Path, server_cert: Path, server_key: Path) -> TlsFiles:
    """Check user-given TLS files and return them resolved.

    Checks that every file exists and parses as PEM, that the server key
    matches the server certificate, that the CA signed the server certificate,
    and that both certificates are currently valid.

    Raises
    ------
    ValueError
        With the offending path and a hint on how to fix it.
    """
    ca_bytes = _read_pem(ca_cert, "CA certificate", "--tls-ca-cert")
    cert_bytes = _read_pem(server_cert, "server certificate", "--tls-cert")
    key_bytes = _read_pem(server_key, "server private key", "--tls-key")
    try:
        ca = x509.load_pem_x509_certificate(ca_bytes)
    except ValueError as err:
        raise InputError(f"CA certificate {ca_cert} is not a PEM certificate ({err})") from err
    try:
        cert = x509.load_pem_x509_certificate(cert_bytes)
    except ValueError as err:
        raise InputError(f"server certificate {server_cert} is not a PEM certificate") from err
    try:
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except (ValueError, TypeError) as err:
        raise InputError(
            f"server key {server_key} is not an unencrypted PEM private key ({err})"
        ) from err
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise InputError(
            f"server key {server_key} does not belong to server certificate {server_cert}; "
            "pass the key the certificate was issued for"
        )
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as err:
        raise InputError(
            f"server certificate {server_cert} was not issued by CA {ca_cert}; SuperNodes "
            "verifying with this CA would refuse the SuperLink"
        ) from err
    now = dt.datetime.now(dt.UTC)
    for c, p in ((ca, ca_cert), (cert, server_cert)):
        if not c.not_valid_before_utc <= now <= c.not_valid_after_utc:
            raise InputError(
                f"certificate {p} is not valid now (valid {c.not_valid_before_utc:%Y-%m-%d} "
                f"to {c.not_valid_after_utc:%Y-%m-%d}); generate a new one"
            )
    return TlsFiles(
        ca_cert=Path(ca_cert).resolve(),
        server_cert=Path(server_cert).resolve(),
        server_key=Path(server_key).resolve(),
    )


def certificate_hosts(cert_path: Path) -> list[str]:
    """Return the DNS names and IP addresses in a certificate's SAN, in order."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return ips + list(san.get_values_for_type(x509.DNSName))

"""`kleened certs DIR`: the TLS material for remote access in one step.

Creates a private CA, a server certificate signed by it (for the names and addresses clients
use to reach the daemon) and a client certificate (for klee), then prints the listener to add
to kleened's config and the klee flags and environment that use them. Files, all PEM:

| file                                | what                                                  |
|-------------------------------------|-------------------------------------------------------|
| `ca.pem` / `ca-key.pem`             | the CA (`tlscacert` of the listener, `--tlscacert`)   |
| `server-cert.pem` / `server-key.pem`| kleened's certificate (`tlscert`, `tlskey`)           |
| `client-cert.pem` / `client-key.pem`| klee's certificate (`--tlscert`, `--tlskey`)          |

Keys are ECDSA P-256 and written with mode 0600 (created so, never widened later); certificates
are 0644. Existing files are never overwritten unless `--force`. The certificates carry what
strict verifiers (Python 3.13's `VERIFY_X509_STRICT`, Go) ask for: key identifiers, key usage,
extended key usage, and a critical basic-constraints extension.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

DEFAULT_NAMES = ("localhost",)
DEFAULT_IPS = ("127.0.0.1", "::1")
DEFAULT_DAYS = 825  # the longest validity Apple's TLS clients accept for a server certificate
DEFAULT_PORT = 8085  # upstream's TLS listener in its example configuration
CLIENT_NAME = "klee"

FILES = ("ca.pem", "ca-key.pem", "server-cert.pem", "server-key.pem", "client-cert.pem", "client-key.pem")


@dataclass(frozen=True)
class Issued:
    directory: Path
    names: list[str]
    ips: list[str]
    days: int

    def path(self, name: str) -> Path:
        return self.directory / name


def default_names() -> list[str]:
    """localhost and this host's names (short and fully qualified), without duplicates."""
    names = list(DEFAULT_NAMES)
    for name in (socket.gethostname(), socket.getfqdn()):
        if name and name not in names and not _is_ip(name):
            names.append(name)
    return names


def issue(directory: Path, *, names: list[str], ips: list[str], days: int, force: bool = False) -> Issued:
    """Write the CA, server and client certificates and keys into `directory`."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    if days < 1:
        raise ValueError("--days must be at least 1")
    addresses = [ipaddress.ip_address(ip) for ip in ips]  # ValueError names a bad one
    directory.mkdir(parents=True, exist_ok=True)
    if not force:
        existing = [name for name in FILES if (directory / name).exists()]
        if existing:
            raise FileExistsError(f"{directory} already holds {', '.join(existing)} (use --force to replace them)")

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"Kleene CA ({names[0] if names else socket.gethostname()})")
    ca = _certificate(ca_name, ca_key, ca_name, ca_key, days, ca=True)

    server_key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
    alt_names += [x509.IPAddress(address) for address in addresses]
    common_name = next((name for name in names if name != "localhost"), names[0] if names else ips[0])
    server = _certificate(
        _name(common_name), server_key, ca_name, ca_key, days,
        usage=ExtendedKeyUsageOID.SERVER_AUTH, alt_names=alt_names,
    )  # fmt: skip

    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate(_name(CLIENT_NAME), client_key, ca_name, ca_key, days, usage=ExtendedKeyUsageOID.CLIENT_AUTH)

    for stem, cert, key in (("ca", ca, ca_key), ("server", server, server_key), ("client", client, client_key)):
        cert_name = "ca.pem" if stem == "ca" else f"{stem}-cert.pem"
        _write(directory / cert_name, _pem_cert(cert), 0o644, force)
        _write(directory / f"{stem}-key.pem", _pem_key(key), 0o600, force)
    return Issued(directory=directory, names=names, ips=[str(address) for address in addresses], days=days)


def _name(common_name: str) -> x509.Name:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    days: int,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    alt_names: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))  # tolerate clocks a little behind
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem_cert(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, mode: int, force: bool) -> None:
    """Create `path` with `mode` from the start (a key is never readable by others, even briefly)."""
    if force:
        path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.chmod(path, mode)  # the umask may have narrowed it; never widen a key


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def instructions(issued: Issued, port: int) -> str:
    """The config snippet and the klee flags/environment for `issued`, as printed by `kleened certs`."""
    directory = issued.directory.resolve()
    listen = next((ip for ip in issued.ips if not ipaddress.ip_address(ip).is_loopback), "0.0.0.0")
    reach = next((ip for ip in issued.ips if not ipaddress.ip_address(ip).is_loopback), None)
    reach = reach or next((name for name in issued.names if name != "localhost"), "127.0.0.1")
    bracket = f"[{listen}]" if ":" in listen else listen
    host = f"https://{f'[{reach}]' if ':' in reach else reach}:{port}"
    ca, cert, key = directory / "ca.pem", directory / "client-cert.pem", directory / "client-key.pem"
    return f"""\
Created in {directory} (valid {issued.days} days):
  ca.pem, ca-key.pem                 the certificate authority (keep ca-key.pem secret)
  server-cert.pem, server-key.pem    kleened's certificate for {", ".join(issued.names + issued.ips)}
  client-cert.pem, client-key.pem    klee's certificate: copy these and ca.pem to the client machine

Add this listener to kleened's config (e.g. /etc/kleened/config.yaml), then restart kleened:

api_listening_sockets:
  - address: "http:///var/run/kleened.sock"
  - address: "https://{bracket}:{port}"
    tlscert: {directory / "server-cert.pem"}
    tlskey: {directory / "server-key.pem"}
    tlscacert: {ca}
    tlsverify: true

Use it from klee with flags:

  klee --host {host} --tlsverify --tlscacert {ca} \\
       --tlscert {cert} --tlskey {key} volume ls

or with the environment:

  export KLEE_HOST={host}
  export KLEE_TLS_VERIFY=true
  export KLEE_TLS_CACERT={ca}
  export KLEE_TLS_CERT={cert}
  export KLEE_TLS_KEY={key}
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kleened certs",
        description="Create a CA, a server certificate for kleened and a client certificate for klee, "
        "for a TLS listener that requires client certificates (tlsverify).",
    )
    parser.add_argument("directory", metavar="DIR", type=Path, help="where to write the PEM files (created if missing)")
    parser.add_argument(
        "--hostname", action="append", default=[], metavar="NAME",
        help="a DNS name clients use for the daemon (repeatable; added to localhost and this host's name)",
    )  # fmt: skip
    parser.add_argument(
        "--ip", action="append", default=[], metavar="IP",
        help="an IP address clients use for the daemon (repeatable; added to 127.0.0.1 and ::1)",
    )  # fmt: skip
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help="validity in days (default: %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port of the printed listener (default: 8085)")
    parser.add_argument("--force", action="store_true", help="replace existing files in DIR")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    names = _unique(default_names() + args.hostname)
    ips = _unique(list(DEFAULT_IPS) + args.ip)
    try:
        issued = issue(args.directory, names=names, ips=ips, days=args.days, force=args.force)
    except (OSError, ValueError) as exc:
        print(f"kleened certs: {exc}", file=sys.stderr)
        return 2
    print(instructions(issued, args.port), end="")
    return 0


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(value for value in values if value))

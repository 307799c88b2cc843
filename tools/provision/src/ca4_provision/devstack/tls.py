"""A local certificate authority and a server certificate for FerretDB's TLS listener.

Production reaches DocumentDB over TLS with a CA bundle mounted into the pods; the dev stack's
TLS listener lets the same client configuration (``tls=true&tlsCAFile=...``) run here. The CA
and the certificate are made once with ``openssl`` and kept in the dev stack's state dir.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ca4_provision.devstack.installers import run_logged
from ca4_provision.devstack.tools import require

#: Names the server certificate is valid for: the listener binds 127.0.0.1.
SERVER_NAMES = "subjectAltName=IP:127.0.0.1,DNS:localhost"


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of the local CA and of the server certificate it signed."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def under(cls, folder: Path) -> TlsFiles:
        """Where the files live in ``folder``."""
        return cls(ca=folder / "ca.pem", cert=folder / "server.pem", key=folder / "server-key.pem")

    def exist(self) -> bool:
        """True once all three were written."""
        return all(path.is_file() for path in (self.ca, self.cert, self.key))


def _private_folder(folder: Path) -> tuple[Path, Path, Path]:
    """Create ``folder`` (owner only) with the server certificate's extensions file in it."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    extensions = folder / "server.ext"
    extensions.write_text(
        f"{SERVER_NAMES}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n",
        encoding="utf-8",
    )
    return folder / "ca-key.pem", folder / "server.csr", extensions


async def ensure_certificates(folder: Path) -> TlsFiles:
    """The CA and server certificate in ``folder``, made with openssl unless already there."""
    files = TlsFiles.under(folder)
    if files.exist():
        return files
    openssl = require("openssl")
    log = folder / "openssl.log"
    ca_key, csr, extensions = _private_folder(folder)
    await run_logged(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650"),
            *("-keyout", str(ca_key), "-out", str(files.ca), "-subj", "/CN=CA4 dev stack CA"),
            *("-addext", "basicConstraints=critical,CA:TRUE"),
            *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        ],
        log,
    )
    await run_logged(
        [
            *(openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(files.key)),
            *("-out", str(csr), "-subj", "/CN=127.0.0.1"),
        ],
        log,
    )
    await run_logged(
        [
            *(openssl, "x509", "-req", "-in", str(csr), "-CA", str(files.ca)),
            *("-CAkey", str(ca_key), "-CAcreateserial", "-days", "825", "-sha256"),
            *("-extfile", str(extensions), "-out", str(files.cert)),
        ],
        log,
    )
    csr.unlink()
    return files

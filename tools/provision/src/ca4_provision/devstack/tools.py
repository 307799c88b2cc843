"""Host tools the installers need, each with the one line that says how to get it."""

from __future__ import annotations

import shutil

INSTALL_HINTS = {
    "java": "java not found: install a Java 17+ runtime (Debian: apt-get install -y "
    "openjdk-17-jre-headless).",
    "mvn": "mvn not found: install Apache Maven (Debian: apt-get install -y maven).",
    "go": "go not found: install Go 1.26+ from https://go.dev/dl and put it on PATH (the pinned "
    "FerretDB, MinIO and Alertmanager need it; Go 1.21+ fetches that toolchain itself).",
    "apt-get": "apt-get not found: install Prometheus yourself and put `prometheus` on PATH.",
    "prometheus": "prometheus not found: install it (Debian: apt-get install -y prometheus).",
    "openssl": "openssl not found: install it to serve FerretDB over TLS (Debian: apt-get "
    "install -y openssl).",
}


class MissingToolError(RuntimeError):
    """A host tool is not on PATH; the message says how to install it."""


def require(tool: str) -> str:
    """The absolute path of ``tool``, or :class:`MissingToolError` with an install hint."""
    path = shutil.which(tool)
    if path is None:
        raise MissingToolError(INSTALL_HINTS.get(tool, f"{tool} not found on PATH."))
    return path

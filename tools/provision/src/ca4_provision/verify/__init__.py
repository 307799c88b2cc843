"""``ca4 verify``: the nine end-to-end checks against a running deployment."""

from ca4_provision.verify.cli import verify

__all__ = ["verify"]

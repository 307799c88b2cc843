"""``python -m ca4_provision.devstack …`` is ``ca4 devstack …`` (handy from tests)."""

from ca4_provision.devstack.cli import app

app(prog_name="ca4 devstack")

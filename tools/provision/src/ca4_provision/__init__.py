"""The ``ca4`` command: dev stack, provisioning, verification and operator tools."""

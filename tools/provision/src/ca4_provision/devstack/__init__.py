"""The local dev stack: real Kafka, FerretDB, S3 and Prometheus processes without Docker.

``ca4 devstack up`` installs pinned versions into a shared cache, starts each service bound to
127.0.0.1 with its own data dir, log file and PID file, and waits until every health check
passes. See :mod:`ca4_provision.devstack.settings` for the environment knobs.
"""

"""Pinned versions of everything the dev stack installs.

Bump a pin here and the next ``ca4 devstack up`` installs the new version beside the old one
(the cache is keyed by version), so switching back is instant.
"""

from typing import Final

# Kafka 3.9.x still speaks the old protocol versions aiokafka 0.14 uses; 4.x removed some.
KAFKA_VERSION: Final = "3.9.1"
SCALA_BINARY_VERSION: Final = "2.13"
# Kafka 3.9 logs through slf4j 1.7 onto log4j 1.x; reload4j is the maintained log4j 1.x drop-in.
SLF4J_RELOAD4J_VERSION: Final = "1.7.36"

FERRETDB_MODULE: Final = "github.com/FerretDB/FerretDB"
FERRETDB_VERSION: Final = "v1.24.0"

MINIO_MODULE: Final = "github.com/minio/minio"
# MinIO tags releases as RELEASE.<date>, which Go turns into a pseudo-version.
MINIO_VERSION: Final = "v0.0.0-20260212201848-7aac2a2c5b7c"  # master of 2026-02-12

# Prometheus comes from the distribution (Debian bookworm ships 2.42.0); we report what is there.
PROMETHEUS_DEBIAN_PACKAGE: Final = "prometheus"

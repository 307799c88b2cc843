"""Pinned versions of everything the dev stack installs.

Bump a pin here and the next ``ca4 devstack up`` installs the new version beside the old one
(the cache is keyed by version), so switching back is instant.
"""

from typing import Final

# The one Kafka version: the dev stack's jars, the compose image and the Helm chart's image
# (tests/infra/test_links.py compares them). aiokafka 0.14 passes the integration tests on 4.1.
KAFKA_VERSION: Final = "4.1.0"
SCALA_BINARY_VERSION: Final = "2.13"
# Kafka 4 logs through slf4j 1.7 onto log4j 2 (log4j-core comes with the broker); this is the
# binding between them, at the log4j version the broker itself depends on.
LOG4J_SLF4J_VERSION: Final = "2.24.3"

#: Third-party image tags of docker-compose.yml, the Helm charts and the testcontainers fallback,
#: by image name (the last path part, whatever the registry); tests/infra/test_links.py fails when
#: any of them names another tag.
IMAGE_TAGS: Final = {
    "kafka": KAFKA_VERSION,
    "prometheus": "v3.5.0",
    "loki": "3.5.3",
    "promtail": "3.5.3",
    "grafana": "12.1.1",
    "mongo": "7.0.16",
    "minio": "RELEASE.2025-04-22T22-12-26Z",
    "mc": "RELEASE.2025-04-16T18-13-26Z",
    "curl": "8.11.1",
    "all-in-one": "1.64.0",
}

FERRETDB_MODULE: Final = "github.com/FerretDB/FerretDB"
FERRETDB_VERSION: Final = "v1.24.0"

MINIO_MODULE: Final = "github.com/minio/minio"
# MinIO tags releases as RELEASE.<date>, which Go turns into a pseudo-version.
MINIO_VERSION: Final = "v0.0.0-20260212201848-7aac2a2c5b7c"  # master of 2026-02-12

# Prometheus comes from the distribution (Debian bookworm ships 2.42.0); we report what is there.
PROMETHEUS_DEBIAN_PACKAGE: Final = "prometheus"

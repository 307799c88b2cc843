"""Pinned versions of everything the dev stack installs.

Bump a pin here and the next ``ca4 devstack up`` installs the new version beside the old one
(the cache is keyed by version), so switching back is instant.
"""

from dataclasses import dataclass
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
    "alertmanager": "v0.35.0",
    "loki": "3.5.3",
    "alloy": "v1.10.2",
    "grafana": "12.1.1",
    "mongo": "7.0.16",
    "minio": "RELEASE.2025-04-22T22-12-26Z",
    "mc": "RELEASE.2025-04-16T18-13-26Z",
    "curl": "8.11.1",
    "all-in-one": "1.64.0",
    "nginx": "1.27.5-alpine",
}


@dataclass(frozen=True)
class PinnedDownload:
    """A file of a public Maven repository, checked by its sha256 before use."""

    name: str
    version: str
    #: The repository's base URL and the file's path in it (Maven's layout), apart so that a
    #: mirror with the same layout can serve the same path.
    repository: str
    path: str
    sha256: str

    @property
    def url(self) -> str:
        """Where the file is downloaded from."""
        return f"{self.repository}/{self.path}"

    @property
    def filename(self) -> str:
        """The file's name (the last part of its path)."""
        return self.path.rsplit("/", 1)[-1]


MAVEN_CENTRAL: Final = "https://repo1.maven.org/maven2"

# The Prometheus JMX exporter javaagent in the broker's JVM: docker-compose.yml's Kafka and the
# ca4-platform chart's brokers (kafka.metrics.agent.version and .sha256; tests/infra/test_helm.py
# compares them). Maven Central serves no .sha256 for 1.0.1; the file this sha256 was computed
# from matches its .sha1 (f9c53eb0aa1828c3c9cd7647238563e43a4ed68c) and .md5
# (f525facee9d400d163e5366c02d3aa68).
JMX_EXPORTER_VERSION: Final = "1.0.1"
JMX_EXPORTER_AGENT: Final = PinnedDownload(
    "jmx_prometheus_javaagent",
    JMX_EXPORTER_VERSION,
    MAVEN_CENTRAL,
    f"io/prometheus/jmx/jmx_prometheus_javaagent/{JMX_EXPORTER_VERSION}/"
    f"jmx_prometheus_javaagent-{JMX_EXPORTER_VERSION}.jar",
    "7d61f737fd661610ccc14aea79764faa1ea94a340cbc8f0029b3d2edea3d80c1",
)

# FerretDB v2 speaks the MongoDB protocol and stores through PostgreSQL's DocumentDB extension.
FERRETDB_MODULE: Final = "github.com/FerretDB/FerretDB/v2"
FERRETDB_VERSION: Final = "v2.7.0"

# PostgreSQL comes from the distribution; the extensions DocumentDB needs that Debian lacks (or
# ships too old) are built from the pinned archives below.
POSTGRES_MAJOR: Final = "15"
POSTGRES_DEBIAN_PACKAGE: Final = f"postgresql-{POSTGRES_MAJOR}"
DOCUMENTDB_BUILD_DEBIAN_PACKAGES: Final = (
    "build-essential",
    "pkg-config",
    "cmake",
    f"postgresql-server-dev-{POSTGRES_MAJOR}",
    f"postgresql-{POSTGRES_MAJOR}-postgis-3",
    f"postgresql-{POSTGRES_MAJOR}-rum",
    "libpcre2-dev",
    "libintelrdfpmath-dev",
    "libicu-dev",
    "libkrb5-dev",
)


@dataclass(frozen=True)
class PinnedSource:
    """A source archive of a public repository, checked by its sha256 before use."""

    name: str
    archive: str
    repository: str
    commit: str
    sha256: str


# The archives live in ``../shared/vendor/`` beside the repository (see its README for provenance).
DOCUMENTDB: Final = PinnedSource(
    "documentdb",
    "documentdb-3f80da90.tar.gz",
    "github.com/FerretDB/documentdb",
    "3f80da90",
    "e284df4ac88bfe808d621e72fab81d3ceb7742a3b7dfe810dde3f3cfbf9f34b7",
)
LIBBSON: Final = PinnedSource(
    "mongo-c-driver",
    "mongo-c-driver-1.28.0.tar.gz",
    "github.com/mongodb/mongo-c-driver",
    "a463a46c38",
    "e1a4e1e8f9c67c2439bd217f2d960026954afbebc464847e474206a900d55abf",
)
PGVECTOR: Final = PinnedSource(
    "pgvector",
    "pgvector-v0.8.0.tar.gz",
    "github.com/pgvector/pgvector",
    "2627c5f",
    "958aa543a05a60c3696f7fc3bc5722be5a1c413b0ee0e1811f898128526b9c8a",
)
PG_CRON: Final = PinnedSource(
    "pg_cron",
    "pg_cron-v1.6.3.tar.gz",
    "github.com/citusdata/pg_cron",
    "9d0576c",
    "c525dbe88dc22c2a58fe82565bb9602690e1c05c4ffd3d2ccee971ac52d59904",
)
DOCUMENTDB_SOURCES: Final = (LIBBSON, PGVECTOR, PG_CRON, DOCUMENTDB)
# The cache key of the built extensions: every pinned commit and the PostgreSQL major version.
DOCUMENTDB_BUILD: Final = f"pg{POSTGRES_MAJOR}-" + "-".join(
    source.commit for source in DOCUMENTDB_SOURCES
)

MINIO_MODULE: Final = "github.com/minio/minio"
# MinIO tags releases as RELEASE.<date>, which Go turns into a pseudo-version.
MINIO_VERSION: Final = "v0.0.0-20260212201848-7aac2a2c5b7c"  # master of 2026-02-12

# Prometheus comes from the distribution (Debian bookworm ships 2.42.0); we report what is there.
PROMETHEUS_DEBIAN_PACKAGE: Final = "prometheus"

# Alertmanager builds from its Go module; amtool (``check-config``) comes from the same module.
ALERTMANAGER_MODULE: Final = "github.com/prometheus/alertmanager"
ALERTMANAGER_VERSION: Final = IMAGE_TAGS["alertmanager"]

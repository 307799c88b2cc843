"""The worker's real-service fixtures (fresh topic, database, bucket), shared with these tests."""

from tests.integration.worker.conftest import bucket, database, topic, worker_settings

__all__ = ["bucket", "database", "topic", "worker_settings"]

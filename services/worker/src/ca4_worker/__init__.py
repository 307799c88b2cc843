"""CA4 worker: event store, projections, dead letters, S3 archive and read API."""

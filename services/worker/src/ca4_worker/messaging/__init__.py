"""Kafka adapters: the store subscriber, the archive consumer, dead letters and lag."""

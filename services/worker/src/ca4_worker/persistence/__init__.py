"""Adapters for the ports: MongoDB (Beanie/pymongo), S3 (aioboto3) and in-memory fakes."""

"""Configuration and process-wide plumbing (settings, metrics)."""

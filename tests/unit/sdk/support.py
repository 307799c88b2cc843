"""Helpers for the SDK unit tests: fixture files and contract validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ca4_schemas import GpuMetadataReport

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_text(name: str) -> str:
    """A captured or hand-written command output under ``fixtures/``."""
    return (FIXTURES / name).read_text(encoding="utf-8")


def assert_valid_report(report: dict[str, Any]) -> GpuMetadataReport:
    """The report validates against the real contract, exactly as the processor parses it."""
    import json

    return GpuMetadataReport.model_validate_json(json.dumps(report))

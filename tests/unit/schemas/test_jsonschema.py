"""The committed JSON Schema files are the contract; they must match the models."""

from __future__ import annotations

import pytest
from ca4_schemas.jsonschema import MODELS, SCHEMA_DIR, render


@pytest.mark.parametrize("filename", sorted(MODELS))
def test_committed_schema_is_not_stale(filename: str) -> None:
    committed = (SCHEMA_DIR / filename).read_text(encoding="utf-8")

    assert committed == render(MODELS[filename]), (
        f"{filename} is stale: run `uv run python -m ca4_schemas.jsonschema` and commit it"
    )


def test_every_schema_file_belongs_to_a_model() -> None:
    assert {path.name for path in SCHEMA_DIR.glob("*.json")} == set(MODELS)

"""Export the JSON Schema of every contract version to committed files.

Run ``python -m ca4_schemas.jsonschema`` after changing a model; a test fails while the
committed files are stale, so the published contract never drifts from the code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from ca4_schemas.v1 import GpuMetadataReportedV1, GpuMetadataReportV1
from ca4_schemas.v2 import GpuMetadataReportedV2

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "jsonschema"
"""``libs/schemas/jsonschema`` in the source tree."""

MODELS: dict[str, type[BaseModel]] = {
    "gpu.metadata.report.v1.json": GpuMetadataReportV1,
    "gpu.metadata.reported.v1.json": GpuMetadataReportedV1,
    "gpu.metadata.reported.v2.json": GpuMetadataReportedV2,
}


def render(model: type[BaseModel]) -> str:
    """The JSON Schema text committed for ``model``."""
    return json.dumps(model.model_json_schema(mode="validation"), indent=2, sort_keys=True) + "\n"


def export(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, model in MODELS.items():
        path = directory / filename
        path.write_text(render(model), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in export():
        sys.stdout.write(f"wrote {written_path}\n")

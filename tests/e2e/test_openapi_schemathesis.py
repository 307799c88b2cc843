"""schemathesis against both apps' OpenAPI documents: a client generated from them works.

The processor and the worker run as uvicorn processes on the real dev stack (Kafka, FerretDB),
and every generated request carries a valid Bearer key (``write`` and ``read``). The checks are
schemathesis' standard response checks: no server error, no undocumented status code, no
undocumented content type or header, no body that violates its documented schema.
Examples are capped per operation so the module stays within about a minute.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.sdk.conftest import DEV_API_KEY, SdkPipeline, sdk_pipeline

__all__ = ["sdk_pipeline"]
pytestmark = [pytest.mark.kafka, pytest.mark.mongo, pytest.mark.e2e, pytest.mark.slow]

MAX_EXAMPLES = 25
"""Per operation and phase: enough to reach every documented answer, bounded in time."""
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.fixture(scope="module")
def extra_app_env() -> dict[str, str]:
    """No rate limit: the generated bodies reach validation and Kafka instead of ``429``."""
    return {"CA4_RATE_LIMIT_PER_SECOND": "0"}


def run_schemathesis(base_url: str, report_dir: Path) -> tuple[int, str, float]:
    """``schemathesis run`` on the app's document; exit code, its report and seconds taken.

    The CLI rather than the pytest plugin: the plugin's lazy (fixture-loaded) schemas set a
    private pytest attribute that pytest 9.2 no longer has.
    """
    started = time.monotonic()
    done = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{base_url}/openapi.json",
            "--checks",
            ",".join(CHECKS),
            "--header",
            f"Authorization: Bearer {DEV_API_KEY}",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--phases",
            "examples,coverage,fuzzing",
            "--workers",
            "4",
            "--seed",
            "1",
            "--request-timeout",
            "30",
            "--suppress-health-check",
            "all",
            "--no-color",
            "--report",
            "junit",
            "--report-dir",
            str(report_dir),
        ],
        cwd=report_dir,  # its cache (.schemathesis) stays out of the repository
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


@pytest.mark.parametrize("app", ["processor", "worker"])
def test_the_app_answers_as_its_openapi_document_says(
    sdk_pipeline: SdkPipeline, app: str, tmp_path: Path
) -> None:
    url = getattr(sdk_pipeline, app).url
    code, report, seconds = run_schemathesis(url, tmp_path)
    print(f"schemathesis on the {app}: {seconds:.0f} s\n{report}")
    assert code == 0, report

"""``ca4 verify``: status rules, report shapes and the checks that need no live service."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from ca4_provision.cli import app as ca4
from ca4_provision.verify import checks, cli, runner
from ca4_provision.verify.results import StepResult, StepStatus, VerifyReport
from ca4_provision.verify.settings import VerifySettings
from typer.testing import CliRunner

from tests.support.ports import free_port


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=2.0) as client:
        yield client


def settings(**overrides: object) -> VerifySettings:
    return VerifySettings(VERIFY_TIMEOUT_S=1.0, VERIFY_POLL_S=0.1, **overrides)  # type: ignore[arg-type]


async def test_grafana_and_loki_are_not_deployed_locally_when_nothing_answers(
    http: httpx.AsyncClient,
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    ctx = checks.VerifyContext(settings(GRAFANA_URL=nowhere, LOKI_URL=nowhere), http)
    for number, step in ((7, runner.STEPS[6]), (8, runner.STEPS[7])):
        local = await runner.run_step(number, step, ctx, "local")
        assert local.status is StepStatus.NOT_DEPLOYED, local
        assert "nothing answers" in local.detail
        cluster = await runner.run_step(number, step, ctx, "k3s")
        assert cluster.status is StepStatus.FAIL, cluster


async def test_core_steps_fail_rather_than_not_deployed(http: httpx.AsyncClient) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    ctx = checks.VerifyContext(settings(EDGE_API_URL=nowhere), http)
    ctx.report = {"event_id": str(uuid.uuid4())}
    for number, step in enumerate(runner.STEPS[1:6], start=2):
        result = await runner.run_step(number, step, ctx, "local")
        assert result.status is StepStatus.FAIL, result
        assert result.detail.startswith("not run"), result


async def test_processor_step_reads_the_receipt(http: httpx.AsyncClient) -> None:
    event_id = str(uuid.uuid4())
    ctx = checks.VerifyContext(settings(), http)
    ctx.report = {"event_id": event_id}
    receipt = {"event_id": event_id, "topic": "gpu-metadata", "partition": 2, "offset": 41}
    ctx.response = httpx.Response(202, json=receipt)
    detail = await checks.processor_accepted(ctx)
    assert detail == "202, gpu-metadata partition 2 offset 41"
    assert ctx.receipt is not None
    assert (ctx.receipt.partition, ctx.receipt.offset) == (2, 41)


async def test_processor_step_fails_on_an_error_answer(http: httpx.AsyncClient) -> None:
    ctx = checks.VerifyContext(settings(), http)
    ctx.report = {"event_id": str(uuid.uuid4())}
    ctx.response = httpx.Response(401, json={"detail": "missing or unknown API key"})
    result = await runner.run_step(2, runner.STEPS[1], ctx, "local")
    assert result.status is StepStatus.FAIL
    assert result.detail.startswith("HTTP 401")


def test_sdk_builds_a_report_that_honours_the_contract() -> None:
    from ca4_schemas import GpuMetadataReport

    report = checks.build_test_report(settings(), "ca4-verify-unit")
    parsed = GpuMetadataReport.model_validate_json(json.dumps(report))
    assert parsed.session_id == "ca4-verify-unit"
    assert parsed.labels == checks.VERIFY_LABELS


def sample_report() -> VerifyReport:
    steps = [
        StepResult(number=n, name=step.name, status=StepStatus.PASS, seconds=0.01, detail="ok")
        for n, step in enumerate(runner.STEPS[:6], start=1)
    ]
    steps += [
        StepResult(
            number=n, name=step.name, status=StepStatus.NOT_DEPLOYED, seconds=0.0, detail="-"
        )
        for n, step in enumerate(runner.STEPS[6:], start=7)
    ]
    return VerifyReport(target="local", event_id="e", steps=steps)


def test_not_deployed_never_fails_the_run_but_fail_does() -> None:
    report = sample_report()
    assert report.ok
    failing = report.model_copy(
        update={
            "steps": [
                *report.steps[:-1],
                report.steps[-1].model_copy(update={"status": StepStatus.FAIL}),
            ]
        }
    )
    assert not failing.ok


@pytest.mark.parametrize(("report", "exit_code"), [(sample_report(), 0), (None, 1)])
def test_cli_json_output_and_exit_code(
    monkeypatch: pytest.MonkeyPatch, report: VerifyReport | None, exit_code: int
) -> None:
    if report is None:
        good = sample_report()
        report = good.model_copy(
            update={"steps": [good.steps[0].model_copy(update={"status": StepStatus.FAIL})]}
        )

    async def fake_run(
        settings: VerifySettings, target: str, on_step: object = None
    ) -> VerifyReport:
        assert settings.EDGE_API_URL == "http://edge.test"
        return report

    monkeypatch.setattr(cli, "run_verification", fake_run)
    result = CliRunner().invoke(
        ca4, ["verify", "--target", "local", "--json", "--edge-api-url", "http://edge.test"]
    )
    assert result.exit_code == exit_code, result.output
    payload = json.loads(result.stdout)
    assert payload["target"] == "local"
    assert [step["status"] for step in payload["steps"]] == [s.status.value for s in report.steps]
    assert {"number", "name", "status", "seconds", "detail"} <= payload["steps"][0].keys()


def test_cli_table_names_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fake_run(
        settings: VerifySettings, target: str, on_step: object = None
    ) -> VerifyReport:
        return sample_report()

    monkeypatch.setattr(cli, "run_verification", fake_run)
    result = CliRunner().invoke(ca4, ["verify"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for step in runner.STEPS:
        assert step.name in result.output
    assert "not deployed" in result.output
    assert "all deployed steps pass" in result.output

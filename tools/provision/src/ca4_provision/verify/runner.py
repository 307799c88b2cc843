"""Runs the checks in order and times each one."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from pydantic import ValidationError

from ca4_provision.verify import checks, cluster
from ca4_provision.verify.results import StepResult, StepStatus, VerifyReport
from ca4_provision.verify.settings import OPTIONAL_COMPONENTS, Target, VerifySettings

Check = Callable[[checks.VerifyContext], Awaitable[str]]


@dataclass(frozen=True)
class Step:
    """One row of the provisioning guide's checklist."""

    name: str
    component: str
    check: Check


STEPS: tuple[Step, ...] = (
    Step("SDK sends a test payload", "sdk", checks.sdk_sends_test_payload),
    Step("processor accepted it (202 receipt)", "processor", checks.processor_accepted),
    Step("Kafka holds it (by event id)", "kafka", checks.kafka_holds_event),
    Step("worker processed it (read API)", "worker", checks.worker_processed),
    Step("database holds the record", "database", checks.database_holds_record),
    Step("Prometheus counters moved", "prometheus", checks.prometheus_counters_moved),
    Step("Grafana serves the dashboards", "grafana", checks.grafana_serves_dashboards),
    Step("Loki holds the event's log lines", "loki", checks.loki_holds_log_lines),
    Step("S3 archive holds the event", "archive", checks.archive_holds_event),
)


async def run_step(
    number: int, step: Step, ctx: checks.VerifyContext, target: Target
) -> StepResult:
    """Run one check; any surprise becomes a failure with its message, never a crash."""
    started = time.perf_counter()
    status = StepStatus.PASS
    try:
        detail = await step.check(ctx)
    except checks.NotDeployedError as absent:
        optional = step.component in OPTIONAL_COMPONENTS[target]
        status = StepStatus.NOT_DEPLOYED if optional else StepStatus.FAIL
        detail = str(absent)
    except checks.StepFailedError as failure:
        status, detail = StepStatus.FAIL, str(failure)
    except ValidationError as invalid:
        status = StepStatus.FAIL
        first = invalid.errors()[0]["msg"]
        detail = f"breaks the contract: {invalid.error_count()} error(s), first: {first}"
    except Exception as error:  # the report must show every failure, then go on
        status, detail = StepStatus.FAIL, f"{type(error).__name__}: {error}"
    return StepResult(
        number=number,
        name=step.name,
        status=status,
        seconds=round(time.perf_counter() - started, 3),
        detail=detail,
    )


async def run_verification(
    settings: VerifySettings,
    target: Target,
    on_step: Callable[[StepResult], None] | None = None,
) -> VerifyReport:
    """Every check against ``target``; ``on_step`` sees each result as it lands. For k3s the
    run opens its own port-forwards first and closes them when it ends."""
    if target == "k3s":
        async with cluster.port_forwards(settings) as forwarded:
            return await _run_steps(forwarded, target, on_step)
    return await _run_steps(settings, target, on_step)


async def _run_steps(
    settings: VerifySettings,
    target: Target,
    on_step: Callable[[StepResult], None] | None,
) -> VerifyReport:
    results: list[StepResult] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as http:
        ctx = checks.VerifyContext(settings=settings, http=http, in_cluster=target == "k3s")
        await checks.snapshot_counters(ctx)
        for number, step in enumerate(STEPS, start=1):
            result = await run_step(number, step, ctx, target)
            results.append(result)
            if on_step is not None:
                on_step(result)
    return VerifyReport(target=target, event_id=ctx.event_id, steps=results)

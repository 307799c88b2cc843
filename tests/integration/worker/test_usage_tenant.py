"""One tenant's usage, the group cap and the deadline against the real database:
``GET /v1/usage?tenant=`` for an operator's key and ``ca4 usage --tenant/--timeout``."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from ca4_provision.cli import app
from ca4_worker.application.usage import UsageProjection
from ca4_worker.core.config import Settings, get_settings
from ca4_worker.domain.usage import GpuUsage, UsageDay
from ca4_worker.main import create_app
from ca4_worker.persistence.documents import Doc
from ca4_worker.persistence.usage_mongo import MongoUsageRecords, day_document
from pymongo.asynchronous.database import AsyncDatabase
from typer.testing import CliRunner, Result

from tests.integration.worker.support import (
    INDEX_BUILD_DEADLINE_S,
    OPERATOR_KEY,
    OPERATOR_KEY_HASHES,
)
from tests.support.services import Endpoints
from tests.unit.worker.factories import TENANT_A, TENANT_B
from tests.unit.worker.usage_scenario import RULES, START

pytestmark = [pytest.mark.mongo]

TENANT_EVIL = "evil"
END = START.date() + timedelta(days=1)
WINDOW = {"from": START.date().isoformat(), "to": END.isoformat()}


def _day(tenant: str, session: str, models: list[str], held_s: int = 60) -> Doc:
    """One day record of a GPU of each of ``models``, labelled project ``p-<tenant>``."""
    gpus = {
        (f"GPU-{session}-{index}", 0): GpuUsage(
            f"GPU-{session}-{index}", model, held_ms=held_s * 1000 * (index + 1)
        )
        for index, model in enumerate(models)
    }
    return day_document(
        UsageDay(session, START.date(), tenant, {"project": f"p-{tenant}"}, "colab", gpus=gpus), 1
    )


@pytest.fixture
async def records(database: AsyncDatabase[Doc]) -> MongoUsageRecords:
    """Tenant A's and B's two records each, and the hostile tenant's 40 of 8 models each."""
    await database["usage_days"].insert_many(
        [
            _day(TENANT_A, "a1", ["H100"]),
            _day(TENANT_A, "a2", ["L4"]),
            _day(TENANT_B, "b1", ["H100"]),
            _day(TENANT_B, "b2", ["T4"]),
            *(
                _day(TENANT_EVIL, f"e{session}", [f"evil-{session}-{gpu}" for gpu in range(8)])
                for session in range(40)
            ),
        ]
    )
    usage = MongoUsageRecords(database)
    await usage.create_indexes(build_deadline_s=INDEX_BUILD_DEADLINE_S)
    return usage


async def test_an_operator_reads_one_tenants_usage_and_a_tenant_key_only_its_own(
    records: MongoUsageRecords,
) -> None:
    tenant_key = f"a:{hashlib.sha256(b'k-a').hexdigest()}:{TENANT_A}:read"
    api = create_app(Settings(api_key_hashes=f"{OPERATOR_KEY_HASHES},{tenant_key}"))
    api.state.usage = UsageProjection(records, rules=RULES)

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(api), base_url="http://worker"
    ) as client:

        async def get(key: str, **params: str) -> httpx.Response:
            return await client.get(
                "/v1/usage",
                params={**WINDOW, "group_by": "gpu_model", **params},
                headers={"Authorization": f"Bearer {key}"},
            )

        one = await get(OPERATOR_KEY, tenant=TENANT_A)
        every = await get(OPERATOR_KEY)
        own = await get("k-a", tenant=TENANT_A)
        other = await get("k-a", tenant=TENANT_B)

    assert one.status_code == 200, one.text
    assert [(row["tenant"], row["group"], row["held_seconds"]) for row in one.json()["rows"]] == [
        (TENANT_A, "H100", 60.0),
        (TENANT_A, "L4", 60.0),
    ]
    assert {row["tenant"] for row in every.json()["rows"]} == {TENANT_A, TENANT_B, TENANT_EVIL}
    assert [(row["tenant"], row["group"]) for row in own.json()["rows"]] == [
        (None, "H100"),
        (None, "L4"),
    ]
    assert (other.status_code, other.json()) == (
        403,
        {
            "detail": "API key 'a' lacks the 'read:all' scope: it reads only its own "
            "tenant's usage (leave out tenant, or pass tenant=tenant-a)"
        },
    )


@pytest.fixture
def operator_env(
    services: Endpoints, database_name: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """``ca4 usage`` pointed at this test's database, with a cap of 20 groups."""
    monkeypatch.setenv("CA4_MONGO_URL", services.mongo_url)
    monkeypatch.setenv("CA4_MONGO_DB", database_name)
    monkeypatch.setenv("CA4_USAGE_MAX_GROUPS", "20")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def _ca4(*args: str) -> Result:
    """Run ``ca4 usage ARGS`` over the window in a thread (the CLI runs its own event loop)."""
    window = ["--from", WINDOW["from"], "--to", WINDOW["to"]]
    return await asyncio.to_thread(CliRunner().invoke, app, ["usage", *window, *args])


@pytest.mark.usefixtures("operator_env")
async def test_ca4_usage_reads_one_tenant_and_caps_every_tenants_groups(
    records: MongoUsageRecords,
) -> None:
    one = await _ca4("--tenant", TENANT_B, "--group-by", "gpu_model", "--json")
    every = await _ca4("--group-by", "gpu_model", "--json")
    table = await _ca4("--group-by", "gpu_model")

    assert (one.exit_code, every.exit_code, table.exit_code) == (0, 0, 0), every.output
    body: dict[str, Any] = json.loads(one.stdout)
    assert [(row["tenant"], row["group"]) for row in body["rows"]] == [
        (TENANT_B, "H100"),
        (TENANT_B, "T4"),
    ]
    capped: dict[str, Any] = json.loads(every.stdout)
    # 324 groups: A's and B's two each keep their rows, the hostile tenant's 16 of the cap's 20
    # and its (other).
    assert capped["truncated"] is True
    assert len(capped["rows"]) == 21
    assert [row["kind"] for row in capped["rows"] if row["tenant"] == TENANT_EVIL][-1] == "other"
    assert sum(row["held_seconds"] for row in capped["rows"]) == 4 * 60 + 40 * 60 * sum(range(9))
    assert "truncated: more than 20 groups" in " ".join(table.stdout.split())


@pytest.mark.usefixtures("operator_env")
async def test_ca4_usage_past_its_timeout_says_what_to_do(
    database: AsyncDatabase[Doc], records: MongoUsageRecords
) -> None:
    await database["usage_days"].insert_many(
        [_day(TENANT_EVIL, f"heavy{index}", ["H100"] * 8) for index in range(2_000)]
    )

    result = await _ca4("--timeout", "0.05")

    assert result.exit_code == 1
    assert result.output == (
        "error: the usage report did not finish within 0.05 s: ask for fewer days "
        "(--from/--to), one tenant's (--tenant NAME), or allow it longer (--timeout SECONDS)\n"
    )

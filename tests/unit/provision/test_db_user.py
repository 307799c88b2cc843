"""``ca4 db-user``: the application user gets readWrite on the CA4 database and nothing more."""

from __future__ import annotations

from typing import Any

import pytest
from ca4_provision.cli import app as ca4
from ca4_provision.db_user import Login, OverPrivilegedError, ensure_app_user
from pydantic import SecretStr
from typer.testing import CliRunner

APP = Login(username="ca4app", password=SecretStr("app-pw"))


class FakeAdmin:
    """The user commands of DocumentDB (roles as asked) or FerretDB (roles it chooses)."""

    def __init__(self, grants: list[dict[str, str]] | None = None) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.grants = grants
        self.writes: list[str] = []

    async def command(self, command: str, value: Any = 1, **kwargs: Any) -> dict[str, Any]:
        if command == "usersInfo":
            user = self.users.get(value)
            return {"ok": 1} | ({"users": [{"user": value, **user}]} if user else {})
        self.writes.append(command)
        roles = self.grants if self.grants is not None else kwargs["roles"]
        self.users[value] = {"roles": roles, "pwd": kwargs["pwd"]}
        return {"ok": 1}

    async def password_works(self, login: Login) -> bool:
        return self.users[login.username]["pwd"] == login.password.get_secret_value()


async def test_creates_a_user_with_read_write_on_the_ca4_database_only() -> None:
    admin = FakeAdmin()
    done = await ensure_app_user(admin, APP, "ca4", admin.password_works)
    assert done == "created user ca4app with readWrite on ca4"
    assert admin.users["ca4app"]["roles"] == [{"role": "readWrite", "db": "ca4"}]


async def test_second_run_changes_nothing() -> None:
    admin = FakeAdmin()
    await ensure_app_user(admin, APP, "ca4", admin.password_works)
    admin.writes.clear()
    done = await ensure_app_user(admin, APP, "ca4", admin.password_works)
    assert done.endswith("unchanged")
    assert admin.writes == []


async def test_broader_roles_are_narrowed() -> None:
    admin = FakeAdmin()
    admin.users["ca4app"] = {"roles": [{"role": "root", "db": "admin"}], "pwd": "app-pw"}
    done = await ensure_app_user(admin, APP, "ca4", admin.password_works)
    assert done.startswith("updated user ca4app: readWrite on ca4 only")
    assert admin.users["ca4app"]["roles"] == [{"role": "readWrite", "db": "ca4"}]


async def test_a_database_that_grants_more_is_refused() -> None:
    ferretdb = FakeAdmin(grants=[{"role": "readWriteAnyDatabase", "db": "admin"}])
    with pytest.raises(OverPrivilegedError, match="not readWrite on ca4 only"):
        await ensure_app_user(ferretdb, APP, "ca4", ferretdb.password_works)


def test_cli_never_echoes_the_secrets_it_cannot_parse() -> None:
    result = CliRunner().invoke(
        ca4, ["db-user", "--url", "mongodb://127.0.0.1:1/"], input='{"password": "master-pw"}\n'
    )
    assert result.exit_code == 2
    assert "master-pw" not in result.output
    assert "two JSON lines" in result.output

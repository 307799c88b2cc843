"""``ca4 db-user``: the application's database user, with readWrite on the CA4 database only.

Run by ``make ca4-db-user`` through an SSH tunnel to DocumentDB. Both secrets come on stdin, one
JSON object a line, as Secrets Manager stores them (``{"username": ..., "password": ...}``): the
master login first, then the application user. They are never a file, an argument or in the
cluster. Idempotent: a user that already has exactly that role and that password is left alone;
a database that grants more than asked (FerretDB gives every user readWriteAnyDatabase) is refused.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Protocol

import typer
from pydantic import BaseModel, SecretStr, ValidationError
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure


class Login(BaseModel):
    """One Secrets Manager secret of a database user."""

    username: str
    password: SecretStr


class AdminDatabase(Protocol):
    """What this needs of the ``admin`` database: run a command."""

    async def command(self, command: str, value: Any = 1, **kwargs: Any) -> dict[str, Any]:
        """Run ``command``."""
        ...


class OverPrivilegedError(Exception):
    """The database granted the application user more than readWrite on the CA4 database."""


def app_roles(database: str) -> list[dict[str, str]]:
    """Least privilege: read and write the CA4 database, nothing on any other."""
    return [{"role": "readWrite", "db": database}]


async def _roles(admin: AdminDatabase, username: str) -> list[dict[str, str]] | None:
    users = (await admin.command("usersInfo", username)).get("users", [])
    if not users:
        return None
    return [{"role": r["role"], "db": r["db"]} for r in users[0]["roles"]]


async def ensure_app_user(
    admin: AdminDatabase,
    app: Login,
    database: str,
    password_works: Callable[[Login], Awaitable[bool]],
) -> str:
    """Create or correct the application user; return what was done."""
    wanted = app_roles(database)
    password = app.password.get_secret_value()
    roles = await _roles(admin, app.username)
    if roles is None:
        await admin.command("createUser", app.username, pwd=password, roles=wanted)
        done = f"created user {app.username} with readWrite on {database}"
    elif roles == wanted and await password_works(app):
        return f"user {app.username} already has readWrite on {database} only, unchanged"
    else:
        await admin.command("updateUser", app.username, pwd=password, roles=wanted)
        done = f"updated user {app.username}: readWrite on {database} only (had {roles})"
    granted = await _roles(admin, app.username)
    if granted != wanted:
        raise OverPrivilegedError(
            f"the database gave {app.username} {granted}, not readWrite on {database} only: "
            "it cannot hold a least-privilege user (FerretDB grants readWriteAnyDatabase)"
        )
    return done


def _client(url: str, login: Login) -> AsyncMongoClient[dict[str, Any]]:
    return AsyncMongoClient(
        url,
        username=login.username,
        password=login.password.get_secret_value(),
        serverSelectionTimeoutMS=15_000,
    )


async def _create(url: str, master: Login, app: Login, database: str) -> str:
    async def password_works(login: Login) -> bool:
        client = _client(url, login)
        try:
            await client["admin"].command("ping")
        except OperationFailure:
            return False
        finally:
            await client.close()
        return True

    client = _client(url, master)
    try:
        return await ensure_app_user(client["admin"], app, database, password_works)
    finally:
        await client.close()


def db_user(
    url: Annotated[str, typer.Option(help="Database URL without credentials (the tunnel's end).")],
    database: Annotated[str, typer.Option(help="The CA4 database [CA4_MONGO_DB].")] = "ca4",
) -> None:
    """Create the app's database user; stdin: master and app secrets, one JSON line each."""
    try:
        lines = [line for line in sys.stdin.read().splitlines() if line.strip()]
        master, app = (Login.model_validate(json.loads(line)) for line in lines)
    except (ValueError, ValidationError) as error:
        typer.echo(
            "ca4 db-user: stdin must be two JSON lines {username, password}: master, then app "
            f"({type(error).__name__})",
            err=True,
        )
        raise typer.Exit(2) from None
    try:
        typer.echo(asyncio.run(_create(url, master, app, database)), err=True)
    except OverPrivilegedError as refused:
        typer.echo(f"ca4 db-user: {refused}", err=True)
        raise typer.Exit(1) from None

"""``/sdk/``: the edge serves its own SDK wheel as a PEP 503 simple index, with no key."""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

WHEEL_NAME = "ca4_sdk-9.8.7-py3-none-any.whl"


def make_wheel(directory: Path, name: str = WHEEL_NAME) -> bytes:
    """A small wheel with the METADATA pip reads; returns its bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ca4_sdk/__init__.py", "")
        archive.writestr(
            "ca4_sdk-9.8.7.dist-info/METADATA",
            "Metadata-Version: 2.4\nName: ca4-sdk\nVersion: 9.8.7\nRequires-Python: >=3.10\n",
        )
    return path.read_bytes()


async def test_index_lists_the_wheel_with_its_sha256_and_serves_it_without_a_key(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    wheel = make_wheel(tmp_path)
    (tmp_path / "notes.txt").write_text("not a wheel")
    async with make_client(SDK_WHEEL_DIR=tmp_path) as (client, _app):
        root = await client.get("/sdk/")
        project = await client.get("/sdk/ca4-sdk/")
        link = re.search(r'href="([^"]+)"', project.text)
        assert link is not None
        served = await client.get(f"/sdk/ca4-sdk/{link.group(1)}".split("#")[0])
        direct = await client.get(f"/sdk/{WHEEL_NAME}")

    assert root.status_code == 200
    assert root.headers["content-type"] == "text/html; charset=utf-8"
    assert '<a href="ca4-sdk/">ca4-sdk</a>' in root.text
    assert project.status_code == 200
    assert project.headers["content-type"] == "text/html; charset=utf-8"
    assert link.group(1) == f"../{WHEEL_NAME}#sha256={hashlib.sha256(wheel).hexdigest()}"
    assert 'data-requires-python="&gt;=3.10"' in project.text
    assert "notes.txt" not in project.text
    for response in (served, direct):
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.content == wheel


async def test_every_sdk_route_answers_404_when_no_wheel_was_built(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    async with make_client(SDK_WHEEL_DIR=tmp_path / "never-built") as (client, _app):
        answers = [
            await client.get(path) for path in ("/sdk/", "/sdk/ca4-sdk/", f"/sdk/{WHEEL_NAME}")
        ]

    assert [answer.status_code for answer in answers] == [404, 404, 404]
    assert answers[0].json() == {
        "detail": "This edge serves no SDK wheel; install the SDK from its git URL instead."
    }


async def test_only_listed_wheels_are_served_and_nothing_is_writable(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    wheels = tmp_path / "wheels"
    make_wheel(wheels)
    (tmp_path / "secret.whl").write_bytes(b"outside the wheel directory")
    async with make_client(SDK_WHEEL_DIR=wheels) as (client, _app):
        outside = await client.get("/sdk/..%2Fsecret.whl")
        other = await client.get("/sdk/ca4_sdk-0.0.1-py3-none-any.whl")
        upload = await client.post(f"/sdk/{WHEEL_NAME}", content=b"x")

    assert outside.status_code == 404
    assert other.json() == {"detail": "No wheel 'ca4_sdk-0.0.1-py3-none-any.whl'"}
    assert upload.status_code == 405

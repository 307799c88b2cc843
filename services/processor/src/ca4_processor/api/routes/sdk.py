"""The SDK this edge was built with, as a PEP 503 "simple" index: ``pip install --index-url
<edge>/sdk/ ca4-sdk``, or ``pip install <edge>/sdk/<wheel filename>``.

A notebook then installs exactly the SDK that matches the API it talks to, from no public index
(where the name could be squatted). The routes are public and read-only: pip cannot easily send
an API key, and the wheel holds nothing secret. They stay out of the OpenAPI document, which
describes the JSON API: PEP 503 is their contract.
"""

from __future__ import annotations

import hashlib
import html
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse, HTMLResponse

from ca4_processor.api.deps import SettingsDep

PROJECT = "ca4-sdk"
"""The distribution's normalized name (PEP 503), the only project this index lists."""
_WHEEL_GLOB = "ca4_sdk-*.whl"

router = APIRouter(prefix="/sdk", include_in_schema=False)


@dataclass(frozen=True)
class Wheel:
    """One wheel file and what the index says about it."""

    path: Path
    sha256: str
    requires_python: str | None

    @property
    def filename(self) -> str:
        """The wheel's own filename, which pip parses for name, version and tags."""
        return self.path.name


def wheels_in(directory: Path) -> list[Wheel]:
    """The SDK wheels in ``directory``, sorted by name; none when it does not exist."""
    if not directory.is_dir():
        return []
    wheels = []
    for path in sorted(directory.glob(_WHEEL_GLOB)):
        if path.is_file():
            stat = path.stat()
            wheels.append(_describe(path, stat.st_mtime_ns, stat.st_size))
    return wheels


@lru_cache(maxsize=16)
def _describe(path: Path, _mtime_ns: int, _size: int) -> Wheel:
    """Hash and read a wheel once per version of the file (the key includes mtime and size)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            digest.update(chunk)
    return Wheel(path=path, sha256=digest.hexdigest(), requires_python=_requires_python(path))


def _requires_python(path: Path) -> str | None:
    """``Requires-Python`` from the wheel's METADATA, so pip skips a wheel it cannot run."""
    with zipfile.ZipFile(path) as archive:
        names = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        if not names:
            return None
        metadata = HeaderParser().parsestr(archive.read(names[0]).decode("utf-8"))
    value = metadata.get("Requires-Python")
    return str(value) if value else None


def _available(settings: SettingsDep) -> list[Wheel]:
    wheels = wheels_in(settings.SDK_WHEEL_DIR)
    if not wheels:
        raise HTTPException(
            status_code=status.HTTP_404_NOT_FOUND,
            detail="This edge serves no SDK wheel; install the SDK from its git URL instead.",
        )
    return wheels


def _page(title: str, links: list[str]) -> HTMLResponse:
    body = "\n".join(links)
    return HTMLResponse(
        '<!DOCTYPE html>\n<html>\n<head><meta name="pypi:repository-version" content="1.0">'
        f"<title>{html.escape(title)}</title></head>\n<body>\n{body}\n</body>\n</html>\n"
    )


@router.get("/")
async def read_sdk_index(settings: SettingsDep) -> HTMLResponse:
    """The index root: the one project it serves."""
    _available(settings)
    return _page("Simple index", [f'<a href="{PROJECT}/">{PROJECT}</a>'])


@router.get(f"/{PROJECT}/")
async def read_sdk_project(settings: SettingsDep) -> HTMLResponse:
    """The project page: each wheel with its sha256 (pip checks it) and ``Requires-Python``."""
    links = []
    for wheel in _available(settings):
        requires = (
            f' data-requires-python="{html.escape(wheel.requires_python)}"'
            if wheel.requires_python
            else ""
        )
        name = html.escape(wheel.filename)
        links.append(f'<a href="../{name}#sha256={wheel.sha256}"{requires}>{name}</a><br>')
    return _page(f"Links for {PROJECT}", links)


@router.get("/{filename}")
async def read_sdk_wheel(filename: str, settings: SettingsDep) -> FileResponse:
    """The wheel under its own filename; only files the index lists are ever served."""
    for wheel in _available(settings):
        if wheel.filename == filename:
            return FileResponse(
                wheel.path, media_type="application/octet-stream", filename=wheel.filename
            )
    raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"No wheel {filename!r}")

"""Render the README's configuration tables from the settings classes themselves.

``uv run python scripts/config_reference.py`` rewrites the block between the README's
``<!-- BEGIN CONFIG -->`` and ``<!-- END CONFIG -->`` markers; ``--check`` exits 1 when it is
stale, so a new knob cannot ship undocumented (a unit test runs the check).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ca4_processor.core.config import Settings as ProcessorSettings
from ca4_provision.verify.settings import VerifySettings
from ca4_worker.core.config import Settings as WorkerSettings
from pydantic import SecretStr
from pydantic_settings import BaseSettings

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- BEGIN CONFIG -->", "<!-- END CONFIG -->"
HEADER = "| variable | default | meaning |\n|---|---|---|"

SDK_VARIABLES = [
    (
        "CA4_EDGE_API_URL",
        "",
        "Base URL of the edge the SDK reports to (`Reporter(url=...)`): the cluster ingress, or on "
        "the dev path the dev edge (`http://127.0.0.1:8002`, or its ngrok URL).",
    ),
    (
        "CA4_API_KEY",
        "",
        "API key the SDK sends as `Authorization: Bearer` (`Reporter(api_key=...)`).",
    ),
    ("CA4_SESSION_ID", "derived per runtime", "Overrides the SDK's stable per-runtime session id."),
    (
        "CA4_PRIVACY_SALT",
        "random per host",
        "Salt for the hostname hash in the SDK's privacy mode.",
    ),
]


def _default(settings: type[BaseSettings], name: str) -> str:
    field = settings.model_fields[name]
    if field.is_required():
        return "(required)"
    value = field.get_default(call_default_factory=True)
    if value is None or value == "":
        return ""
    if isinstance(value, SecretStr):
        return "(secret)"
    return f"`{value}`"


def _description(settings: type[BaseSettings], name: str) -> str:
    text = settings.model_fields[name].description or ""
    return " ".join(text.replace("|", "\\|").split())


def settings_table(title: str, settings: type[BaseSettings]) -> str:
    """One Markdown table: variable, default, meaning."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    rows = [
        f"| `{prefix}{n.upper()}` | {_default(settings, n)} | {_description(settings, n)} |"
        for n in settings.model_fields
    ]
    return "\n".join(
        [f"#### {title}", "", "| variable | default | meaning |", "|---|---|---|", *rows]
    )


def render() -> str:
    """The whole generated block, markers excluded."""
    sdk_rows = [f"| `{name}` | {default} | {meaning} |" for name, default, meaning in SDK_VARIABLES]
    sections = [
        settings_table("Processor (`services/processor`)", ProcessorSettings),
        settings_table("Worker (`services/worker`)", WorkerSettings),
        settings_table("`ca4 verify`", VerifySettings),
        "\n".join(["#### SDK", "", HEADER, *sdk_rows]),
    ]
    return "\n\n".join(sections)


def updated_readme(text: str) -> str:
    """``text`` with the generated block replaced."""
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{render()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    """Rewrite the README block, or with ``--check`` report whether it is stale."""
    current = README.read_text(encoding="utf-8")
    if BEGIN not in current or END not in current:
        sys.stderr.write(f"{README} lacks the {BEGIN} / {END} markers\n")
        return 2
    wanted = updated_readme(current)
    if "--check" in argv:
        if wanted != current:
            sys.stderr.write(
                "README configuration tables are stale: run scripts/config_reference.py\n"
            )
            return 1
        return 0
    README.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

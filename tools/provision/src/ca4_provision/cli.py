"""Root of the ``ca4`` command; each tool adds its own Typer sub-application here.

Failures reach the operator as one line on stderr and exit code 1; ``ca4 --debug ...`` (or
``CA4_DEBUG=1``) prints the traceback first.
"""

import logging
import os
import traceback
from functools import cache
from importlib.metadata import version
from typing import Annotated, Any

import typer
from ca4_worker.cli import dlq_app, replay, rewind
from ca4_worker.cli_support import OperatorError
from ca4_worker.core.config import Settings as WorkerSettings
from ca4_worker.usage_cli import usage
from pydantic import AliasChoices, ValidationError
from typer._click.core import Context  # Typer vendors Click; this is its Context
from typer.core import TyperGroup
from typer.exceptions import TyperException

from ca4_provision.db_user import db_user
from ca4_provision.devstack.cli import app as devstack_app
from ca4_provision.devstack.settings import DevstackSettings
from ca4_provision.sdk_cli import sdk_app, send
from ca4_provision.verify import verify
from ca4_provision.verify.settings import VerifySettings

PACKAGE = "ca4-provision"


class OneLineErrors(TyperGroup):
    """Prints any error a command raises as one line, with the traceback only under --debug.

    Typer's own outcomes (usage errors, ``typer.Exit``, an answered "no") pass through.
    """

    def invoke(self, ctx: Context) -> Any:
        """Run the command; report what it raises."""
        try:
            return super().invoke(ctx)
        except (TyperException, typer.Exit, typer.Abort):
            raise
        except Exception as error:
            if ctx.params.get("debug"):
                typer.echo("".join(traceback.format_exception(error)), err=True)
            typer.echo(f"error: {_one_line(error)}", err=True)
            raise typer.Exit(1) from error


def _one_line(error: Exception) -> str:
    if isinstance(error, OperatorError):
        return str(error)
    if isinstance(error, ValidationError) and error.title in _SETTINGS_CLASSES:
        return f"invalid settings: {_settings_errors(error)} (ca4 --debug shows the traceback)"
    first_line = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first_line} (ca4 --debug shows the traceback)"


# Every settings class the commands read takes CA4_ variables (env_prefix), so a field's
# variable is the prefix and its name; a field with aliases is reported under its alias.
_ENV_PREFIX = "CA4_"
_SETTINGS_CLASSES = frozenset({WorkerSettings.__name__, VerifySettings.__name__})
"""What a settings error is titled (another model's error is no setting of the operator's)."""


@cache
def _alias_choices() -> list[list[str]]:
    """The variables of each setting with several names (a new name and the one it replaces)."""
    return [
        [str(choice) for choice in field.validation_alias.choices]
        for settings in (WorkerSettings, VerifySettings)
        for field in settings.model_fields.values()
        if isinstance(field.validation_alias, AliasChoices)
    ]


def _variable_set(name: str) -> str:
    """The variable the operator set for the setting pydantic names ``name`` (its first
    alias): the older name, where only that one is set."""
    for choices in _alias_choices():
        if name in choices:
            return next((choice for choice in choices if choice in os.environ), name)
    return name


def _settings_errors(error: ValidationError) -> str:
    """Each failed setting as ``VARIABLE: pydantic's message``, never the value: a database URL
    carries its password."""
    parts = []
    for failure in error.errors(include_url=False, include_context=False, include_input=False):
        message = failure["msg"].removeprefix("Value error, ")
        if not failure["loc"]:  # a check of several settings together names them itself
            parts.append(message)
            continue
        field, *inner = (str(part) for part in failure["loc"])
        name = _variable_set(
            field.upper() if field.upper().startswith(_ENV_PREFIX) else _ENV_PREFIX + field.upper()
        )
        parts.append(f"{'.'.join([name, *inner])}: {message.removeprefix(f'{name}: ')}")
    return "; ".join(parts)


def _print_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"ca4 {version(PACKAGE)}")
        raise typer.Exit


app = typer.Typer(
    name="ca4",
    cls=OneLineErrors,
    help="CA4: local dev stack, provisioning, verification and operator tools.",
    no_args_is_help=True,
)


# The dev stack's port knob for each client setting whose default is the dev stack's default port.
_MOVED_PORTS = {
    "CA4_KAFKA_BOOTSTRAP_SERVERS": "CA4_DEVSTACK_KAFKA_PORT",
    "CA4_MONGO_URL": "CA4_DEVSTACK_MONGO_PORT",
    "CA4_PROMETHEUS_URL": "CA4_DEVSTACK_PROMETHEUS_PORT",
}


def _follow_moved_dev_stack() -> None:
    """Point the operator commands (usage, replay, dlq, verify) at a dev stack moved with its
    port knobs, as ``ca4 send`` follows the edge's: their defaults are the default ports, so
    with the knobs set and no ``eval "$(ca4 devstack env)"`` they read another stack.
    Only where the knob is set and the setting is not: an explicit setting always wins."""
    moved = {name for name, knob in _MOVED_PORTS.items() if os.environ.get(knob)}
    if not moved - os.environ.keys():
        return
    exports = DevstackSettings.from_env().client_env()
    for name in moved:
        os.environ.setdefault(name, exports[name])


@app.callback()
def main(
    debug: Annotated[
        bool,
        typer.Option("--debug", envvar="CA4_DEBUG", help="Print the traceback of a failure."),
    ] = False,
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """CA4 operator and developer tools."""
    _follow_moved_dev_stack()
    if debug:
        logging.basicConfig(level=logging.INFO)
    else:
        # Client libraries log each failed connection attempt; the one-line error says it all.
        logging.getLogger().addHandler(logging.NullHandler())


app.add_typer(devstack_app, name="devstack")
# A command, not a group: its help shows `ca4 verify [OPTIONS]`, not `COMMAND [ARGS]...`.
app.command("verify", help="Send one test event through the pipeline and check every hop.")(verify)
app.add_typer(sdk_app, name="sdk")
app.command("send")(send)
app.add_typer(dlq_app, name="dlq")
app.command("replay")(replay)
app.command("rewind")(rewind)
app.command("db-user")(db_user)
app.command("usage")(usage)

"""Root of the ``ca4`` command; each tool adds its own Typer sub-application here."""

import typer
from ca4_worker.cli import dlq_app, replay

from ca4_provision.devstack.cli import app as devstack_app
from ca4_provision.sdk_cli import sdk_app, send
from ca4_provision.verify import app as verify_app

app = typer.Typer(
    name="ca4",
    help="CA4: local dev stack, provisioning, verification and operator tools.",
    no_args_is_help=True,
)


@app.callback()
def main() -> None:
    """CA4 operator and developer tools."""


app.add_typer(devstack_app, name="devstack")
app.add_typer(verify_app, name="verify")
app.add_typer(sdk_app, name="sdk")
app.command("send")(send)
app.add_typer(dlq_app, name="dlq")
app.command("replay")(replay)

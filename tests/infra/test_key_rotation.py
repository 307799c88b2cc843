"""The key rotation docs/provisioning.md gives: read the live keys file with the guide's
go-template into ``keys.txt``, edit it, and hand it to ``make ca4-deploy-app
CA4_API_KEY_HASHES="$(cat keys.txt)"``, whose recipe checks it with check-app-secrets.py against
what the live Secret holds before anything is applied."""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from ca4_auth import ApiKeyRing, Scope

from tests.infra.conftest import REPO
from tests.support.doc_commands import run_as_bash

pytestmark = pytest.mark.stand_in(
    "kubectl get secret ca4-app-secrets (the guide's key rotation) and make ca4-deploy-app's "
    "apply: no Kubernetes here; ran instead: the guide's go-template and the make target's own, "
    "by the real kubectl, over the same Secret made by `kubectl create secret generic "
    "--dry-run=client`, and the target's check-app-secrets.py on "
    'CA4_API_KEY_HASHES="$(cat keys.txt)" as its recipe writes it'
)

GUIDE = REPO / "docs" / "provisioning.md"
INFRA_MK = REPO / "mk" / "infra.mk"
CHECK = REPO / "tools" / "provision" / "scripts" / "check-app-secrets.py"
DEPLOY = 'make ca4-deploy-app CA4_API_KEY_HASHES="$(cat keys.txt)"'
#: What the recipe does with CA4_API_KEY_HASHES, and how it runs the check (make's ``$$`` is ``$``).
RECIPE_WRITES = """printf '%s' "$$CA4_API_KEY_HASHES" > "$$new/api-key-hashes";"""
RECIPE_CHECKS = (
    'check-app-secrets.py --target $@ --env $(ENV) --new "$$new" --live "$$live" \\\n'
    "\t\t--ca-file '$(CA4_DB_CA_FILE)' $(if $(filter yes,$(CA4_REVOKE_KEYS)),--revoke-keys)"
)
KEYS = "api-key-hashes"


def guide_text() -> str:
    """The guide with each run of whitespace one space (a code span may wrap)."""
    return " ".join(GUIDE.read_text(encoding="utf-8").split())


def documented_read() -> tuple[str, str, str]:
    """Namespace, Secret and go-template of the guide's ``kubectl ... > keys.txt``."""
    found = re.search(
        r"`kubectl -n (\S+) get secret (\S+) -o go-template='([^']+)' > keys\.txt`", guide_text()
    )
    assert found, "docs/provisioning.md no longer reads the live keys into keys.txt"
    namespace, secret, template = found.groups()
    return namespace, secret, template


def documented_new_key_lines(key_id: str, tenant: str) -> str:
    """The guide's two commands that make a key and its entry, ids filled in."""
    text = guide_text()
    make_key = re.search(r"`(key=\$\(python3 -c '[^']+'\))`", text)
    entry = re.search(r"`(printf '%s:%s:%s:write\+read\\n' <key id> [^`]+ <tenant>)`", text)
    assert make_key, "docs/provisioning.md no longer says how to make a key"
    assert entry, "docs/provisioning.md no longer says how to make a key's entry"
    printf = entry[1].replace("<key id>", key_id).replace("<tenant>", tenant)
    return f"{make_key[1]}\n{printf} >> keys.txt\nprintf '%s' \"$key\" > new.key\n"


def make_value(expression: str) -> str:
    """What make expands ``expression`` to, with the repository's Makefile read."""
    done = subprocess.run(
        [
            "make",
            "-s",
            "--no-print-directory",
            "--eval",
            f"ca4-test-print: ; $(info {expression})",
            "ca4-test-print",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


def kubectl_template(namespace: str, secret: str, data: Path, template: str) -> str:
    """``template`` run by the real kubectl over the Secret made from ``data``'s files."""
    done = subprocess.run(
        [
            "kubectl",
            "-n",
            namespace,
            "create",
            "secret",
            "generic",
            secret,
            f"--from-file={data}",
            "--dry-run=client",
            f"-o=go-template={template}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


LIVE_KEYS = (
    "# key_id:sha256(key)[:tenant[:scope+scope...]]\n"
    f"ingest-ci:{sha256('old-ci-key')}:acme:write  # reports for tenant acme\n"
    f"dash:{sha256('dash-key')}:acme:read\n"
)
PROD_URL = (
    "mongodb://ca4app:s3cret@docdb.example.internal:27017/ca4?tls=true"
    "&tlsCAFile={ca_file}&replicaSet=rs0&retryWrites=false"
)


def rotate(tmp_path: Path, edit: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The guide's rotation up to the target's check; ``edit`` is bash run on keys.txt."""
    namespace, secret, template = documented_read()
    assert make_value("$(CA4_APP_NAMESPACE)/$(CA4_APP_SECRET)") == f"{namespace}/{secret}"
    ca_file = make_value("$(CA4_DB_CA_FILE)")
    cluster = tmp_path / "cluster"  # what the live Secret holds
    cluster.mkdir()
    (cluster / KEYS).write_text(LIVE_KEYS, encoding="utf-8")
    (cluster / "mongo-url").write_text(PROD_URL.format(ca_file=ca_file), encoding="utf-8")

    keys_txt = kubectl_template(namespace, secret, cluster, template)
    assert keys_txt == LIVE_KEYS, "the guide's go-template does not print the keys file"
    (tmp_path / "keys.txt").write_text(keys_txt, encoding="utf-8")

    # The recipe reads the live Secret with its own go-template, then writes the new one.
    live, new = tmp_path / "live", tmp_path / "new"
    live.mkdir()
    new.mkdir()
    read_live = shlex.split(make_value(f"$(call CA4_APP_SECRET_VALUE,{KEYS})"))
    make_template = next(w for w in read_live if w.startswith("go-template=")).split("=", 1)[1]
    for name in (KEYS, "mongo-url"):
        read_one = make_template.replace(KEYS, name)
        (live / name).write_text(kubectl_template(namespace, secret, cluster, read_one))
    (new / "mongo-url").write_text((live / "mongo-url").read_text())  # CA4_MONGO_URL unset

    recipe = INFRA_MK.read_text(encoding="utf-8")
    assert RECIPE_WRITES in recipe
    assert RECIPE_CHECKS in recipe
    assert DEPLOY in GUIDE.read_text(encoding="utf-8").replace("\n", " ")
    script = (
        f"{edit}\n"
        f'CA4_API_KEY_HASHES="$(cat keys.txt)"\n'
        f"{RECIPE_WRITES.replace('$$', '$').replace('$new', str(new))}\n"
        f"{shlex.quote(sys.executable)} {shlex.quote(str(CHECK))} --target ca4-deploy-app "
        f"--env prod --new {new} --live {live} --ca-file {shlex.quote(ca_file)}\n"
    )
    done = run_as_bash(script, cwd=tmp_path, timeout=120)
    return done, new


def test_rotating_and_adding_a_key_as_the_guide_says_passes_the_deploy_check(
    tmp_path: Path,
) -> None:
    edit = (
        # Rotate ingest-ci's hash under the same id, then add a key as the guide makes one.
        f"sed -i 's/{sha256('old-ci-key')}/{sha256('new-ci-key')}/' keys.txt\n"
        + documented_new_key_lines("notebook-1", "acme")
    )
    done, new = rotate(tmp_path, edit)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    ring = ApiKeyRing.configured(environment="prod", inline_hashes="", keys_file=new / KEYS)
    new_key = (tmp_path / "new.key").read_text()
    added = ring.identify(new_key)
    assert added is not None
    assert (added.key_id, added.tenant, added.scopes) == (
        "notebook-1",
        "acme",
        {Scope.WRITE, Scope.READ},
    )
    rotated = ring.identify("new-ci-key")
    assert rotated is not None
    assert rotated.key_id == "ingest-ci"
    assert ring.identify("old-ci-key") is None
    assert ring.identify("dash-key") is not None, "a key the rotation did not touch was revoked"


def test_a_keys_txt_that_lost_a_line_is_refused_before_anything_is_applied(
    tmp_path: Path,
) -> None:
    done, _ = rotate(tmp_path, "sed -i '/^dash:/d' keys.txt")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "ca4-deploy-app: CA4_API_KEY_HASHES drops key id(s) dash that the live Secret holds: the "
        "pods would refuse them within a minute. List them again, leave CA4_API_KEY_HASHES unset "
        "to keep the live keys, or set CA4_REVOKE_KEYS=yes to revoke them (nothing was applied)"
    )

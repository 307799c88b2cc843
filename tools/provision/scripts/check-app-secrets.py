"""Check the app Secret ``make ca4-deploy-app`` is about to apply, before any pod reads it.

Usage: uv run python check-app-secrets.py --target NAME --env ENV --new DIR [--live DIR]
           [--ca-file PATH] [--revoke-keys]

``--new DIR`` holds the Secret's files as they will be applied (``api-key-hashes``,
``mongo-url``); ``--live DIR`` the same keys as the cluster's Secret holds them now (a missing
or empty file: none). RefusedError, in one line naming the reason and never a key or a URL:

- keys the services would refuse at start: the project's own parser (``ca4_auth.keys``), as the
  pods run it with ``CA4_ENVIRONMENT=prod`` (the ca4-app chart's default in every value set);
- key ids the live Secret has and the new keys drop, unless ``--revoke-keys``
  (``CA4_REVOKE_KEYS=yes``): the pods reload the keys file live, so a partial
  ``CA4_API_KEY_HASHES`` revokes the others within a minute, whatever Helm does next;
- a database URL pymongo cannot parse and, in prod (DocumentDB), one without TLS, without the
  ``tlsCAFile`` the chart mounts, or asking for retryable writes (the worker's own rule).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ca4_auth.keys import ApiKeyConfigError, check_key_settings, parse_key_entries
from ca4_worker.core.config import without_retryable_writes
from pymongo.errors import InvalidURI
from pymongo.uri_parser import parse_uri

KEYS = "api-key-hashes"
MONGO_URL = "mongo-url"
SOURCE = "CA4_API_KEY_HASHES"


class RefusedError(Exception):
    """The Secret must not be applied; the message says why (never a key or a URL)."""


def read(folder: Path | None, key: str) -> str:
    """One key of a Secret's folder; empty when the folder or the file is missing."""
    if folder is None or not (folder / key).is_file():
        return ""
    return (folder / key).read_text(encoding="utf-8")


def key_ids(text: str) -> set[str]:
    """The key ids of keys entries, read leniently (a live Secret written before the checks)."""
    ids = set()
    for line in text.splitlines():
        for entry in line.partition("#")[0].split(","):
            if entry.strip():
                ids.add(entry.strip().split(":", 1)[0])
    return ids


def check_keys(new: str, live: str, *, revoke: bool) -> list[str]:
    """The key ids ``new`` drops from ``live`` (allowed by ``revoke``); raises RefusedError."""
    try:
        kept = {key.key_id for key in parse_key_entries(new, source=SOURCE).values()}
        if not kept:
            raise RefusedError(
                f"{SOURCE} holds no key (blank lines and comments only): the services refuse "
                "to start without one in prod"
            )
        check_key_settings("prod", new, None)
    except (ApiKeyConfigError, ValueError) as error:
        raise RefusedError(str(error)) from None
    dropped = sorted(key_ids(live) - kept)
    if dropped and not revoke:
        raise RefusedError(
            f"{SOURCE} drops key id(s) {', '.join(dropped)} that the live Secret holds: the pods "
            "would refuse them within a minute. List them again, leave CA4_API_KEY_HASHES unset "
            "to keep the live keys, or set CA4_REVOKE_KEYS=yes to revoke them"
        )
    return dropped


def _redacted(message: str, url: str) -> str:
    """``message`` without the URL's user name or password, should a parser quote them."""
    userinfo = urlsplit(url).netloc.rpartition("@")[0]
    for secret in {userinfo, *userinfo.split(":")} - {""}:
        message = message.replace(secret, "***")
    return message


def check_mongo_url(url: str, *, env: str, ca_file: str) -> None:
    """Refuse a URL the services could not use; raises RefusedError."""
    parts = urlsplit(url)
    if parts.scheme not in {"mongodb", "mongodb+srv"}:
        raise RefusedError("CA4_MONGO_URL is not a mongodb:// or mongodb+srv:// URL")
    query = parse_qsl(parts.query)
    if parts.scheme == "mongodb":  # +srv would resolve DNS here
        # tlsCAFile names a file in the pod, which pymongo would look for on this machine.
        local = [(k, v) for k, v in query if k.lower() != "tlscafile"]
        try:
            parse_uri(urlunsplit(parts._replace(query=urlencode(local))))
        except (InvalidURI, ValueError) as error:
            raise RefusedError(f"CA4_MONGO_URL: {_redacted(str(error), url)}") from None
    if env != "prod":
        return
    options = {k.lower(): v for k, v in query}
    if (options.get("tls") or options.get("ssl") or "").lower() != "true":
        raise RefusedError(
            "CA4_MONGO_URL (ENV=prod: DocumentDB, which requires TLS) does not say tls=true"
        )
    if options.get("tlscafile") != ca_file:
        found = f"tlsCAFile={options['tlscafile']}" if "tlscafile" in options else "no tlsCAFile"
        raise RefusedError(
            f"CA4_MONGO_URL names {found}: the ca4-app chart mounts DocumentDB's CA bundle "
            f"at {ca_file} (config.mongo.caBundle), so the URL must say tlsCAFile={ca_file}"
        )
    try:
        without_retryable_writes(url)
    except ValueError as error:
        raise RefusedError(str(error)) from None


def main(argv: list[str] | None = None) -> int:
    """Check the new Secret against the rules and the live one; 1 and one line when refused."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="check-app-secrets")
    parser.add_argument("--env", required=True)
    parser.add_argument("--new", type=Path, required=True)
    parser.add_argument("--live", type=Path)
    parser.add_argument("--ca-file", default="")
    parser.add_argument("--revoke-keys", action="store_true")
    args = parser.parse_args(argv)
    try:
        dropped = check_keys(read(args.new, KEYS), read(args.live, KEYS), revoke=args.revoke_keys)
        check_mongo_url(read(args.new, MONGO_URL), env=args.env, ca_file=args.ca_file)
    except RefusedError as refused:
        print(f"{args.target}: {refused} (nothing was applied)", file=sys.stderr)
        return 1
    if dropped:
        print(f"{args.target}: CA4_REVOKE_KEYS=yes: revoking key id(s) {', '.join(dropped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

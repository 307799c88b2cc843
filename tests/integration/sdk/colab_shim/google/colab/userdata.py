"""Colab secrets as the notebook reads them: ``userdata.get(name)``, the test's values.

The test writes the secrets to a JSON file and names it in ``COLAB_SECRETS_FILE`` for the
kernel; a missing secret raises like Colab's ``SecretNotFoundError``.
"""

import json
import os


class SecretNotFoundError(Exception):
    """Colab's error for a secret that is not defined."""


class NotebookAccessError(Exception):
    """Colab's error for a secret this notebook was not given access to (never raised here)."""


def get(key: str) -> str:
    """The secret ``key``, as Colab's ``userdata.get`` returns it."""
    with open(os.environ["COLAB_SECRETS_FILE"], encoding="utf-8") as secrets:
        values: dict[str, str] = json.load(secrets)
    if key not in values:
        raise SecretNotFoundError(f"Secret {key} does not exist.")
    return values[key]

"""Prod refuses to start without a usable API key: separators and comments are not keys."""

from __future__ import annotations

import pytest
from ca4_processor.core.config import Settings
from pydantic import ValidationError


@pytest.mark.parametrize("blank", ["", "   ", ",", " , ,", "# rotated out\n", "\n\n"])
def test_prod_with_only_blank_key_entries_refuses_to_start(blank: str) -> None:
    with pytest.raises(ValidationError, match="CA4_ENVIRONMENT=prod needs API keys"):
        Settings(ENVIRONMENT="prod", API_KEY_HASHES=blank, API_KEYS_FILE=None)


def test_prod_with_one_real_key_among_blank_entries_starts() -> None:
    settings = Settings(ENVIRONMENT="prod", API_KEY_HASHES=f" , ops:{'ab' * 32},")
    assert not settings.uses_dev_key

"""``python -m ca4_sdk probe [nvml|nvidia-smi|none]``: print what the collector sees, as JSON.

Needs only the SDK and its dependencies (``requests``; ``nvidia-ml-py`` for NVML), not the
``ca4`` command, so it runs on a bare GPU host with the SDK's wheel installed.
"""

from __future__ import annotations

import json
import sys

from ca4_sdk.probe import probe

COLLECTORS = ("nvml", "nvidia-smi", "none")
USAGE = f"usage: python -m ca4_sdk probe [{'|'.join(COLLECTORS)}]\n"


def main(argv: list[str]) -> int:
    """Run the probe and print the report as JSON."""
    # An unknown collector used to fall through to none: the probe said "no GPU" on a GPU host.
    if not argv or argv[0] != "probe" or len(argv) > 2 or not set(argv[1:]) <= set(COLLECTORS):
        sys.stderr.write(USAGE)
        return 2
    prefer = argv[1] if len(argv) > 1 else None
    sys.stdout.write(json.dumps(probe(prefer), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

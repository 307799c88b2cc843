"""Run the NVML collector against the real ``pynvml`` and record every call and its answer.

The recording (JSON) lets the unit tests replay a real GPU's NVML answers through a fake
``pynvml`` module. Read-only: only ``nvmlDeviceGet*`` / ``nvmlSystemGet*`` queries are made.

Usage: ``PYTHONPATH=sdk/src python3 sdk/scripts/record_nvml.py OUT.json``
"""

from __future__ import annotations

import ctypes
import json
import sys
from typing import Any

import pynvml
from ca4_sdk.collectors.nvml import NvmlCollector


class HandleRef:
    """A real NVML handle plus a stable label (``gpu0``, ``gpu0.mig1``) for the recording."""

    def __init__(self, handle: Any, label: str) -> None:
        self.handle = handle
        self.label = label


def _plain(value: Any) -> Any:  # noqa: PLR0911 - one return per kind of value
    if isinstance(value, HandleRef):
        return {"__handle__": value.label}
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, ctypes.Array):
        return [_plain(item) for item in value]
    if isinstance(value, (ctypes.Structure, ctypes.Union)):
        return {name: _plain(getattr(value, name)) for name, *_ in value._fields_}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (int, float, str)) or value is None:
        return value
    if hasattr(value, "__dict__"):  # pynvml's nvmlFriendlyObject (process lists)
        return {name: _plain(item) for name, item in vars(value).items()}
    return repr(value)


def _arg_key(value: Any) -> str:
    return value.label if isinstance(value, HandleRef) else repr(value)


class RecordingNvml:
    """Proxies ``pynvml``; records ``calls[key] = result`` or ``{"nvml_error": code}``."""

    def __init__(self) -> None:
        self.calls: dict[str, Any] = {}
        self.constants: dict[str, Any] = {}
        self.NVMLError = pynvml.NVMLError

    def __getattr__(self, name: str) -> Any:
        real = getattr(pynvml, name)
        if not callable(real):
            self.constants[name] = real
            return real

        def call(*args: Any, **kwargs: Any) -> Any:
            parts = [_arg_key(a) for a in args] + [f"{k}={v!r}" for k, v in sorted(kwargs.items())]
            key = f"{name}({', '.join(parts)})"
            real_args = [a.handle if isinstance(a, HandleRef) else a for a in args]
            try:
                result = real(*real_args, **kwargs)
            except pynvml.NVMLError as error:
                self.calls[key] = {"nvml_error": error.value}
                raise
            if name == "nvmlDeviceGetHandleByIndex":
                result = HandleRef(result, f"gpu{args[0]}")
            elif name == "nvmlDeviceGetMigDeviceHandleByIndex":
                result = HandleRef(result, f"{args[0].label}.mig{args[1]}")
            self.calls[key] = _plain(result)
            return result

        return call


def main(path: str) -> None:
    """Record one collection into ``path`` and print the collected result's summary."""
    recorder = RecordingNvml()
    collector = NvmlCollector(recorder)  # type: ignore[arg-type]
    result = collector.collect()
    collector.close()
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(
            {"constants": recorder.constants, "calls": recorder.calls},
            handle,
            indent=1,
            sort_keys=True,
        )
    print(
        json.dumps(
            {
                "gpus": len(result.gpus),
                "unavailable": result.unavailable_fields,
                "errors": result.errors,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])

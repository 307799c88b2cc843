"""Hot paths skip creating spans exactly when nothing can record them."""

from __future__ import annotations

import pytest
from ca4_telemetry import spans_recorded, tracing
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider


def use_provider(monkeypatch: pytest.MonkeyPatch, provider: trace.TracerProvider) -> None:
    monkeypatch.setattr(tracing.trace, "get_tracer_provider", lambda: provider)


def test_no_sdk_provider_records_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    use_provider(monkeypatch, trace.ProxyTracerProvider())

    assert not spans_recorded()


def test_without_exporter_nothing_is_recorded_until_one_is_added(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sampler = tracing.RecordOnceExported()
    use_provider(monkeypatch, TracerProvider(sampler=sampler))

    assert not spans_recorded()
    sampler.exporting = True
    assert spans_recorded()


def test_an_sdk_sampler_may_record(monkeypatch: pytest.MonkeyPatch) -> None:
    use_provider(monkeypatch, TracerProvider())

    assert spans_recorded()

"""When traces are exported: the standard OpenTelemetry variables decide."""

from __future__ import annotations

import pytest

from voice_runtime.observe.tracing import wanted


@pytest.mark.parametrize(("env", "on"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    # compose passes an unset variable through as an empty one
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
])
def test_traces_are_exported_only_when_an_otlp_endpoint_is_set_and_the_sdk_is_not_disabled(
    env: dict[str, str], on: bool
) -> None:
    assert wanted(env) is on

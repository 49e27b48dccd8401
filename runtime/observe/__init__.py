"""What a running agent tells its operators: one record per tool call and its sinks
(``tool_calls``), Prometheus counters (``metrics``), OpenTelemetry spans (``tracing``),
log formats with redaction (``logs``) and serve's journal of recent calls
(``call_journal``).

May import: ``spec`` and ``core``. It never calls up into plugins, MCP or a session: they
hand it records, and it hands records on to the sinks it was given.
"""

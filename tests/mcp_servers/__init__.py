"""Real MCP servers (and helpers to run them) for the test suite.

`recorder.py` is a script, run as a separate process over stdio, streamable HTTP or
SSE; `harness.py` starts it and reads back what it recorded.
"""

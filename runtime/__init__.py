"""voice-runtime: LiveKit voice agents with MCP tools, from a folder of YAML specs.

This module is the public face for plugin authors: ``hookimpl`` marks hook
implementations; the hooks themselves are documented in ``voice_runtime.plugins.hookspecs``.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("voice_runtime")

__all__ = ["__version__", "hookimpl"]

"""One call: a spec turned into a livekit ``AgentSession`` (``runner``), with its fillers,
handoffs, unbacked-claim watch, audio without a room (``audio_io``), simulated speech
(``speech_loop``), text chat and livekit's console, and ``voice-runtime test``
(``testing/``), which plays cases through real sessions.

May import: ``mcp``, ``plugins``, ``observe``, ``spec``, ``core`` and livekit (lazily,
inside the functions that need it). Never ``serve`` or ``commands``.
"""

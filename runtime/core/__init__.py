"""The base every layer may use: regular-file reads and private writes (``filesystem``),
escaping for terminals (``terminal``), user regexes with a timeout (``user_regex``) and
every private livekit/mcp attribute the runtime reads (``livekit_compat``).

May import: the standard library and third-party packages only, never another
``voice_runtime`` package; livekit only lazily, inside ``livekit_compat``.
"""

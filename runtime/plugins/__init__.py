"""Plugins: the ``voice_runtime_*`` hooks (``hookspecs``), the plugin manager built fresh
per use (``manager``: built-ins, entry points, then ``plugins/*.py`` tried in a child
process by ``trial``), what plugins registered (``registry``), plugin tool functions
(``functions``) and the built-in providers, plugins like any other (``builtin/``).

May import: ``observe``, ``spec`` and ``core``. livekit only inside the built-in
providers' factories, which build livekit objects.
"""

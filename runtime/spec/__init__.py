"""Spec files: the pydantic models (``models``), the YAML loader with ``file:line:col``
errors (``loader``, ``errors``), the JSON Schema (``schema``), the words for what a spec
will run (``describe``), the handoff graph (``handoffs``) and the values that came from
``${VAR}`` with the one ``redact`` for every shape they take (``secrets``).

May import: ``core`` only. Plugins sit above: the loader is handed the plugin manager
and the models the registry, typed by the small Protocols declared here.
"""

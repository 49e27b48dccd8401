"""Imported in livekit's forkserver (serve/preload.py): the plugin manager of the
built-in plugins and its spec model, made once, so that a job process of a serve with
no plugin of the operator's starts with them copy-on-write instead of building its own
in its prewarm (~17 MiB of each job process's private memory: pluggy's hooks, the
registry and the pydantic spec model compiled for its providers; concurrent_calls.py
--smaps). Built only when nothing but the built-ins is installed: an entry-point plugin
is the operator's code, which does not run in the forkserver (it could start a thread
before the fork). Plugin files (``--plugins``) change while serve runs: a job of a serve
that published any builds its own manager from them, as before (job._accepted_plugins)."""

from __future__ import annotations

import importlib.metadata

from ..plugins.manager import PROJECT, PluginFiles, make_plugin_manager
from ..spec.models import spec_model

PLUGINS = None
if not importlib.metadata.entry_points(group=PROJECT):
    PLUGINS = make_plugin_manager(None, entry_points=False, files=PluginFiles(), trial=False)
    spec_model(PLUGINS.registry)  # cached per registry: the job's prewarm finds it built

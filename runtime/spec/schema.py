"""The JSON Schema of a spec, for editors (yaml-language-server) and CI validators."""

from __future__ import annotations

import json
from typing import Any

from .models import RegistryView, spec_model

SCHEMA_ID = "https://voice-runtime.dev/schemas/agent.v1.json"


def schema_dict(registry: RegistryView) -> dict[str, Any]:
    schema = spec_model(registry).model_json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "voice-runtime agent spec (v1)",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def schema_json(registry: RegistryView) -> str:
    return json.dumps(schema_dict(registry), indent=2, sort_keys=True) + "\n"

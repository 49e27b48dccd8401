"""Spec files: pydantic models, the YAML loader with file:line:col errors, the JSON Schema."""

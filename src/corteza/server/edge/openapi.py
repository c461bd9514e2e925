"""OpenAPI helpers for routes that read their body themselves (to parse it off the loop)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from corteza.wire import ErrorBody


def request_body(
    model: type[BaseModel],
    content_type: str = "application/json",
    *,
    also: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``openapi_extra`` documenting ``model`` as the request body, refs inlined.

    ``also`` adds other accepted content types (media type objects by content type).
    """
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})
    return {
        "requestBody": {
            "required": True,
            "content": {content_type: {"schema": _inline(schema, defs)}, **(also or {})},
        }
    }


def binary_body(content_type: str, description: str) -> dict[str, Any]:
    """A raw binary body of ``content_type``, for :func:`request_body`'s ``also``."""
    return {
        content_type: {"schema": {"type": "string", "format": "binary"}, "description": description}
    }


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Document error statuses with the wire's error body."""
    return {status: {"model": ErrorBody} for status in statuses}

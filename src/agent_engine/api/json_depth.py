"""Refuse JSON request bodies nested deeper than the configured depth with a 422, before any
route parses them.

A document deeper than the serializers' own limits (near 255 levels) could be parsed, validated
and stored, and then every read that serializes it would fail; refusing depth at the edge keeps
every stored document servable. Runs inside :class:`BodySizeLimit`, so the body it buffers is
already bounded.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from agent_engine.access_errors import JsonTooDeepError
from agent_engine.api.asgi_messages import replaying, send_problem
from agent_engine.domain.json_depth import text_exceeds_depth

DEPTH_SETTING = "AGENT_ENGINE_MAX_JSON_DEPTH"


def _parsed_as_json(scope: Scope) -> bool:
    """Whether the framework would parse this body as JSON: no content type, or a JSON one."""
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            media_type: bytes = value.split(b";", 1)[0].strip().lower()
            return media_type == b"application/json" or media_type.endswith(b"+json")
    return True


class JsonDepthLimit:
    """Pure ASGI middleware: counts the nesting of a JSON body in one pass over its bytes."""

    def __init__(self, app: ASGIApp, max_depth: int) -> None:
        self.app = app
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _parsed_as_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)  # disconnect: let the app see it
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if text_exceeds_depth(body, self.max_depth):
            await self._refuse(scope, send)
            return
        await self.app(scope, replaying(body, receive), send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        error = JsonTooDeepError(
            f"JSON body nests deeper than {self.max_depth} levels ({DEPTH_SETTING})",
            limit=DEPTH_SETTING,
            maximum=self.max_depth,
            errors=[{"field": "body", "message": "nested too deep", "type": "json_too_deep"}],
        )
        problem = error.problem()
        problem["instance"] = scope.get("path", "")
        await send_problem(send, problem)

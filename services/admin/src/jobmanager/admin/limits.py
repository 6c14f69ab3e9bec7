"""What the admin refuses before a route does any work, and how much of a request it reads.

* **Long digit runs in the path**: a path segment of more than `MAX_DIGITS` digits is a 404
  before routing. No id has more than 19 digits, and Python refuses to turn more than 4,300
  into an int, which is what a route's `{id:int}` would try (and fail with a 500).
* **Body size**: a body over the limit (`JOBMANAGER_ADMIN_MAX_BODY_BYTES`) is a 413, decided
  while it is read: from its Content-Length before reading anything, else (chunked) as soon
  as the bytes received pass the limit, so no more than the limit and one chunk is ever held.
  The body is read only by the route, and only after the caller's key and role were checked
  (`auth.RoleRoute`): a caller without a valid key is refused without a byte of it read.
* **JSON**: bodies must be I-JSON (RFC 7493): no `NaN` or `Infinity` (not JSON, but
  Python's parser takes them and the encoder would answer `null`) and no unpaired surrogate
  in a string (not Unicode: no response holding it can be encoded, and Postgres cannot store
  it). Both are a 422 naming where they are.
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobmanager.admin.problems import InvalidBody, problem

MAX_DIGITS = 100
_LONG_NUMBER = re.compile(rf"/[0-9]{{{MAX_DIGITS + 1},}}(?=/|$)")


class BodyTooLarge(InvalidBody):
    def __init__(self, limit: int) -> None:
        message = f"the request body is larger than {limit} bytes, the limit"
        super().__init__((), message, "too_large", status=413)


class RequestLimits:
    """Pure ASGI middleware: refuses over-long digit runs in the path and limits the body
    to `max_body_bytes` while the route reads it."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _LONG_NUMBER.search(scope["path"]):
            response = problem(404, f"no such resource (no id has more than {MAX_DIGITS} digits)")
            await response(scope, receive, send)
            return
        await self.app(scope, self._limited(scope, receive), send)

    def _limited(self, scope: Scope, receive: Receive) -> Receive:
        limit = self.max_body_bytes
        declared = _content_length(scope)
        received = 0

        async def limited() -> Message:
            nonlocal received
            if declared is not None and declared > limit:
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        return limited


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


class StrictJSONRequest(Request):
    """A request whose JSON body must be I-JSON (RFC 7493); see the module's docstring."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


def loads(body: bytes) -> Any:
    """Parse a JSON body, refusing what is not I-JSON with `InvalidBody` (a 422)."""
    document = json.loads(body, parse_constant=_not_a_number)
    where = _unpaired_surrogate(document)
    if where is not None:
        raise InvalidBody(
            ("body", *where), "a string holds an unpaired surrogate: JSON text must be Unicode"
        )
    return document


def _not_a_number(name: str) -> NoReturn:
    raise InvalidBody(("body",), f"{name} is not a JSON number: numbers must be finite")


def _unpaired_surrogate(document: Any) -> tuple[str | int, ...] | None:
    """Where the first string holding an unpaired surrogate is, if any (iteratively: no
    nesting can exhaust the stack)."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), document)]
    while stack:
        loc, item = stack.pop()
        if isinstance(item, str):
            if not _is_unicode(item):
                return loc
        elif isinstance(item, list):
            stack.extend(((*loc, i), value) for i, value in enumerate(item))
        elif isinstance(item, dict):
            for key, value in item.items():
                if not _is_unicode(key):
                    return (*loc, key.encode("utf-8", "backslashreplace").decode())
                stack.append(((*loc, key), value))
    return None


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True

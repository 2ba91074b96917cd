"""API keys (who may read and write what) and request size limits."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ApiKeys:
    """Keys accepted in ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``.

    Three kinds of endpoint:

    * writes (events, catalogue, forget, models) always need a key;
    * user data (``/users``, ``/users/{id}/history``, and ``/recommend`` with ``explain`` or
      ``reasons``, whose explanations quote the user's own history, or ``keep_seen``, which
      shows it) need one unless ``public_user_data``; without one, ``/recommend`` does not
      echo a query it took from the user's stored searches;
    * other reads (``/recommend``, ``/items``, ``/metrics``, ``/model``, the dashboard) need
      one only with ``protect_reads``. ``/health`` and the pages never do.

    Args:
        keys: the accepted keys (compared in constant time).
        protect_reads: require a key on every read endpoint (user data included).
        public_user_data: let anyone read user ids and histories (a demo on a laptop).
    """

    def __init__(
        self, keys: Sequence[str], *, protect_reads: bool = False, public_user_data: bool = False
    ) -> None:
        self.keys = [k.encode() for k in keys if k]
        if not self.keys:
            raise ValueError("give at least one API key")
        self.protect_reads = protect_reads
        self.public_user_data = public_user_data and not protect_reads

    def _given(self, request: Request) -> bytes | None:
        key = request.headers.get("x-api-key")
        if key is None:
            auth = request.headers.get("authorization", "")
            scheme, _, token = auth.partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else None
        return key.encode("latin-1") if key else None

    def check(self, request: Request) -> None:
        given = self._given(request)
        if given is None:
            raise HTTPException(
                401,
                "missing API key: send it as 'X-API-Key: KEY' or 'Authorization: Bearer KEY'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not any(hmac.compare_digest(given, k) for k in self.keys):
            raise HTTPException(403, "invalid API key")

    async def write(self, request: Request) -> None:
        """FastAPI dependency of every write endpoint."""
        self.check(request)

    async def read(self, request: Request) -> None:
        """FastAPI dependency of read endpoints (a no-op unless reads are protected)."""
        if self.protect_reads:
            self.check(request)

    async def user_data(self, request: Request) -> None:
        """FastAPI dependency of endpoints that show user ids or histories."""
        self.check_user_data(request)

    def check_user_data(self, request: Request) -> None:
        if not self.public_user_data:
            self.check(request)

    def may_read_user_data(self, request: Request) -> bool:
        """Whether this request may see user data (a valid key, or user data is public)."""
        if self.public_user_data:
            return True
        given = self._given(request)
        return given is not None and any(hmac.compare_digest(given, k) for k in self.keys)


class BodyLimit:
    """Reject request bodies over ``max_bytes`` with 413, declared or streamed (ASGI).

    The body is read here, up to the limit, before the application sees any of it: a
    declared ``Content-Length`` over the limit is refused at once, and a chunked body is
    refused as soon as it passes the limit (the application never parses a part of it).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to serve
                scope["promptrec.disconnected"] = True
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._reject(send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        buffered: Message | None = {"type": "http.request", "body": b"".join(chunks)}

        async def replay() -> Message:
            nonlocal buffered
            if buffered is not None:
                message, buffered = buffered, None
                return message
            return await receive()  # after the body: wait for a disconnect

        await self.app(scope, replay, send)

    async def _reject(self, send: Send) -> None:
        body = f'{{"detail":"request body over {self.max_bytes} bytes"}}'.encode()
        await send_json(send, 413, body, (b"connection", b"close"))


async def send_json(send: Send, status: int, body: bytes, *headers: tuple[bytes, bytes]) -> None:
    """Answer a request with a JSON body, at the ASGI level (for middleware, before or
    around the application)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

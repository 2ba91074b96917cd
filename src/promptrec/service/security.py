"""API keys and request size limits."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ApiKeys:
    """Keys accepted in ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``.

    Args:
        keys: the accepted keys (compared in constant time).
        protect_reads: require a key on read endpoints too (writes always need one).
    """

    def __init__(self, keys: Sequence[str], *, protect_reads: bool = False) -> None:
        self.keys = [k.encode() for k in keys if k]
        if not self.keys:
            raise ValueError("give at least one API key")
        self.protect_reads = protect_reads

    def _given(self, request: Request) -> bytes | None:
        key = request.headers.get("x-api-key")
        if key is None:
            auth = request.headers.get("authorization", "")
            scheme, _, token = auth.partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else None
        return key.encode() if key else None

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


class BodyLimit:
    """Reject request bodies over ``max_bytes`` with 413, declared or streamed (ASGI)."""

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
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = f'{{"detail":"request body over {self.max_bytes} bytes"}}'.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass

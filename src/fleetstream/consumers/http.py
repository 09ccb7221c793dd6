"""The HTTP listener: webhook routes, `/metrics`, `/healthz` and `/readyz` on one port.

Each webhook route is an `http` source bound to one decoder. Answers, in the order checked:
- 503 + Retry-After while shutting down or when the route has too many requests in flight;
- 401 for missing or wrong credentials (compared in constant time);
- 413 for a body over `http.max_body_bytes`;
- after the pipeline settled the body: 200 when everything in it is committed to every sink,
  400 when the body as a whole could not be decoded (its raw bytes are then in quarantine),
  503 + Retry-After when the sinks could not commit it (nothing was acknowledged: the sender
  retries and nothing is lost).
An unknown vehicle is never a reason to refuse a body.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ssl
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fleetstream.config.model import BasicAuthConfig, HttpServerConfig, HttpSourceConfig
from fleetstream.errors import PipelineClosed, PipelineFull, RetryableSinkError
from fleetstream.pipeline import SourceHandle
from fleetstream.telemetry.metrics import Telemetry

log = structlog.get_logger("fleetstream.http")

Readiness = Callable[[], dict[str, str]]
"""Returns the reasons the daemon is not ready (or not alive); empty when it is."""


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


class BasicAuth:
    """Checks `Authorization: Basic` against one user, in time independent of the input."""

    def __init__(self, config: BasicAuthConfig) -> None:
        self._user = config.username.encode()
        self._password = config.password.get_secret_value().encode()

    def allows(self, header: str | None) -> bool:
        if not header or header[:6].lower() != "basic ":
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, sep, password = decoded.partition(b":")
        user_ok = hmac.compare_digest(user, self._user)
        password_ok = hmac.compare_digest(password, self._password)
        return bool(sep) and user_ok and password_ok


class WebhookRoute:
    def __init__(
        self,
        config: HttpSourceConfig,
        handle: SourceHandle,
        server: HttpServer,
    ) -> None:
        self.config = config
        self._handle = handle
        self._server = server
        self._auth = BasicAuth(config.auth) if isinstance(config.auth, BasicAuthConfig) else None
        # Bodies being read count against the route's limit too, so concurrent uploads cannot
        # hold more than `limit` bodies in memory before the pipeline refuses them.
        self._reading = asyncio.Semaphore(handle.limit)
        metadata: dict[str, str] = {"route": config.path}
        if config.vehicle:
            metadata["vehicle"] = config.vehicle
        if config.organization:
            metadata["organization"] = config.organization
        self._metadata = metadata

    async def handle(self, request: web.Request) -> web.Response:
        response = await self._answer(request)
        self._server.telemetry.http_answered(self.config.name, response.status)
        return response

    async def _answer(self, request: web.Request) -> web.Response:
        server = self._server
        if server.closing:
            return server.unavailable("shutting down")
        if self._auth is not None and not self._auth.allows(request.headers.get("Authorization")):
            return _json(
                401,
                {"error": "unauthorized"},
                {"WWW-Authenticate": f'Basic realm="fleetstream {self.config.name}"'},
            )
        limit = server.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return server.too_large()
        if self._reading.locked() or self._handle.full:
            return server.unavailable("pipeline full")
        async with self._reading:
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return server.too_large()
            try:
                future = await self._handle.submit(body, self._metadata, wait=False)
            except PipelineFull:
                return server.unavailable("pipeline full")
            except PipelineClosed:
                return server.unavailable("shutting down")
        try:
            outcome = await future
        except (RetryableSinkError, PipelineClosed) as exc:
            log.warning("webhook_not_committed", source=self.config.name, error=str(exc))
            return server.unavailable("storage unavailable")
        if outcome.rejected is not None:
            return _json(
                400,
                {
                    "error": outcome.rejected.reason,
                    "detail": outcome.rejected.message,
                    "quarantined": True,
                },
            )
        return _json(
            200,
            {
                "events": outcome.decoded,
                "written": outcome.written,
                "duplicates": outcome.duplicates,
                "quarantined": outcome.quarantined,
            },
        )


class HttpServer:
    """The daemon's one HTTP listener."""

    def __init__(
        self,
        config: HttpServerConfig,
        telemetry: Telemetry,
        readiness: Readiness,
        liveness: Readiness,
    ) -> None:
        self.config = config
        self.telemetry = telemetry
        self._readiness = readiness
        self._liveness = liveness
        self.closing = False
        self._app = web.Application(client_max_size=config.max_body_bytes)
        self._app.router.add_get("/healthz", self._healthz)
        self._app.router.add_get("/readyz", self._readyz)
        self._app.router.add_get("/metrics", self._metrics)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def add_route(self, config: HttpSourceConfig, handle: SourceHandle) -> None:
        route = WebhookRoute(config, handle, self)
        self._app.router.add_post(config.path, route.handle)

    def unavailable(self, reason: str) -> web.Response:
        return _json(503, {"error": reason}, {"Retry-After": str(self.config.retry_after_secs)})

    def too_large(self) -> web.Response:
        return _json(413, {"error": "body too large", "max_body_bytes": self.config.max_body_bytes})

    async def start(self) -> None:
        runner = web.AppRunner(
            self._app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        ssl_context = None
        if self.config.tls is not None:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(self.config.tls.cert_file, self.config.tls.key_file)
        site = web.TCPSite(
            runner,
            self.config.listen_host,
            self.config.listen_port,
            ssl_context=ssl_context,
        )
        await site.start()
        self._runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.config.listen_port
        log.info(
            "http_listening",
            host=self.config.listen_host,
            port=self.port,
            tls=ssl_context is not None,
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _: web.Request) -> web.Response:
        failures = self._liveness()
        if failures:
            return _json(503, {"status": "failed", "problems": failures})
        return _json(200, {"status": "alive"})

    async def _readyz(self, _: web.Request) -> web.Response:
        problems = self._readiness()
        if problems:
            return _json(503, {"status": "not ready", "problems": problems})
        return _json(200, {"status": "ready"})

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self.telemetry.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

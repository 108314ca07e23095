"""The sidecar's HTTP endpoints (aiohttp, DESIGN §7): routing only; the answers are
:mod:`sidecar.probes` (pure) applied to the current facts.

``GET /health``, ``/status``, ``/primary``, ``/replica?lag=<bytes>``,
``/liveness``, ``/readiness``. ``HEAD`` works on each (load balancers).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiohttp import web

from . import probes
from .facts import status_document
from .state import State

log = logging.getLogger(__name__)

BEAT = 0.5


class Api:
    def __init__(self, state: State, clock: Callable[[], float] = time.monotonic) -> None:
        self.state = state
        self.clock = clock
        self.last_beat = clock()
        self._runner: web.AppRunner | None = None
        self._beat: asyncio.Task[None] | None = None
        self.port = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_get("/status", self.status)
        app.router.add_get("/primary", self.primary)
        app.router.add_get("/replica", self.replica)
        app.router.add_get("/liveness", self.liveness)
        app.router.add_get("/readiness", self.readiness)
        return app

    @staticmethod
    def _reply(answer: probes.Answer) -> web.Response:
        return web.json_response(answer.body, status=answer.code)

    async def health(self, _: web.Request) -> web.Response:
        return self._reply(probes.health(self.state.facts()))

    async def status(self, _: web.Request) -> web.Response:
        return web.json_response(status_document(self.state.facts()))

    async def primary(self, _: web.Request) -> web.Response:
        return self._reply(probes.primary(self.state.facts()))

    async def replica(self, request: web.Request) -> web.Response:
        try:
            lag = probes.parse_lag(request.query.get("lag"))
        except ValueError:
            return web.json_response({"status": "bad request",
                                      "reason": "lag must be a number of bytes"}, status=400)
        return self._reply(probes.replica(self.state.facts(), lag))

    async def liveness(self, _: web.Request) -> web.Response:
        delay = max(0.0, self.clock() - self.last_beat - BEAT)
        return self._reply(probes.liveness(self.state.facts(), delay))

    async def readiness(self, _: web.Request) -> web.Response:
        return self._reply(probes.readiness(self.state.facts()))

    async def _heartbeat(self) -> None:
        while True:
            self.last_beat = self.clock()
            await asyncio.sleep(BEAT)

    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        server = site._server  # the bound port, also when 0 was asked for
        sockets = getattr(server, "sockets", None) or ()
        self.port = sockets[0].getsockname()[1] if sockets else port
        self._beat = asyncio.create_task(self._heartbeat(), name="api-heartbeat")
        log.info("HTTP endpoints on %s:%d", host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

"""uvicorn's HTTP protocol (httptools) with a deadline on request headers, for `kd serve`.

uvicorn bounds only idle keep-alive time, and an ASGI app sees a request only once its headers
are in: a client that opens a connection and sends part of its headers, or nothing, held it open
for good. This protocol closes such a connection when the headers have not arrived within the
body timeout (`--body-timeout-s`) of its opening or of the request's first byte, with one log
line. `kd serve` names it as uvicorn's `http` setting; worker processes import it by name.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from kd.deployment.serve import LOG, SERVE_ENV


@functools.cache
def body_timeout_s() -> float:
    """This server process's --body-timeout-s, from the settings `kd serve` left in KD_SERVE (read once)."""
    return json.loads(os.environ[SERVE_ENV])["limits"]["body_timeout_s"]


class HeaderTimeoutProtocol(HttpToolsProtocol):
    header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self.header_timer is None:
            timeout = body_timeout_s()
            self.header_timer = self.loop.call_later(timeout, self._too_slow, timeout)

    def _disarm(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _too_slow(self, timeout: float) -> None:
        self.header_timer = None
        LOG.warning("client {}:{} sent no complete request headers in {} s; closed".format(
            *(self.client or ("?", "?")), timeout))
        self.transport.close()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

"""A bounded HTTP load generator for `kd serve`, on loopback.

`concurrency` keep-alive connections each send one POST /predict, wait for its answer and
send the next, until the deadline: at most `concurrency` requests are ever in flight. Raw
asyncio streams keep the generator's own cost per request small, so the server, not the
client, is what gets measured.
"""

import asyncio
import itertools
import socket
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LoadResult:
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    failures: int = 0  # connections lost or malformed answers

    def summary(self) -> dict:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        ok = self.statuses.get(200, 0)
        return {"requests": sum(self.statuses.values()), "ok": ok,
                "errors": sum(self.statuses.values()) - ok + self.failures,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "requests_per_s": ok / self.seconds, "p50_ms": float(np.percentile(lat, 50)),
                "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max())}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(host: str, path: str, body: bytes) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":", 1)[1]))
            return status
    raise ValueError("a response without Content-Length")


async def _connection(host: str, port: int, requests, deadline: float, result: LoadResult) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        result.failures += 1
        return
    try:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            writer.write(next(requests))
            status = await _read_response(reader)
            result.latencies_ms.append((time.perf_counter() - start) * 1e3)
            result.statuses[status] += 1
    except (OSError, ValueError, asyncio.IncompleteReadError):
        result.failures += 1
    finally:
        writer.close()


async def _run(host, port, bodies, concurrency, seconds, path) -> LoadResult:
    requests = itertools.cycle([_request(host, path, body) for body in bodies])
    result = LoadResult(seconds)
    start = time.perf_counter()
    await asyncio.gather(*(_connection(host, port, requests, start + seconds, result)
                           for _ in range(concurrency)))
    result.seconds = time.perf_counter() - start
    return result


def run_load(host: str, port: int, bodies: list[bytes], concurrency: int = 16,
             seconds: float = 10.0, path: str = "/predict") -> LoadResult:
    """Send the bodies round-robin from `concurrency` connections for `seconds`."""
    try:
        from uvloop import run
    except ImportError:
        run = asyncio.run
    return run(_run(host, port, bodies, concurrency, seconds, path))

"""`kd serve`: a Classifier behind HTTP (FastAPI on uvicorn).

POST /predict {"texts": [...]} answers per-label probabilities and the labels over their
thresholds; GET /health; GET /metadata; the OpenAPI schema at /openapi.json (docs at /docs).
Concurrent requests are micro-batched: while the model runs one batch in its worker thread,
new requests queue up, and the next model call takes all of them (up to `max_batch` texts),
so batching adds no wait at low load and amortises the model call at high load. Limits on
texts per request, characters per text, body size and queued texts answer a 4xx JSON error.
Slow clients are shed: a body that has not arrived within `body_timeout_s` gets 408 and the
connection is closed; a request not answered within `deadline_s` of its body's arrival gets
503 with Retry-After, and its texts leave the queue. A client that goes away costs one log line.
"""

# No `from __future__ import annotations`: FastAPI must see the request models' real types.
import asyncio
import json
import logging
import math
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import orjson

from kd.deployment.classifier import Classifier
from kd.errors import KDError


@dataclass
class Limits:
    max_texts: int = 64             # texts in one request
    max_chars: int = 10_000         # characters in one text
    max_body_bytes: int = 1 << 20   # request body
    max_batch: int = 256            # texts in one model call
    max_queued: int = 8192          # texts waiting for the model; beyond: 429
    body_timeout_s: int = 10        # seconds to receive a request body; beyond: 408
    deadline_s: int = 30            # seconds from a request's body to its answer; beyond: 503

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise KDError(f"serve limit {name} must be a positive integer, got {value!r}")


LOG = logging.getLogger("kd.serve")


class Overloaded(Exception):
    pass


class MicroBatcher:
    """Runs the classifier on the texts of all requests waiting, one model call at a time."""

    def __init__(self, classifier: Classifier, limits: Limits):
        self.classifier, self.limits = classifier, limits
        self.pending: deque[tuple[list[str], asyncio.Future]] = deque()
        self.queued = 0
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="kd-model")
        self.drain_task: asyncio.Task | None = None
        self.seconds_per_text = 0.0  # measured, for Retry-After

    def retry_after(self) -> int:
        """Seconds until the queue has drained, as the model has run lately (1 to 60)."""
        return min(60, max(1, math.ceil(self.queued * self.seconds_per_text)))

    async def probabilities(self, texts: list[str]) -> np.ndarray:
        if self.queued + len(texts) > self.limits.max_queued:
            raise Overloaded
        future = asyncio.get_running_loop().create_future()
        self.pending.append((texts, future))
        self.queued += len(texts)
        if self.drain_task is None or self.drain_task.done():
            self.drain_task = asyncio.get_running_loop().create_task(self._drain())
        return await future

    def _take(self) -> list[tuple[list[str], asyncio.Future]]:
        """The next model call's requests; those already given up on (deadline, client gone) are dropped."""
        taken, size = [], 0
        while self.pending and (not taken or size + len(self.pending[0][0]) <= self.limits.max_batch):
            texts, future = self.pending.popleft()
            self.queued -= len(texts)
            if not future.done():
                taken.append((texts, future))
                size += len(texts)
        return taken

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self.pending:
            taken = self._take()
            texts = [text for request, _ in taken for text in request]
            if not texts:
                continue
            started = time.perf_counter()
            try:
                probs = await loop.run_in_executor(self.worker, self.classifier.predict_proba, texts)
            except Exception as err:  # hand the model's failure to the waiting requests
                probs, failure = None, err
            self.seconds_per_text = (time.perf_counter() - started) / len(texts)
            start = 0
            for request, future in taken:
                if not future.done():  # a request whose client went away is cancelled
                    if probs is None:
                        future.set_exception(failure)
                    else:
                        future.set_result(probs[start:start + len(request)])
                start += len(request)


def _error(status: int, message):
    from fastapi.responses import JSONResponse

    return JSONResponse({"detail": message}, status_code=status)


def _busy(status: int, message: str, retry_after: int):
    answer = _error(status, message)
    answer.headers["Retry-After"] = str(retry_after)
    return answer


class RequestBody:
    """ASGI middleware that reads a request body whole before the app sees it: it must announce
    its length (411), within the limit (413), and arrive within `timeout_s` (408, and the
    connection is closed); a client that goes away mid-body is one log line."""

    def __init__(self, app, max_bytes: int, timeout_s: float):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is None:
            return await _error(411, "a Content-Length header is required")(scope, receive, send)
        if not length.isdigit() or int(length) > self.max_bytes:
            return await _error(413, f"the body may have at most {self.max_bytes} bytes")(scope, receive, send)
        body, client = bytearray(), "{}:{}".format(*(scope.get("client") or ("?", "?")))

        async def read() -> bool:
            """Read the body into `body`; False when the client went away."""
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return False
                body.extend(message.get("body", b""))
                if not message.get("more_body"):
                    return True
        try:
            if not await asyncio.wait_for(read(), self.timeout_s):
                LOG.warning(f"client {client} went away after {len(body)} of {int(length)} body bytes")
                return
        except asyncio.TimeoutError:
            LOG.warning(f"client {client} sent {len(body)} of {int(length)} body bytes in {self.timeout_s} s; "
                        "answered 408 and closed")
            answer = _error(408, f"the body did not arrive within {self.timeout_s} s")
            answer.headers["Connection"] = "close"
            return await answer(scope, receive, send)
        await self.app(scope, _replay(bytes(body), receive), send)


def _replay(body: bytes, receive):
    """An ASGI receive that hands over `body` once, then waits on the client as before."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay


def create_app(classifier: Classifier, limits: Limits | None = None, model_name: str = "model"):
    """The FastAPI application; `uvicorn.run(create_app(...))` serves it."""
    from fastapi import FastAPI, Request, Response
    from pydantic import BaseModel, Field, StringConstraints, ValidationError

    limits = limits or Limits()
    batcher = MicroBatcher(classifier, limits)
    Text = Annotated[str, StringConstraints(max_length=limits.max_chars)]

    class PredictRequest(BaseModel):
        texts: list[Text] = Field(min_length=1, max_length=limits.max_texts,
                                  description=f"1 to {limits.max_texts} texts")

    class Prediction(BaseModel):
        labels: list[str]
        probabilities: dict[str, float]

    class PredictResponse(BaseModel):
        predictions: list[Prediction]

    kind = "Single-label" if classifier.single_label else "Multi-label"
    app = FastAPI(title="kd classifier", version="1", description=f"{kind} classifier {model_name}")

    app.add_middleware(RequestBody, max_bytes=limits.max_body_bytes, timeout_s=limits.body_timeout_s)

    request_schema = {"required": True, "content": {
        "application/json": {"schema": PredictRequest.model_json_schema()}}}

    @app.post("/predict", response_model=PredictResponse,
              openapi_extra={"requestBody": request_schema},
              responses={400: {"description": "not JSON"}, 408: {"description": "body too slow"},
                         411: {"description": "no length"}, 413: {"description": "body too large"},
                         422: {"description": "invalid"}, 429: {"description": "too many texts queued"},
                         503: {"description": "not answered within the deadline"}})
    async def predict(request: Request):
        try:
            texts = PredictRequest.model_validate_json(await request.body()).texts
        except ValidationError as err:
            problems = err.errors(include_input=False, include_url=False)
            if any(p["type"] == "json_invalid" for p in problems):
                return _error(400, "the body is not valid JSON")
            return _error(422, problems)
        try:
            probs = await asyncio.wait_for(batcher.probabilities(texts), limits.deadline_s)
        except Overloaded:
            return _busy(429, "too many texts queued; retry later", batcher.retry_after())
        except asyncio.TimeoutError:
            return _busy(503, f"not answered within {limits.deadline_s} s; retry later", batcher.retry_after())
        body = {"predictions": classifier.records(probs)}
        return Response(orjson.dumps(body), media_type="application/json")

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metadata")
    async def metadata():
        return {"model": model_name, "backend": classifier.backend, "labels": classifier.labels,
                "problem_type": "single_label" if classifier.single_label else "multi_label",
                "thresholds": None if classifier.single_label else dict(zip(classifier.labels,
                                                                            classifier.decision_thresholds.tolist())),
                "class_offsets": dict(zip(classifier.labels, classifier.offsets.tolist()))
                if classifier.single_label else None,
                "calibrated": bool((classifier.temperatures != 1).any()),
                "limits": asdict(limits)}

    return app


SERVE_ENV = "KD_SERVE"  # how `serve` hands its settings to worker processes


def app_from_environment():
    """The app of one worker process, built from the settings `serve` left in KD_SERVE."""
    settings = json.loads(os.environ[SERVE_ENV])
    classifier = Classifier.from_pretrained(settings["model"], backend=settings["backend"])
    return create_app(classifier, Limits(**settings["limits"]), Path(settings["model"]).resolve().name)


def serve(model_dir: str | Path, host: str = "127.0.0.1", port: int = 8000,
          limits: Limits | None = None, backend: str = "auto", workers: int = 1) -> None:
    """Load the model and serve it until interrupted; `workers` > 1 runs that many processes
    (each with its own copy of the model) on one port."""
    import uvicorn

    if not LOG.handlers:  # one line per dropped client, as uvicorn's own warnings
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        LOG.addHandler(handler)
    limits = limits or Limits()
    os.environ[SERVE_ENV] = json.dumps({"model": str(model_dir), "backend": backend,
                                        "limits": asdict(limits)})
    app = app_from_environment() if workers == 1 else "kd.deployment.serve:app_from_environment"
    print(json.dumps({"serving": str(model_dir), "workers": workers,
                      "url": f"http://{host}:{port}"}), flush=True)
    uvicorn.run(app, host=host, port=port, workers=workers, factory=workers > 1,
                http="kd.deployment.http_timeouts:HeaderTimeoutProtocol",
                log_level="warning", access_log=False)

"""`kd serve`: a Classifier behind HTTP (FastAPI on uvicorn).

POST /predict {"texts": [...]} answers per-label probabilities and the labels over their
thresholds; GET /health; GET /metadata; the OpenAPI schema at /openapi.json (docs at /docs).
Concurrent requests are micro-batched: while the model runs one batch in its worker thread,
new requests queue up, and the next model call takes all of them (up to `max_batch` texts),
so batching adds no wait at low load and amortises the model call at high load. Limits on
texts per request, characters per text, body size and queued texts answer a 4xx JSON error.
"""

# No `from __future__ import annotations`: FastAPI must see the request models' real types.
import asyncio
import json
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import orjson

from kd.classifier import Classifier
from kd.errors import KDError


@dataclass
class Limits:
    max_texts: int = 64             # texts in one request
    max_chars: int = 10_000         # characters in one text
    max_body_bytes: int = 1 << 20   # request body
    max_batch: int = 256            # texts in one model call
    max_queued: int = 8192          # texts waiting for the model; beyond: 429

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise KDError(f"serve limit {name} must be a positive integer, got {value!r}")


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
        taken, size = [], 0
        while self.pending and (not taken or size + len(self.pending[0][0]) <= self.limits.max_batch):
            taken.append(self.pending.popleft())
            size += len(taken[-1][0])
        self.queued -= size
        return taken

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self.pending:
            taken = self._take()
            texts = [text for request, _ in taken for text in request]
            try:
                probs = await loop.run_in_executor(self.worker, self.classifier.predict_proba, texts)
            except Exception as err:  # hand the model's failure to the waiting requests
                probs, failure = None, err
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


class BodyLimit:
    """ASGI middleware: a body must announce its length, and within the limit (411, 413)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            length = dict(scope["headers"]).get(b"content-length")
            problem = None
            if length is None:
                problem = (411, "a Content-Length header is required")
            elif not length.isdigit() or int(length) > self.max_bytes:
                problem = (413, f"the body may have at most {self.max_bytes} bytes")
            if problem:
                await _error(*problem)(scope, receive, send)
                return
        await self.app(scope, receive, send)


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

    app = FastAPI(title="kd classifier", version="1", description=f"Multi-label classifier {model_name}")

    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)

    request_schema = {"required": True, "content": {
        "application/json": {"schema": PredictRequest.model_json_schema()}}}

    @app.post("/predict", response_model=PredictResponse,
              openapi_extra={"requestBody": request_schema},
              responses={400: {"description": "not JSON"}, 411: {"description": "no length"},
                         413: {"description": "body too large"}, 422: {"description": "invalid"},
                         429: {"description": "too many texts queued"}})
    async def predict(request: Request):
        try:
            texts = PredictRequest.model_validate_json(await request.body()).texts
        except ValidationError as err:
            problems = err.errors(include_input=False, include_url=False)
            if any(p["type"] == "json_invalid" for p in problems):
                return _error(400, "the body is not valid JSON")
            return _error(422, problems)
        try:
            probs = await batcher.probabilities(texts)
        except Overloaded:
            return _error(429, "too many texts queued; retry later")
        body = {"predictions": classifier.records(probs)}
        return Response(orjson.dumps(body), media_type="application/json")

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metadata")
    async def metadata():
        return {"model": model_name, "backend": classifier.backend, "labels": classifier.labels,
                "thresholds": dict(zip(classifier.labels, classifier.thresholds.tolist())),
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

    limits = limits or Limits()
    os.environ[SERVE_ENV] = json.dumps({"model": str(model_dir), "backend": backend,
                                        "limits": asdict(limits)})
    app = app_from_environment() if workers == 1 else "kd.serve:app_from_environment"
    print(json.dumps({"serving": str(model_dir), "workers": workers,
                      "url": f"http://{host}:{port}"}), flush=True)
    uvicorn.run(app, host=host, port=port, workers=workers, factory=workers > 1,
                log_level="warning", access_log=False)

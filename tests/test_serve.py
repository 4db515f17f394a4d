"""kd serve: endpoints, limits answered with 4xx JSON, and micro-batching under load."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tiny
from fastapi.testclient import TestClient

from kd.deployment.classifier import Classifier
from kd.deployment.serve import Limits, create_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from loadgen import free_port, run_load  # noqa: E402  scripts/loadgen.py: a benchmark helper, not kd


@pytest.fixture(scope="module")
def classifier(models, tmp_path_factory):
    return Classifier.from_pretrained(tiny.make_classifier(tmp_path_factory.mktemp("srv") / "m",
                                                           models["bert"], steps=20))


@pytest.fixture(scope="module")
def client(classifier):
    limits = Limits(max_texts=4, max_chars=50, max_body_bytes=2000)
    with TestClient(create_app(classifier, limits, "tiny")) as c:
        yield c


def test_predict_health_metadata_openapi(client, classifier):
    texts = ["so happy today", "rage and panic"]
    answer = client.post("/predict", json={"texts": texts})
    assert answer.status_code == 200
    predictions = answer.json()["predictions"]
    probs = classifier.predict_proba(texts)
    for row, prediction in zip(probs, predictions):
        assert list(prediction["probabilities"]) == tiny.LABELS
        assert np.allclose(list(prediction["probabilities"].values()), row, atol=1e-6)
        assert prediction["labels"] == [n for n, p, t in zip(tiny.LABELS, row, classifier.thresholds)
                                        if p >= t]
    assert client.get("/health").json() == {"status": "ok"}
    meta = client.get("/metadata").json()
    assert meta["labels"] == tiny.LABELS and meta["limits"]["max_texts"] == 4
    assert set(meta["thresholds"]) == set(tiny.LABELS)
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["properties"]["texts"]["maxItems"] == 4


@pytest.mark.parametrize("body, status", [
    (b'{"texts": ["a"', 400),                         # malformed JSON
    (b'{"texts": "one string"}', 422),                # wrong type
    (b'{"texts": [1, 2]}', 422),
    (b'{"text": ["a"]}', 422),                        # missing field
    (b'{"texts": []}', 422),                          # empty list
    (b'{"texts": ["a", "b", "c", "d", "e"]}', 422),   # too many texts
    (json.dumps({"texts": ["x" * 51]}).encode(), 422),  # text too long
    (json.dumps({"texts": ["x" * 3000]}).encode(), 413),  # body too large
])
def test_bad_requests_get_a_4xx_json_answer(client, body, status):
    answer = client.post("/predict", content=body)
    assert answer.status_code == status
    assert "detail" in answer.json()
    assert client.get("/health").status_code == 200


def test_body_without_length_is_refused(client):
    answer = client.post("/predict", content=iter([b'{"texts": ["a"]}']))  # chunked
    assert answer.status_code == 411


def test_concurrent_requests_are_micro_batched(classifier):
    import uvicorn

    calls = []
    original = classifier.predict_proba

    def counted(texts):
        calls.append(len(texts))
        time.sleep(0.005)  # a model call long enough for requests to queue behind it
        return original(texts)

    classifier.predict_proba = counted
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(classifier), port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        bodies = [json.dumps({"texts": [f"happy day {i}"]}).encode() for i in range(50)]
        summary = run_load("127.0.0.1", port, bodies, concurrency=16, seconds=1.5).summary()
    finally:
        server.should_exit = True
        thread.join(10)
        classifier.predict_proba = original
    assert summary["errors"] == 0 and summary["ok"] > 50
    assert sum(calls) == summary["ok"] and max(calls) > 1  # requests shared model calls
    assert len(calls) < summary["ok"] / 2


def test_a_cancelled_request_does_not_break_its_batch(classifier):
    import asyncio

    from kd.deployment.serve import MicroBatcher

    async def scenario():
        batcher = MicroBatcher(classifier, Limits())
        gone = asyncio.ensure_future(batcher.probabilities(["client went away"]))
        kept = asyncio.ensure_future(batcher.probabilities(["so happy", "rage"]))
        await asyncio.sleep(0)  # both queued, the model call under way
        gone.cancel()
        return await kept

    probs = asyncio.run(scenario())
    assert np.allclose(probs, classifier.predict_proba(["so happy", "rage"]), atol=1e-6)


def test_worker_processes_build_the_app_from_the_environment(models, monkeypatch, tmp_path):
    from kd.deployment import serve

    folder = tiny.make_classifier(tmp_path / "m", models["bert"], steps=1)
    settings = {"model": str(folder), "backend": "auto", "limits": {**vars(Limits()), "max_texts": 3}}
    monkeypatch.setenv(serve.SERVE_ENV, json.dumps(settings))
    with TestClient(serve.app_from_environment()) as c:
        assert c.get("/metadata").json()["limits"]["max_texts"] == 3
        assert c.post("/predict", json={"texts": ["a", "b", "c", "d"]}).status_code == 422


def test_too_many_queued_texts_get_429(classifier):
    import asyncio

    from kd.deployment.serve import MicroBatcher, Overloaded

    async def scenario():
        batcher = MicroBatcher(classifier, Limits(max_queued=3))
        first = asyncio.ensure_future(batcher.probabilities(["a", "b"]))
        await asyncio.sleep(0)  # taken by the model: no longer queued
        second = asyncio.ensure_future(batcher.probabilities(["c", "d", "e"]))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await batcher.probabilities(["f"])  # 3 queued + 1 > max_queued
        return await first, await second

    first, second = asyncio.run(scenario())
    assert first.shape == (2, 3) and second.shape == (3, 3)


def test_serve_binds_loopback_unless_told():
    from kd.cli import build_parser

    assert build_parser().parse_args(["serve", "--model", "m"]).host == "127.0.0.1"


def test_kd_serve_command_answers_on_localhost(classifier, models, tmp_path):
    import subprocess
    import sys
    import urllib.request

    from kd.deployment.export import export_model

    folder = tiny.make_classifier(tmp_path / "m", models["bert"], steps=1)
    export_model(folder, tmp_path / "onnx", onnx=True)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "kd.cli", "serve", "--model", str(tmp_path / "onnx"),
                               "--port", str(port), "--workers", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metadata", timeout=1) as answer:
                    meta = json.loads(answer.read())
                break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()
                time.sleep(0.1)
        assert meta["backend"] == "onnx" and meta["labels"] == tiny.LABELS
        body = json.dumps({"texts": ["so happy"]}).encode()
        summary = run_load("127.0.0.1", port, [body], concurrency=4, seconds=0.5).summary()
        assert summary["errors"] == 0 and summary["ok"] > 0
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture()
def live_server(classifier):
    """A uvicorn server in a thread: start(limits) -> port."""
    import uvicorn

    servers = []

    def start(limits: Limits) -> int:
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(classifier, limits), port=port, log_level="error"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        while not server.started:
            time.sleep(0.05)
        return port
    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def _half_sent(port: int, body_bytes: int = 10):
    import socket

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n" + b'{"texts": ["a very slow client"]}'[:body_bytes])
    return sock


def test_slow_bodies_get_408_and_their_connections_close(live_server, caplog):
    port = live_server(Limits(body_timeout_s=1))
    caplog.set_level("WARNING", logger="kd.serve")
    started = time.monotonic()
    socks = [_half_sent(port) for _ in range(20)]
    for sock in socks:
        answer = b""
        while chunk := sock.recv(4096):  # the server closes the connection
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in answer
        sock.close()
    assert time.monotonic() - started < 5
    lines = [r.getMessage() for r in caplog.records if r.name == "kd.serve"]
    assert len(lines) == 20 and all("sent 10 of 100 body bytes in 1 s" in line for line in lines)
    bodies = [json.dumps({"texts": ["still answering"]}).encode()]
    assert run_load("127.0.0.1", port, bodies, concurrency=2, seconds=0.3).summary()["errors"] == 0


def test_a_client_gone_mid_body_is_one_log_line(live_server, caplog):
    port = live_server(Limits())
    caplog.set_level("DEBUG")
    _half_sent(port, 15).close()
    for _ in range(100):
        if any(r.name == "kd.serve" for r in caplog.records):
            break
        time.sleep(0.02)
    kept = [r for r in caplog.records if r.levelno >= 30]
    assert len(kept) == 1 and "went away after 15 of 100 body bytes" in kept[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)


def test_requests_past_their_deadline_get_503_and_leave_the_queue(classifier):
    calls = []
    original = classifier.predict_proba

    def slow(texts):
        calls.append(list(texts))
        time.sleep(1.5)
        return original(texts)

    classifier.predict_proba = slow
    try:
        with TestClient(create_app(classifier, Limits(deadline_s=1, max_batch=1))) as c:
            results = []
            threads = [threading.Thread(target=lambda i=i: results.append(
                c.post("/predict", json={"texts": [f"text {i}"]}))) for i in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            time.sleep(1.6)  # the model call under way ends
    finally:
        classifier.predict_proba = original
    assert [r.status_code for r in results] == [503] * 4
    assert all(int(r.headers["Retry-After"]) >= 1 and "within 1 s" in r.json()["detail"] for r in results)
    assert len(calls) == 1  # the three that waited behind the first call never reached the model


def test_429_says_when_to_retry(classifier):
    original = classifier.predict_proba

    def slow(texts):
        time.sleep(0.5)
        return original(texts)

    classifier.predict_proba = slow
    try:
        with TestClient(create_app(classifier, Limits(max_queued=1, max_batch=1))) as c:
            threads = [threading.Thread(target=c.post, args=("/predict",), kwargs={"json": {"texts": [t]}})
                       for t in ("running", "queued")]
            for thread in threads:
                thread.start()
                time.sleep(0.15)
            answer = c.post("/predict", json={"texts": ["one too many"]})
            for thread in threads:
                thread.join(10)
    finally:
        classifier.predict_proba = original
    assert answer.status_code == 429 and 1 <= int(answer.headers["Retry-After"]) <= 60


def test_kd_serve_closes_connections_whose_headers_never_arrive(models, tmp_path):
    import socket
    import subprocess
    import sys
    import urllib.request

    folder = tiny.make_classifier(tmp_path / "m", models["bert"], steps=1)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "kd.cli", "serve", "--model", str(folder), "--port", str(port),
                               "--body-timeout-s", "1", "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        started = time.monotonic()
        partial = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(10)]
        for sock in partial[:5]:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Le")  # headers cut off
        for sock in partial:  # the other five send nothing at all
            assert sock.recv(100) == b""  # closed by the server
            sock.close()
        assert time.monotonic() - started < 6
        body = json.dumps({"texts": ["so happy"]}).encode()
        assert run_load("127.0.0.1", port, [body], concurrency=2, seconds=0.3).summary()["errors"] == 0
    finally:
        server.terminate()
        _, err = server.communicate(timeout=10)
    assert err.decode().count("sent no complete request headers in 1 s; closed") == 10

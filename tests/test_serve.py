"""The HTTP service under load on loopback: 2,000 requests from 32 concurrent clients, 10% of them bad."""

import asyncio
import json
import os
import random
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from loraclf.training.recipe import train

from conftest import write_csv
from test_training import tiny_config

httpx = pytest.importorskip("httpx", reason="needs the serve extra and httpx")
pytest.importorskip("fastapi", reason="needs the serve extra (pip install 'loraclf[serve]')")

REQUESTS, CLIENTS = 2000, 32


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir, agnews_rows):
    texts, labels = agnews_rows
    folder = tmp_path_factory.mktemp("serve")
    data = write_csv(folder / "train.csv", texts[:80], labels[:80])
    train(tiny_config(tiny_model_dir, data, epochs=1), folder / "run", log=lambda _: None)
    with socket.socket() as probe:  # a free loopback port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "loraclf.cli", "serve", str(folder / "run"), "--port",
                                str(port), "--serve.max_texts", "8", "--serve.max_chars", "2000"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=os.environ | {"OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail(f"server did not start: {process.stdout.read()[-2000:]}")
    yield url, texts[1000:1060], folder / "run"
    process.terminate()
    process.wait(timeout=30)


def bad_request(rng: random.Random, pool: list[str]) -> tuple[str, dict]:
    """Malformed or oversized, each kind in turn."""
    kind = rng.choice(["json", "type", "empty", "long", "many", "blank", "shape"])
    body = {"json": '{"texts": ["unclosed', "type": json.dumps({"texts": [1, 2]}),
            "empty": json.dumps({"texts": []}), "long": json.dumps({"texts": ["x" * 2001]}),
            "many": json.dumps({"texts": pool[:9]}), "blank": json.dumps({"texts": ["   "]}),
            "shape": json.dumps([pool[0]])}[kind]
    return kind, {"content": body, "headers": {"content-type": "application/json"}}


def test_info_health_page_and_schema(server):
    url, _, _ = server
    info = httpx.get(f"{url}/info").json()
    assert info["labels"] == ["World", "Sports", "Business", "Sci/Tech"]
    assert info["parameters"]["trainable"] > 0 and info["limits"]["max_texts"] == 8
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "<textarea" in page.text
    schema = httpx.get(f"{url}/openapi.json").json()
    assert "/predict" in schema["paths"] and "PredictRequest" in json.dumps(schema)
    # Every error body is {"detail": "one line"}, and the schema says so for 413 and 422.
    for path in ("/predict", "/"):
        responses = schema["paths"][path]["post"]["responses"]
        for status in ("413", "422"):
            assert responses[status]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert schema["components"]["schemas"]["ErrorBody"]["properties"]["detail"]["type"] == "string"
    for body in ({"texts": [1]}, {"inputs": []}, {"texts": ["a"], "parameters": {"top_k": 1}}, {"inputs": "a",
                 "parameters": {"top_k": 0}}):
        answer = httpx.post(f"{url}/predict", json=body)
        assert answer.status_code == 422 and isinstance(answer.json()["detail"], str), answer.text
    # The docs pages load their scripts from the service itself: they work offline.
    for page_path in ("/docs", "/redoc"):
        html = httpx.get(f"{url}{page_path}").text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
        assert assets and not [a for a in assets if a.startswith(("http:", "https:", "//"))], assets
        for asset in assets:
            assert httpx.get(f"{url}{asset}").status_code == 200, asset


def test_hugging_face_clients_get_loraclf_predicts_answers(server, tmp_path, monkeypatch):
    from huggingface_hub import InferenceClient, constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # a user's client; the suite runs with the hub off

    from loraclf.cli import main

    url, pool, run_dir = server
    texts = pool[:4]
    assert main(["predict", str(run_dir), *texts, "--output", str(tmp_path / "p.jsonl")]) == 0
    predicted = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    for row in predicted:
        row["label"] = row["label_name"]
        row["probabilities"] = {k.removeprefix("p_"): v for k, v in row.items() if k.startswith("p_")}
    client = InferenceClient(base_url=url)
    for text, row in zip(texts, predicted):
        got = client.text_classification(text)
        assert got[0].label == row["label"]
        assert {e.label: e.score for e in got} == pytest.approx(row["probabilities"], abs=1e-5)
        assert [e.score for e in got] == sorted((e.score for e in got), reverse=True)
    assert len(client.text_classification(texts[0], top_k=2)) == 2
    # The same protocol by hand: a list of texts, raw logits; and TEI's /predict, one text -> one flat list.
    raw = httpx.post(f"{url}/", json={"inputs": texts, "parameters": {"function_to_apply": "none"}}).json()
    for scores, row in zip(raw, predicted):
        logits = np.array([{s["label"]: s["score"] for s in scores}[name] for name in row["probabilities"]])
        assert np.exp(logits) / np.exp(logits).sum() == pytest.approx(list(row["probabilities"].values()), abs=1e-5)
    tei = httpx.post(f"{url}/predict", json={"inputs": texts[0]}).json()
    assert tei[0]["label"] == predicted[0]["label"] and len(tei) == 4


def test_bounded_load_with_malformed_requests(server):
    url, pool, _ = server
    # Each text's answer alone, to check that pooled requests get their own rows back.
    alone = {t: httpx.post(f"{url}/predict", json={"texts": [t]}).json()["predictions"][0] for t in pool}
    calls_before = httpx.get(f"{url}/health").json()["model_calls"]
    rng = random.Random(0)
    plan = []
    for i in range(REQUESTS):
        if i % 10 == 9:
            plan.append(("bad",) + bad_request(rng, pool))
        else:
            chosen = rng.sample(pool, rng.randint(1, 4))
            plan.append(("good", chosen, {"json": {"texts": chosen}}))
    results: list[tuple[str, int | None, float, object]] = [None] * REQUESTS
    next_index = iter(range(REQUESTS))

    async def client(http):
        for i in next_index:
            kind, detail, request = plan[i]
            start = time.perf_counter()
            try:
                response = await http.post(f"{url}/predict", **request)
                results[i] = (kind, response.status_code, time.perf_counter() - start, response.json())
            except httpx.TransportError as exc:  # a dropped or refused connection
                results[i] = (kind, None, time.perf_counter() - start, repr(exc))

    async def load():
        limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            started = time.perf_counter()
            await asyncio.gather(*(client(http) for _ in range(CLIENTS)))
            return time.perf_counter() - started

    seconds = asyncio.run(load())
    statuses = [r[1] for r in results]
    latencies = np.array([r[2] for r in results]) * 1000
    dropped = statuses.count(None)
    server_errors = sum(1 for s in statuses if s is not None and s >= 500)
    print(f"\n{REQUESTS} requests, {CLIENTS} clients, {sum(p[0] == 'bad' for p in plan)} malformed/oversized: "
          f"{REQUESTS / seconds:.0f} requests/s, p50 {np.percentile(latencies, 50):.1f} ms, "
          f"p99 {np.percentile(latencies, 99):.1f} ms, 5xx {server_errors}, dropped {dropped}")
    assert dropped == 0 and server_errors == 0
    for (kind, detail, _), (_, status, _, body) in zip(plan, results):
        if kind == "bad":
            assert 400 <= status < 500 and body["detail"], (detail, status, body)
        else:
            assert status == 200, body
            assert len(body["predictions"]) == len(detail)
            for text, got in zip(detail, body["predictions"]):
                assert got["label"] == alone[text]["label"]
                assert np.allclose(list(got["probabilities"].values()),
                                   list(alone[text]["probabilities"].values()), atol=1e-4)
    good = sum(p[0] == "good" for p in plan)
    calls = httpx.get(f"{url}/health").json()["model_calls"] - calls_before
    print(f"{good} valid requests answered in {calls} model calls (micro-batching)")
    assert calls < good


def test_a_chunked_oversize_body_gets_413_and_every_rejection_counts(server):
    url, pool, _ = server
    before = httpx.get(f"{url}/health").json()["rejected"]

    def chunks():  # 6 MB with no Content-Length: Transfer-Encoding: chunked
        yield b'{"texts": ["'
        for _ in range(6 * 64):
            yield b"x" * 16384

    response = httpx.post(f"{url}/predict", content=chunks(), headers={"content-type": "application/json"},
                          timeout=30)
    assert "content-length" not in response.request.headers
    assert response.status_code == 413 and "over" in response.json()["detail"]
    # Pydantic's 422s (wrong types) count as rejected too, beside the body limit's 413.
    assert httpx.post(f"{url}/predict", json={"texts": [1]}).status_code == 422
    assert httpx.get(f"{url}/health").json()["rejected"] == before + 2

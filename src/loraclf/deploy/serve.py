"""An HTTP service for a run or export folder (FastAPI + uvicorn), with micro-batching.

    POST /predict   {"texts": ["...", ...]} -> a label and class probabilities per text
                    (multi_label: a list of labels; a text-pair model: {"pairs": [["...", "..."], ...]}
                    or the pairs as "texts")
    POST /predict   {"inputs": "..." | ["...", ...], "parameters": {...}}: the text-classification protocol of
    POST /          Hugging Face's Inference API and TEI, so their clients (huggingface_hub.InferenceClient)
                    work unchanged: a list of {"label", "score"} per text, most probable first; parameters
                    top_k and function_to_apply (softmax, sigmoid, none); raw_scores and truncate as TEI has them
    GET  /health    liveness, and counts of requests and model calls
    GET  /info      labels, base model, parameter counts, precision, limits
    GET  /          a page to try a text in the browser
    GET  /openapi.json, /docs, /redoc (served from the package: they work offline)

Concurrent requests wait in one queue; a single worker pools them into model
calls of up to `serve.max_batch` texts, waiting at most `serve.max_wait_ms`
for more. Bad input (malformed JSON, wrong types, empty lists, too many or too
long texts, oversize bodies) is answered 4xx with {"detail": "the reason"}, never 5xx.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, Literal

import numpy as np
from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from loraclf.config.schema import ServeConfig
from loraclf.errors import UserError
from loraclf.inference.classifier import Classifier
from loraclf.metrics.probabilities import sigmoid, softmax

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>loraclf</title>
<style>body{font:15px/1.4 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}
textarea{width:100%;height:7rem;font:inherit}button{font:inherit;padding:.3rem 1rem;margin:.4rem 0}
td{padding:.15rem .6rem}.bar{background:#4c72b0;height:.8rem}</style></head><body>
<h1>loraclf</h1><p id="about"></p>
<textarea id="text">Stocks rallied on Wall Street after the central bank held rates.</textarea>
<button id="go">Classify</button><div id="out"></div>
<script>
fetch("info").then(r => r.json()).then(i => {
  document.getElementById("about").textContent = i.base_model + ": " + i.labels.join(", ");
});
document.getElementById("go").onclick = async () => {
  const out = document.getElementById("out");
  const r = await fetch("predict", {method: "POST", headers: {"content-type": "application/json"},
                                    body: JSON.stringify({texts: [document.getElementById("text").value]})});
  const body = await r.json();
  if (!r.ok) { out.textContent = "error " + r.status + ": " + JSON.stringify(body.detail); return; }
  const p = body.predictions[0];
  out.innerHTML = "<h2></h2><table></table>";
  out.querySelector("h2").textContent = p.label ?? p.labels.join(", ");
  for (const [name, prob] of Object.entries(p.probabilities)) {
    const row = out.querySelector("table").insertRow();
    row.insertCell().textContent = name;
    row.insertCell().textContent = prob.toFixed(4);
    const bar = document.createElement("div"); bar.className = "bar"; bar.style.width = (prob * 20) + "rem";
    row.insertCell().appendChild(bar);
  }
};
</script></body></html>
"""


class Parameters(BaseModel):
    """The Hugging Face text-classification parameters (and TEI's)."""

    model_config = ConfigDict(extra="forbid")
    top_k: int | None = Field(None, ge=1, description="answer only the k most probable labels (default: all)")
    function_to_apply: Literal["softmax", "sigmoid", "none"] | None = Field(
        None, description="scores from the logits: default softmax, sigmoid for a multi-label model")
    raw_scores: bool | None = Field(None, description="TEI: the logits themselves (function_to_apply none)")
    truncate: bool | None = Field(None, description="TEI: accepted; a text longer than the model's max_length is "
                                                    "truncated or read as windows, as GET /info's long_texts says")
    truncation: bool | None = Field(None, description="accepted; long texts are handled as GET /info's long_texts "
                                                      "says")


class PredictRequest(BaseModel):
    texts: list[StrictStr | list[StrictStr]] | None = Field(
        None, min_length=1, description="the texts to classify, or [first, second] pairs for a text-pair model "
                                        "(limits: GET /info)")
    pairs: list[list[StrictStr]] | None = Field(None, min_length=1,
                                                description="[first, second] pairs, for a text-pair model")
    inputs: StrictStr | list[StrictStr | list[StrictStr]] | None = Field(
        None, description="Hugging Face protocol: one text, or a list of texts (pairs for a text-pair model)")
    parameters: Parameters | None = None


class HFRequest(BaseModel):
    inputs: StrictStr | list[StrictStr | list[StrictStr]] = Field(
        description="one text, or a list of texts (pairs for a text-pair model)")
    parameters: Parameters | None = None


class Prediction(BaseModel):
    label: str | None = None  # single_label
    label_id: int | None = None
    labels: list[str] | None = None  # multi_label: every class at or above its threshold
    probabilities: dict[str, float]


class PredictResponse(BaseModel):
    predictions: list[Prediction]


class LabelScore(BaseModel):
    label: str
    score: float


class ErrorBody(BaseModel):
    detail: str = Field(description="what was wrong with the request, in one line")


ERRORS = {413: {"model": ErrorBody, "description": "too many or too long texts, or a body over the limit"},
          422: {"model": ErrorBody, "description": "malformed JSON, wrong types, blank or empty input"}}


def request_items(body: PredictRequest | HFRequest, classifier, limits: ServeConfig) -> list:
    """The request's texts (or pairs) checked against the model and the limits; HTTPException 413/422 if not."""
    given = [(key, value) for key in ("texts", "pairs", "inputs") if (value := getattr(body, key, None)) is not None]
    if len(given) != 1:
        raise HTTPException(422, 'give "texts", "pairs" or "inputs", one of them')
    key, items = given[0]
    if key == "inputs" and isinstance(items, str):
        items = [items]
    if not items:
        raise HTTPException(422, f"{key}: an empty list; give at least one text")
    if len(items) > limits.max_texts:
        raise HTTPException(413, f"{len(items)} texts; at most {limits.max_texts} per request")
    try:
        items = classifier.check_inputs(items, key)  # texts or pairs, as the model takes them
    except UserError as exc:
        raise HTTPException(422, str(exc)) from None
    for i, item in enumerate(items):
        for part in item if isinstance(item, tuple) else (item,):
            if len(part) > limits.max_chars:
                raise HTTPException(413, f"{key}[{i}] has {len(part):,} characters; at most {limits.max_chars:,}")
    return items


def label_scores(logits: np.ndarray, names: list[str], multi_label: bool,
                 parameters: Parameters | None) -> list[list[dict[str, Any]]]:
    """The Hugging Face text-classification answer: per text, {"label", "score"} most probable first."""
    p = parameters or Parameters()
    function = "none" if p.raw_scores else p.function_to_apply or ("sigmoid" if multi_label else "softmax")
    scores = {"softmax": softmax, "sigmoid": sigmoid, "none": lambda x: x}[function](logits)
    answer = []
    for row in scores:
        order = np.argsort(-row, kind="stable")[:p.top_k]
        answer.append([{"label": names[i], "score": float(row[i])} for i in order])
    return answer


class MicroBatcher:
    """Pools the texts of concurrent requests into model calls run on one worker thread."""

    def __init__(self, predict, max_batch: int, max_wait_s: float):
        self.predict, self.max_batch, self.max_wait_s = predict, max_batch, max_wait_s
        self.queue: asyncio.Queue = asyncio.Queue()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loraclf-model")
        self.calls = 0

    async def submit(self, texts: list[str]) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, future))
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pending = [await self.queue.get()]
            size = len(pending[0][0])
            deadline = loop.time() + self.max_wait_s
            while size < self.max_batch:
                try:
                    item = self.queue.get_nowait() if loop.time() >= deadline else \
                        await asyncio.wait_for(self.queue.get(), deadline - loop.time())
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
                pending.append(item)
                size += len(item[0])
            texts = [t for batch, _ in pending for t in batch]
            try:
                probs = await loop.run_in_executor(self.worker, self.predict, texts)
            except Exception as exc:  # a model failure fails these requests, not the service
                for _, future in pending:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.calls += 1
            start = 0
            for batch, future in pending:
                if not future.done():  # the client may have gone
                    future.set_result(probs[start:start + len(batch)])
                start += len(batch)


class BodyLimit:
    """ASGI middleware: 413 once a request body passes `max_body` bytes, counted as they arrive.

    A declared Content-Length is checked before anything is read; a chunked body
    declares none, so its bytes are counted and the request is answered 413 as
    soon as the count passes the limit, without reading or parsing the rest.
    """

    def __init__(self, app, max_body: int, on_reject):
        self.app, self.max_body, self.on_reject = app, max_body, on_reject

    async def reject(self, send) -> None:
        self.on_reject()
        await JSONResponse({"detail": f"request body over {self.max_body:,} bytes"}, status_code=413,
                           headers={"connection": "close"})({"type": "http"}, None, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await self.reject(send)
        received, answered = 0, False

        async def counted_receive():
            nonlocal received, answered
            if answered:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    answered = True
                    await self.reject(send)
                    return {"type": "http.disconnect"}  # the app stops reading: the body is never parsed
            return message

        async def guarded_send(message):
            if not answered:  # the app's own answer to the cut-off request is dropped
                await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not answered:
                raise


def build_app(classifier, limits: ServeConfig, batch_size: int = 32):
    """The FastAPI app for a loaded `loraclf.Classifier`."""
    # Requests' items are checked once (request_items), so the pooled call goes straight to the tokens.
    batcher = MicroBatcher(lambda items: classifier.logits_of(classifier.tokens(items), batch_size),
                           limits.max_batch, limits.max_wait_ms / 1000)
    stats = {"started": time.time(), "requests": 0, "rejected": 0}

    def count_rejected() -> None:
        stats["rejected"] += 1

    # Whole-body limit: every text at its longest, 4 bytes a character, JSON quoting and commas.
    max_body = limits.max_texts * (4 * limits.max_chars + 8) * (2 if classifier.description.pairs else 1) + 1024

    @asynccontextmanager
    async def lifespan(_app):
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()
        batcher.worker.shutdown(wait=False)

    about = classifier.description
    # The docs pages' scripts come from the package, not a CDN: /docs and /redoc work offline.
    app = FastAPIOffline(title="loraclf", version="1", lifespan=lifespan,
                         description=f"Text classification with {about.info.get('base_model', 'a loraclf model')}")
    app.add_middleware(BodyLimit, max_body=max_body, on_reject=count_rejected)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError):
        count_rejected()  # malformed JSON and wrong types are rejected requests too
        reasons = "; ".join(f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in exc.errors()[:3])
        return JSONResponse({"detail": reasons}, status_code=422)  # one body shape for every error

    async def logits_of(body: PredictRequest | HFRequest) -> tuple[list, np.ndarray]:
        try:
            if isinstance(body, PredictRequest) and body.parameters is not None and body.inputs is None:
                raise HTTPException(422, '"parameters" go with "inputs" (the Hugging Face protocol)')
            items = request_items(body, classifier, limits)
        except HTTPException:
            count_rejected()
            raise
        stats["requests"] += 1
        return items, await batcher.submit(items)

    @app.post("/predict", response_model=PredictResponse | list[list[LabelScore]] | list[LabelScore],
              response_model_exclude_none=True, responses=ERRORS)
    async def predict_endpoint(body: PredictRequest) -> Any:
        """loraclf's answer for "texts" or "pairs"; with "inputs", TEI's (a list of label/score per text, or
        one list for one text given as a string)."""
        _, logits = await logits_of(body)
        if body.inputs is not None:
            scores = label_scores(logits, classifier.labels, classifier.multi_label, body.parameters)
            return scores[0] if isinstance(body.inputs, str) else scores
        return {"predictions": predictions(classifier, logits)}

    @app.post("/", response_model=list[list[LabelScore]], responses=ERRORS)
    async def hf_endpoint(body: HFRequest) -> Any:
        """The Hugging Face Inference API's text-classification answer: a list of label/score per text."""
        _, logits = await logits_of(body)
        return label_scores(logits, classifier.labels, classifier.multi_label, body.parameters)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "uptime_s": round(time.time() - stats["started"], 1),
                "requests": stats["requests"], "rejected": stats["rejected"], "model_calls": batcher.calls}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return {"labels": classifier.labels, "format": about.kind, "base_model": about.info.get("base_model"),
                "task": about.schema.task, "text_pairs": about.pairs, "thresholds": about.thresholds,
                "parameters": about.info.get("parameters"), "max_length": about.max_length,
                "long_texts": about.long_texts, "precision": classifier.precision, "runs_in": classifier.runs_in,
                "limits": vars(limits)}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    return app


def predictions(classifier, logits: np.ndarray) -> list[dict[str, Any]]:
    """loraclf's own answer: each text's label(s) and every class's probability, as `loraclf predict` writes."""
    names = classifier.labels
    probs = sigmoid(logits) if classifier.multi_label else softmax(logits)
    rounded = [{name: round(float(p), 6) for name, p in zip(names, row)} for row in probs]
    if classifier.multi_label:
        return [{"labels": labels, "probabilities": row} for labels, row in zip(classifier.decide(probs), rounded)]
    return [{"label": names[int(i)], "label_id": int(i), "probabilities": row}
            for i, row in zip(probs.argmax(axis=1), rounded)]


def serve(folder: str, host: str, port: int, limits: ServeConfig, log=print, long_texts: str | None = None,
          window_stride: int | None = None, precision: str = "auto", int8: bool = False) -> None:
    """Serve `folder` (`long_texts`/`window_stride` override the run's data.long_texts/data.window_stride;
    `precision` and `int8` as Classifier.load takes them)."""
    import uvicorn

    classifier = Classifier.load(folder, device="cpu", long_texts=long_texts, window_stride=window_stride,
                                 precision=precision, int8=int8)
    app = build_app(classifier, limits)
    log(classifier.runs_in)
    log(f"serving {folder} ({classifier.description.kind}) on http://{host}:{port}")
    uvicorn.run(app, host=host, port=port, log_level="warning")

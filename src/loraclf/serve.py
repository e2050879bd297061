"""An HTTP service for a run or export folder (FastAPI + uvicorn), with micro-batching.

    POST /predict   {"texts": ["...", ...]} -> a label and class probabilities per text
    GET  /health    liveness, and counts of requests and model calls
    GET  /info      labels, base model, parameter counts, limits
    GET  /          a page to try a text in the browser
    GET  /openapi.json, /docs

Concurrent requests wait in one queue; a single worker pools them into model
calls of up to `serve.max_batch` texts, waiting at most `serve.max_wait_ms`
for more. Bad input (malformed JSON, wrong types, empty lists, too many or too
long texts, oversize bodies) is answered 4xx with a reason, never 5xx.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field, StrictStr

from loraclf.config import ServeConfig

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
  out.querySelector("h2").textContent = p.label;
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


class PredictRequest(BaseModel):
    texts: list[StrictStr] = Field(min_length=1, description="the texts to classify (limits: GET /info)")


class Prediction(BaseModel):
    label: str
    label_id: int
    probabilities: dict[str, float]


class PredictResponse(BaseModel):
    predictions: list[Prediction]


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


def build_app(classifier, limits: ServeConfig, dtype=None, batch_size: int = 32):
    """The FastAPI app for a loaded `predict.Classifier`."""
    import torch
    from loraclf.data import encode
    from loraclf.predict import predict_logits, softmax

    device = torch.device("cpu")
    pad_id = classifier.tokenizer.pad_token_id

    def predict(texts: list[str]) -> np.ndarray:
        encoded = encode(classifier.tokenizer, texts, None, classifier.max_length)
        return softmax(predict_logits(classifier.model, encoded, batch_size, pad_id, device, dtype))

    batcher = MicroBatcher(predict, limits.max_batch, limits.max_wait_ms / 1000)
    stats = {"started": time.time(), "requests": 0, "rejected": 0}
    # Whole-body limit: every text at its longest, 4 bytes a character, JSON quoting and commas.
    max_body = limits.max_texts * (4 * limits.max_chars + 8) + 1024

    @asynccontextmanager
    async def lifespan(_app):
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()
        batcher.worker.shutdown(wait=False)

    app = FastAPI(title="loraclf", version="1", lifespan=lifespan,
                  description=f"Text classification with {classifier.info.get('base_model', 'a loraclf model')}")

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body):
            stats["rejected"] += 1
            return JSONResponse({"detail": f"request body over {max_body:,} bytes"}, status_code=413)
        return await call_next(request)

    @app.post("/predict", response_model=PredictResponse)
    async def predict_endpoint(body: PredictRequest) -> dict[str, Any]:
        if len(body.texts) > limits.max_texts:
            stats["rejected"] += 1
            raise HTTPException(413, f"{len(body.texts)} texts; at most {limits.max_texts} per request")
        for i, text in enumerate(body.texts):
            if len(text) > limits.max_chars:
                stats["rejected"] += 1
                raise HTTPException(413, f"texts[{i}] has {len(text):,} characters; at most {limits.max_chars:,}")
            if not text.strip():
                stats["rejected"] += 1
                raise HTTPException(422, f"texts[{i}] is empty")
        stats["requests"] += 1
        probs = await batcher.submit(body.texts)
        names = classifier.label_names
        return {"predictions": [
            {"label": names[int(row.argmax())], "label_id": int(row.argmax()),
             "probabilities": {name: round(float(p), 6) for name, p in zip(names, row)}} for row in probs]}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "uptime_s": round(time.time() - stats["started"], 1),
                "requests": stats["requests"], "rejected": stats["rejected"], "model_calls": batcher.calls}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return {"labels": classifier.label_names, "format": classifier.kind,
                "base_model": classifier.info.get("base_model"), "parameters": classifier.info.get("parameters"),
                "max_length": classifier.max_length, "limits": vars(limits)}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    return app


def serve(folder: str, host: str, port: int, limits: ServeConfig, log=print) -> None:
    import torch
    import uvicorn

    from loraclf.predict import load_weights, open_classifier
    from loraclf.runtime import autocast_dtype

    classifier = open_classifier(folder)
    device = torch.device("cpu")
    dtype = autocast_dtype(classifier.precision, device)  # a run's training precision; exports: fp32
    load_weights(classifier, device, dtype)
    app = build_app(classifier, limits, dtype)
    log(f"serving {folder} ({classifier.kind}) on http://{host}:{port}")
    uvicorn.run(app, host=host, port=port, log_level="warning")

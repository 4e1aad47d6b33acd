"""`speechpeft serve`: an OpenAI-compatible transcription endpoint over one base model and many adapters.

- ``POST /v1/audio/transcriptions`` takes OpenAI's multipart form: ``file``, ``model`` (an adapter
  folder under the adapter root, or the base model's name, full or short: ``openai/whisper-base`` or
  ``base``), ``language``, ``prompt`` (accepted and ignored: no prompt conditioning yet),
  ``response_format`` (json, text, srt, vtt, verbose_json) and ``temperature`` (0 only: greedy).
- ``GET /v1/models`` lists the base and every adapter with its kind, base, parameters and window.
- ``GET /health`` and ``GET /metrics`` (Prometheus text: requests, audio seconds, batch sizes,
  queue wait, per-adapter counts).

Limits: upload size and audio length (413), a bounded queue (503 with Retry-After), a request
timeout (504), an unknown model (404 naming the available ones), bad audio or fields (400). Every
error body is ``{"error": {"message": ONE_LINE, "type": ..., "code": STATUS}}``, as OpenAI's are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from ..data import load_audio
from ..errors import SpeechPeftError
from ..infer.writers import join_text, render
from ..models import ASRHost, Segment
from .metrics import Metrics
from .pool import AdapterPool, UnknownAdapter
from .worker import RATE, DecodeWorker, QueueFull, Request

FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


@dataclass(frozen=True)
class ServeOptions:
    base: str = "openai/whisper-base"
    adapters: str | None = None  # the adapter root: every folder under it with an adapter file
    capacity: int = 16  # adapters kept in the bank at once (least recently used leave)
    max_batch: int = 8
    max_wait_ms: float = 10.0
    queue_size: int = 64
    max_upload_mb: float = 50.0
    max_seconds: float = 1800.0
    timeout_s: float = 600.0
    strategy: str = "mixed"  # or "merged": one adapter at a time, merged (speechpeft.serve.worker)
    vad: bool = False  # long files: silero-vad chunks decoded as rows (as transcribe --vad), not long-form

    @property
    def short_name(self) -> str:
        return self.base.rstrip("/").rsplit("/", 1)[-1].removeprefix("whisper-")


class HTTPError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", headers=None):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}


def create_app(host: ASRHost, opts: ServeOptions, worker: DecodeWorker | None = None) -> FastAPI:
    """The FastAPI application; the decode worker starts and stops with it.

    ``worker`` replaces the decode worker (another decoding engine behind the same HTTP layer, as
    bench/serve.py does for PEFT); it reports its batches to the app's metrics.
    """
    metrics = Metrics()
    pool = worker.pool if worker is not None else AdapterPool(host, opts.adapters, opts.capacity)
    if worker is None:
        worker = DecodeWorker(host, pool, opts.max_batch, opts.max_wait_ms, opts.queue_size, metrics.batch,
                              opts.strategy)  # fmt: skip
    else:
        worker.on_batch = metrics.batch

    @contextlib.asynccontextmanager
    async def lifespan(app):
        worker.start()
        yield
        worker.stop()

    app = FastAPI(title="speechpeft serve", lifespan=lifespan)
    app.state.pool, app.state.worker, app.state.metrics = pool, worker, metrics

    @app.exception_handler(HTTPError)
    async def _http_error(request, e: HTTPError):
        return JSONResponse({"error": {"message": e.message, "type": e.kind, "code": e.status}}, e.status, e.headers)

    @app.get("/health")
    async def health():
        return {"status": "ok", "base": opts.base, "queued": worker.queue.qsize()}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        base = {"id": opts.base, "object": "model", "owned_by": "speechpeft", "kind": "base", "base_model": None,
                "parameters": sum(p.numel() for p in host.model.parameters()),
                "window_seconds": host.max_window_seconds, "aliases": [opts.short_name]}  # fmt: skip
        rows = [base]
        for e in await asyncio.to_thread(pool.catalog):
            rows.append({"id": e.name, "object": "model", "owned_by": "speechpeft", "kind": e.kind,
                         "base_model": e.base_model, "parameters": e.parameters,
                         "window_seconds": e.window_seconds or host.max_window_seconds,
                         **({"error": e.error} if e.error else {})})  # fmt: skip
        return {"object": "list", "data": rows}

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: HTTPRequest):
        form = await _form(request, opts)
        adapter = await asyncio.to_thread(_adapter_for, form["model"], opts, pool)
        audio = await asyncio.to_thread(_decode_upload, form["file"], opts)
        job = Request(audio, adapter, form["language"])
        pieces = await asyncio.to_thread(_pieces, job, opts, host)
        futures = []
        try:
            for _, piece in pieces:
                futures.append(worker.submit(piece))
        except QueueFull as e:
            for f in futures:  # a file's chunks are served whole or not at all
                f.cancel()
            metrics.request(adapter, 503)
            raise HTTPError(503, str(e), "server_busy", {"Retry-After": "1"}) from None
        try:
            parts = await asyncio.wait_for(asyncio.gather(*map(asyncio.wrap_future, futures)), opts.timeout_s)
            segments = _join(pieces, parts)
        except TimeoutError:
            metrics.request(adapter, 504)
            raise HTTPError(504, f"decoding took longer than the {opts.timeout_s:g} s allowed", "timeout") from None
        except SpeechPeftError as e:
            metrics.request(adapter, 400)
            raise HTTPError(400, str(e)) from None
        metrics.request(adapter, 200, job.seconds)
        return _respond(form["response_format"], segments, job, form, PlainTextResponse, JSONResponse)

    return app


async def _form(request, opts: ServeOptions) -> dict[str, Any]:
    """The multipart fields, checked; the upload is spooled to a temp file within the size limit."""
    limit = int(opts.max_upload_mb * 1e6)
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + 1_000_000:
        raise HTTPError(413, f"upload of {int(length) / 1e6:.1f} MB is over the {opts.max_upload_mb:g} MB allowed")
    try:
        form = await request.form(max_part_size=limit)
    except Exception as e:  # a malformed body, or a client gone mid-upload
        raise HTTPError(400, f"could not read the multipart form ({_first_line(e)})") from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise HTTPError(400, "the form has no 'file' part")
    model = str(form.get("model") or "").strip()
    if not model:
        raise HTTPError(400, "the form has no 'model' field (an adapter name, or the base model's)")
    fmt = str(form.get("response_format") or "json")
    if fmt not in FORMATS:
        raise HTTPError(400, f"response_format {fmt!r} is not one of {', '.join(FORMATS)}")
    temperature = str(form.get("temperature") or "0")
    try:
        if float(temperature) != 0:
            raise ValueError
    except ValueError:
        raise HTTPError(400, f"temperature {temperature!r}: only 0 (greedy decoding) is served") from None
    data = await upload.read()
    if len(data) > limit:
        raise HTTPError(413, f"upload of {len(data) / 1e6:.1f} MB is over the {opts.max_upload_mb:g} MB allowed")
    if not data:
        raise HTTPError(400, f"'{upload.filename or 'file'}' is empty (0 bytes)")
    language = str(form.get("language") or "").strip() or None
    return {"file": (upload.filename or "file", data), "model": model, "response_format": fmt, "language": language}


def _adapter_for(model: str, opts: ServeOptions, pool: AdapterPool) -> str | None:
    if model in (opts.base, opts.short_name):
        return None
    try:
        pool.get(model)  # read and verified once; a bad file fails its request, not the batch
    except UnknownAdapter as e:
        raise HTTPError(404, f"{e}; or the base model '{opts.short_name}'", "model_not_found") from None
    except SpeechPeftError as e:
        raise HTTPError(400, str(e)) from None
    return model


def _decode_upload(file: tuple[str, bytes], opts: ServeOptions):
    name, data = file
    with tempfile.NamedTemporaryFile(suffix=Path(name).suffix[:8]) as tmp:
        tmp.write(data)
        tmp.flush()
        try:
            audio = load_audio(tmp.name, RATE, max_seconds=opts.max_seconds)
        except SpeechPeftError as e:
            raise HTTPError(400, str(e).replace(tmp.name, Path(name).name or "file")) from None
    return audio


def _pieces(job: Request, opts: ServeOptions, host: ASRHost) -> list[tuple[float, Request]]:
    """(offset seconds, request) to decode: the file itself, or its silero-vad chunks when ``opts.vad``
    and the file is longer than the encoder window (the same chunks as ``transcribe --vad``)."""
    if not opts.vad or job.seconds <= host.max_window_seconds:
        return [(0.0, job)]
    from ..data.vad import vad_chunks

    return [(s / RATE, Request(job.audio[s:e], job.adapter, job.language, job.task))
            for s, e in vad_chunks(job.audio, host.max_window_seconds, RATE)]  # fmt: skip


def _join(pieces: list[tuple[float, Request]], parts: list[list[Segment]]) -> list[Segment]:
    out = [Segment(t0 + s.start, t0 + s.end, s.text) for (t0, _), segs in zip(pieces, parts, strict=True) for s in segs]
    return sorted(out, key=lambda s: s.start)


def _respond(fmt, segments, job: Request, form, text_response, json_response):
    text = join_text([s.text for s in segments])
    if fmt == "json":
        return json_response({"text": text})
    if fmt == "text":
        return text_response(text + "\n")
    if fmt in ("srt", "vtt"):
        return text_response(render(fmt, segments, {}))
    record = {
        "task": "transcribe",
        "language": form["language"],
        "duration": round(job.seconds, 3),
        "text": text,
        "segments": [
            {"id": i, "start": round(s.start, 3), "end": round(s.end, 3), "text": s.text}
            for i, s in enumerate(segments)
        ],  # fmt: skip
        "model": form["model"],
    }
    return json_response(json.loads(json.dumps(record)))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__

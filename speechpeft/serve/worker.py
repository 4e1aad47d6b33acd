"""The decode worker: requests from every client, batched across adapters, decoded on one thread.

The worker takes the first waiting request, then collects more for up to ``max_wait_ms`` or until
``max_batch`` are in hand, and decodes them together: every row with its own adapter through the
pool's bank, rows of one language, task and encoder window in one ``transcribe_segments`` call.
Files longer than the window never share a batch with shorter ones (as in ``speechpeft
transcribe``, whose output a served transcript equals). Adapters a bank cannot mix decode one
adapter at a time.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from ..errors import SpeechPeftError
from ..infer.transcribe import AdapterSlot
from ..models import ASRHost, Segment
from .pool import AdapterPool

RATE = 16_000
# "mixed": rows of many adapters in one batch through the bank; "merged": one adapter at a time,
# merged into the weights for its rows (what `speechpeft transcribe` does with one adapter)
STRATEGIES = ("mixed", "merged")
OnBatch = Callable[["BatchRecord", list["Request"]], None] | None  # told of every decode call (metrics)


class QueueFull(SpeechPeftError):
    """The server's queue holds as many requests as it may; the client should retry later."""


@dataclass
class Request:
    audio: np.ndarray  # 16 kHz mono
    adapter: str | None  # a folder name under the pool's root; None: the bare model
    language: str | None = None
    task: str = "transcribe"
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float:
        return len(self.audio) / RATE


@dataclass
class BatchRecord:
    """What one decode call held: for metrics and tests."""

    size: int
    adapters: tuple[str | None, ...]
    seconds: float


class DecodeWorker:
    """Decodes submitted requests in batches on its own thread; ``submit`` returns a Future."""

    def __init__(self, host: ASRHost, pool: AdapterPool, max_batch: int = 8, max_wait_ms: float = 10.0,
                 queue_size: int = 64, on_batch: OnBatch = None, strategy: str = "mixed"):  # fmt: skip
        if max_batch < 1 or queue_size < 1:
            raise SpeechPeftError("max_batch and queue_size must be >= 1")
        if strategy not in STRATEGIES:
            raise SpeechPeftError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        self.strategy = strategy
        self.host, self.pool = host, pool
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.queue: queue.Queue[Request] = queue.Queue(maxsize=queue_size)
        self.on_batch = on_batch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="speechpeft-decode", daemon=True)
        self._full_window = host.max_window_seconds

    def start(self) -> DecodeWorker:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def submit(self, request: Request) -> Future:
        """Queue ``request``.

        Raises:
            QueueFull: the queue is at its bound.
        """
        try:
            self.queue.put_nowait(request)
        except queue.Full:
            raise QueueFull(f"the server is busy ({self.queue.maxsize} requests waiting); retry shortly") from None
        return request.future

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                first = self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            batch, deadline = [first], time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    batch.append(self.queue.get(timeout=max(left, 0)) if left > 0 else self.queue.get_nowait())
                except queue.Empty:
                    break
            batch = [r for r in batch if r.future.set_running_or_notify_cancel()]
            try:
                self._decode(batch)
            except Exception as e:  # never let one batch kill the worker: its requests get the error
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(e)

    def _decode(self, batch: list[Request]) -> None:
        groups: dict[tuple, list[Request]] = {}
        for r in batch:
            try:
                loaded = self.pool.get(r.adapter) if r.adapter is not None else None
            except SpeechPeftError as e:
                r.future.set_exception(e)
                continue
            window = (loaded.window if loaded else None) or self._full_window
            alone = r.adapter if loaded is not None and (not loaded.bankable or self.strategy == "merged") else None
            long = r.seconds > min(window, self._full_window)
            groups.setdefault((r.language, r.task, window, alone, long), []).append(r)
        for (language, task, window, alone, _), rows in groups.items():
            self.host.set_window(window)
            if alone is not None:
                self._decode_alone(alone, rows, language, task)
                continue
            names = [r.adapter for r in rows]
            try:
                ids = self.pool.bank_ids(names) if any(n is not None for n in names) else None
            except SpeechPeftError as e:
                for r in rows:
                    r.future.set_exception(e)
                continue
            self._finish(rows, self._run(rows, language, task, ids))

    def _decode_alone(self, name: str, rows: list[Request], language, task) -> None:
        """One adapter's rows with the adapter merged into the weights (base weights restored after)."""
        self.pool.clear()
        slot = AdapterSlot(self.host)
        try:
            slot.use(str(self.pool.folder(name)), None, self._full_window)
            self._finish(rows, self._run(rows, language, task, None))
        except SpeechPeftError as e:
            self._finish(rows, e)
        finally:
            slot.clear()

    def _run(self, rows: list[Request], language, task, ids) -> list[list[Segment]] | Exception:
        started = time.monotonic()
        try:
            out = self.host.transcribe_segments([r.audio for r in rows], language, task, 1, adapter_ids=ids)
        except SpeechPeftError as e:
            return e
        if self.on_batch is not None:
            record = BatchRecord(len(rows), tuple(r.adapter for r in rows), time.monotonic() - started)
            self.on_batch(record, rows)
        return out

    @staticmethod
    def _finish(rows: list[Request], out: list[list[Segment]] | Exception) -> None:
        for i, r in enumerate(rows):
            if isinstance(out, Exception):
                r.future.set_exception(out)
            else:
                r.future.set_result(out[i])

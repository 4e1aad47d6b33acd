"""The server's Prometheus metrics (prometheus_client, one registry per app)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

BASE_LABEL = "(base)"


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("speechpeft_requests", "transcription requests", ["adapter", "status"], registry=r)
        self.audio = Counter("speechpeft_audio_seconds", "seconds of audio transcribed", ["adapter"], registry=r)
        self.batch_size = Histogram("speechpeft_batch_size", "rows per decode call", registry=r,
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64))  # fmt: skip
        self.batch_adapters = Histogram("speechpeft_batch_adapters", "distinct adapters (base counted) per decode call",
                                        registry=r, buckets=(1, 2, 3, 4, 6, 8, 16, 32))  # fmt: skip
        waits = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
        self.queue_wait = Histogram("speechpeft_queue_wait_seconds", "time from arrival to the decode call",
                                    registry=r, buckets=waits)  # fmt: skip
        self.decode = Histogram("speechpeft_decode_seconds", "wall time of one decode call", registry=r)

    def request(self, adapter: str | None, status: int, seconds: float = 0.0) -> None:
        label = adapter or BASE_LABEL
        self.requests.labels(label, str(status)).inc()
        if seconds:
            self.audio.labels(label).inc(seconds)

    def batch(self, record, rows) -> None:
        """The decode worker's report of one decode call."""
        now = time.monotonic()
        self.batch_size.observe(record.size)
        self.batch_adapters.observe(len(set(record.adapters)))
        self.decode.observe(record.seconds)
        for r in rows:
            self.queue_wait.observe(max(0.0, now - record.seconds - r.queued_at))

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""What `GET /metrics` exposes, in Prometheus's text format (prometheus_client, one registry per server)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("primer_requests", "HTTP requests answered, by route and status code",
                                ["route", "status"], registry=r)
        self.prompt_tokens = Counter("primer_prompt_tokens", "Prompt tokens of admitted requests", registry=r)
        self.completion_tokens = Counter("primer_completion_tokens", "Tokens generated", registry=r)
        self.finished = Counter("primer_finished_requests", "Generations ended, by finish reason",
                                ["reason"], registry=r)
        self.queue_depth = Gauge("primer_queue_depth", "Requests waiting for a decode slot", registry=r)
        self.active = Gauge("primer_active_requests", "Requests decoding in the running batch", registry=r)
        self.ttft = Histogram("primer_time_to_first_token_seconds", "From submission to the first token",
                              buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64), registry=r)
        self.step = Histogram("primer_step_seconds", "One engine step (a decode for the batch plus admissions)",
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4), registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

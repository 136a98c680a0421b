"""The engine loop: one thread owns the model and steps the continuous-batching engine.

HTTP handlers run on the asyncio event loop and never touch the model. `Worker.submit` hands a
request to the engine loop through a command queue and returns a `Ticket`, whose asyncio queue
receives the engine's events for that request (`loop.call_soon_threadsafe`). The loop takes
every pending command, runs one `Engine.step()` (a decode for all running requests, then the
admission of waiting ones into free slots), delivers the events, and blocks only when there is
no work. So a request that arrives while others decode joins the batch at the next step, and
`Worker.cancel` (a client that went away) frees its slot at the next step.

`Worker.run()` is the loop; `primer serve` runs it on the main thread, the one that loaded the
model, and HTTP on a second thread. Why not the other way round: OpenMP (torch's and primer's
kernels') keeps a pool of spinning worker threads per thread that runs parallel regions; a second
thread stepping the model starts a second pool, libgomp then counts more threads than cores and
its workers go to sleep between regions, and a decode step of ~150 small regions pays a wake-up in
each: 150 -> 45 tokens/s single-stream on 2 cores (see the README's serving section).

Admission control: at most `max_batch` requests decode and `max_queue` wait; beyond that
`submit` raises `QueueFull` (HTTP 429 with Retry-After).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from primer.model.engine import Engine, Event
from primer.model.sampling import SamplingParams
from primer.serve.metrics import Metrics

log = logging.getLogger("primer.serve")


class QueueFull(Exception):
    """Every slot is busy and the waiting queue is full."""


class ShuttingDown(Exception):
    """The server is stopping and takes no new requests."""


@dataclass
class Failure:
    """Delivered instead of an Event when the engine could not run a request."""

    message: str


@dataclass
class Ticket:
    """One submitted request, as its handler sees it."""

    ids: list[int]
    params: SamplingParams
    events: asyncio.Queue
    loop: asyncio.AbstractEventLoop
    submitted: float = field(default_factory=time.perf_counter)
    rid: int | None = None  # the engine's id, set by the loop thread
    done: bool = False
    first_token_at: float | None = None


class Worker:
    def __init__(self, engine: Engine, metrics: Metrics, max_queue: int = 64):
        self.engine, self.metrics = engine, metrics
        self.max_queue = max(0, int(max_queue))
        self._cmds: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._inflight = 0  # submitted and not yet finished (running + waiting)
        self._closing = False
        self._by_rid: dict[int, Ticket] = {}

    @property
    def capacity(self) -> int:
        return self.engine.max_batch + self.max_queue

    # -- called on the event loop ---------------------------------------------------------------
    def submit(self, ids: list[int], params: SamplingParams) -> Ticket:
        with self._lock:
            if self._closing:
                raise ShuttingDown()
            if self._inflight >= self.capacity:
                raise QueueFull()
            self._inflight += 1
        t = Ticket(ids, params, asyncio.Queue(), asyncio.get_running_loop())
        self._cmds.put(("submit", t))
        return t

    def cancel(self, t: Ticket) -> None:
        """Drop a request that has not finished (its client went away); a no-op after it finished."""
        if not t.done:
            self._cmds.put(("cancel", t))

    def inflight(self) -> int:
        """Requests submitted and not finished (decoding or waiting)."""
        return self._inflight

    def close(self) -> None:
        """Stop taking requests; `run` returns once the ones in flight have finished."""
        with self._lock:
            self._closing = True
        self._cmds.put(("stop", None))

    # -- the engine loop ------------------------------------------------------------------------
    def run(self, drain_seconds: float = 60.0, alive=lambda: True) -> None:
        """Step the engine on this thread until `close()` and the requests in flight have finished
        (at most `drain_seconds` after it), or until `alive()` turns false."""
        deadline = None
        while alive():
            idle = not self.engine.has_work()
            if deadline is not None and (idle or time.monotonic() > deadline):
                return
            try:  # wait for work only when there is none, and look at alive() now and then
                cmd = self._cmds.get(timeout=0.2) if idle else self._cmds.get_nowait()
            except queue.Empty:
                cmd = None
            while cmd is not None:
                if cmd[0] == "stop":
                    deadline = time.monotonic() + drain_seconds
                else:
                    self._command(*cmd)
                try:
                    cmd = self._cmds.get_nowait()
                except queue.Empty:
                    cmd = None
            if self.engine.has_work():
                self._step()

    def _command(self, kind: str, t: Ticket) -> None:
        if kind == "submit":
            try:
                t.rid = self.engine.submit(t.ids, t.params)
            except Exception as e:  # a request the handler's checks let through; it alone fails
                self._finish(t, Failure(str(e)))
                return
            self._by_rid[t.rid] = t
            self.metrics.prompt_tokens.inc(len(t.ids))
        elif kind == "cancel" and not t.done:
            if t.rid is not None:
                self.engine.cancel(t.rid)
                self._by_rid.pop(t.rid, None)
            self.metrics.finished.labels("cancelled").inc()
            self._finish(t, None)

    def _step(self) -> None:
        start = time.perf_counter()
        try:
            events = self.engine.step()
        except Exception as e:  # a bug in a step must not kill the server: fail what ran
            log.exception("engine step failed")
            for rid, t in list(self._by_rid.items()):
                self.engine.cancel(rid)
                self._finish(t, Failure(f"the engine failed: {e}"))
            self._by_rid.clear()
            return
        now = time.perf_counter()
        self.metrics.step.observe(now - start)
        for ev in events:
            t = self._by_rid.get(ev.rid)
            if t is None:
                continue
            if t.first_token_at is None:
                t.first_token_at = now
                self.metrics.ttft.observe(now - t.submitted)
            if ev.token_id is not None:
                self.metrics.completion_tokens.inc()
            if ev.finish_reason is not None:
                del self._by_rid[ev.rid]
                self.metrics.finished.labels(ev.finish_reason).inc()
                self._finish(t, ev)
            else:
                _deliver(t, ev)
        self.metrics.active.set(self.engine.active())
        self.metrics.queue_depth.set(self.engine.waiting())

    def _finish(self, t: Ticket, last: Event | Failure | None) -> None:
        """Deliver a request's last event (None after a cancel) and release its place."""
        t.done = True
        with self._lock:
            self._inflight -= 1
        if last is not None:
            _deliver(t, last)


def _deliver(t: Ticket, item) -> None:
    with contextlib.suppress(RuntimeError):  # the event loop is gone (the server stopped)
        t.loop.call_soon_threadsafe(t.events.put_nowait, item)

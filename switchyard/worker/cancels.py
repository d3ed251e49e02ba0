"""Cancels: of streamed items, from gateways whose client went away (subjects.cancel_subject), and
of jobs, from POST /v1/jobs/{id}/cancel (subjects.job_cancel_subject).

One wildcard subscription per kind and worker: cancels are rare, and a cancel that comes before
the item reached this worker (still queued, or pulled by another worker first) is remembered for
a while, so the item is not run for nobody when it does arrive. (A cancelled job is also skipped
by its record, which is already `cancelled` when the worker tries to mark it running.)
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from nats.aio.msg import Msg

from ..subjects import cancel_subject, job_cancel_subject

REMEMBER_S = 600.0  # an early cancel outlives any sane time in the queue of a streamed item
REMEMBER_MAX = 10_000


class Cancels:
    def __init__(self) -> None:
        self._watching: dict[str, asyncio.Event] = {}
        self._early: OrderedDict[str, float] = OrderedDict()

    async def on_msg(self, msg: Msg) -> None:
        event = self._watching.get(msg.subject)
        if event is not None:
            event.set()
            return
        now = time.monotonic()
        self._early[msg.subject] = now
        while self._early and (len(self._early) > REMEMBER_MAX
                               or now - next(iter(self._early.values())) > REMEMBER_S):
            self._early.popitem(last=False)

    def watch(self, reply: str) -> asyncio.Event:
        """The event is set when the gateway cancels the item streaming to `reply` (maybe already)."""
        return self._watch(cancel_subject(reply), asyncio.Event())

    def unwatch(self, reply: str) -> None:
        self._watching.pop(cancel_subject(reply), None)

    def watch_job(self, key: str, event: asyncio.Event) -> asyncio.Event:
        """Set `event` when the job with this key (subjects.job_key) is cancelled (maybe already)."""
        return self._watch(job_cancel_subject(key), event)

    def unwatch_job(self, key: str) -> None:
        self._watching.pop(job_cancel_subject(key), None)

    def _watch(self, subject: str, event: asyncio.Event) -> asyncio.Event:
        self._watching[subject] = event
        if self._early.pop(subject, None) is not None:
            event.set()
        return event

"""The worker's side of usage accounting: one UsageRecord per finished attempt, into the usage ledger.

The worker is the only part that sees every attempt (a 202 job's included) and measures what it cost:
the handler's wall time in that attempt, times the GPUs the worker holds. Records go to
`sy.usage.<tenant token>` on the SWITCHYARD_USAGE stream with `Nats-Msg-Id` = `<tenant>.<request
id>@<enqueued_at, µs>.<attempt>` (UsageRecord.msg_id), so a publish retried after a lost PubAck is
stored once, and a request id a tenant reuses later is never mistaken for the earlier item. The
gateways read the ledger for GET /v1/usage, their metrics and anomalies (switchyard/gateway/usage_*.py,
docs/usage.md).

A record is appended before the item is acked. If NATS cannot take it within the retry budget the
attempt's usage is lost and logged (the item is still acked: running it again would cost more).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import nats.js.errors
from nats.js import JetStreamContext

from ..jetstream import ensure_usage_stream
from ..messages import Result, UsageRecord, WorkItem
from ..subjects import usage_subject

log = logging.getLogger("switchyard.worker")

def _tokens(usage: dict[str, Any] | None, name: str) -> int:
    value = (usage or {}).get(name)
    # A handler's numbers are not trusted to be sane: a count is a non-negative int.
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_record(item: WorkItem, res: Result, *, final: bool, gpus: float, worker: str) -> UsageRecord:
    compute_ms = res.timing.get("compute_ms", 0.0) if res.timing else 0.0
    return UsageRecord(
        id=item.id, tenant=item.tenant, key_name=item.key_name, op=item.op, model=item.model, bundle=item.bundle,
        machine_profile=item.machine_profile, pool=item.pool, attempt=item.attempt, final=final,
        state=res.state if final else "retried", items=len(item.items) if isinstance(item.items, list) else 0,
        input_tokens=_tokens(res.usage, "input_tokens"), output_tokens=_tokens(res.usage, "output_tokens"),
        compute_s=round(max(0.0, float(compute_ms)) / 1000.0, 6), gpus=gpus, worker=worker,
        enqueued_at=item.enqueued_at)


class UsageLedger:
    """Appends records; creates the ledger (default retention) if no gateway made it yet."""

    def __init__(self, js: JetStreamContext, retry_s: float = 10.0) -> None:
        self._js = js
        self.retry_s = retry_s
        self.lost = 0  # records given up on (NATS away past retry_s): the worker log names each

    async def append(self, record: UsageRecord) -> bool:
        subject = usage_subject(record.tenant)
        data = record.encode()
        headers = {"Nats-Msg-Id": record.msg_id}
        deadline = time.monotonic() + self.retry_s
        delay = 0.1
        while True:
            try:
                await self._js.publish(subject, data, headers=headers)
                return True
            except nats.js.errors.NoStreamResponseError:
                try:
                    await ensure_usage_stream(self._js)
                    continue
                except Exception as exc:  # noqa: BLE001 - as any other failure below
                    error: Exception = exc
            except Exception as exc:  # noqa: BLE001 - NATS away, JetStream not ready: retried
                error = exc
            if time.monotonic() + delay > deadline:
                self.lost += 1
                log.error("usage record lost", extra={"request_id": record.id, "tenant": record.tenant,
                                                      "attempt": record.attempt, "error": str(error)})
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

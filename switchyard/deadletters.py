"""Dead letters: items failed because they used up their attempts.

The worker counts attempts (consumers run with max_deliver=-1 so the last attempt can
report), so JetStream's MAX_DELIVERIES advisory never fires. Instead the worker
terminates such an item with a reason, `+TERM max_attempts`, and JetStream publishes
a MSG_TERMINATED advisory that carries it; gateways count those per lane. Other
terminations (a permanent handler error, an undecodable item) carry no reason and
are not dead letters: their failure is the handler's answer, not exhausted retries.
"""

from __future__ import annotations

from nats.aio.msg import Msg

from .subjects import WORK_STREAM

REASON = "max_attempts"
# $JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.<stream>.<consumer>
ADVISORY_SUBJECT = f"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{WORK_STREAM}.*"


async def term_dead_letter(msg: Msg) -> None:
    """Terminate `msg` (no redelivery) with the dead-letter reason in JetStream's advisory."""
    await msg.respond(f"+TERM {REASON}".encode())

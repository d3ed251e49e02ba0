"""The floor: a plain nats-py request-reply responder around the same echo handler.

Run as a process by bench.gateway; it decodes the same WorkItem, calls the same
handler and encodes the same Result, so the only difference from the gateway path
is the gateway (HTTP, resolution, JetStream, inbox) itself.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import nats
from nats.aio.msg import Msg

from switchyard.messages import Result, WorkItem
from switchyard.worker.context import Context
from switchyard.worker.handlers import echo

SUBJECT = "bench.floor.echo"


async def serve(url: str) -> None:
    nc = await nats.connect(url)

    async def on_request(msg: Msg) -> None:
        item = WorkItem.decode(msg.data)
        ctx = Context(op=item.op, model=item.model, bundle=item.bundle, machine_profile=item.machine_profile,
                      pool=item.pool, request_id=item.id, params=item.params)
        await msg.respond(Result(item.id, True, echo(item.items, ctx), worker="floor").encode())

    await nc.subscribe(SUBJECT, cb=on_request)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await nc.drain()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--nats", required=True)
    try:
        import uvloop

        uvloop.run(serve(parser.parse_args().nats))
    except ImportError:
        asyncio.run(serve(parser.parse_args().nats))

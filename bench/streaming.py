"""`make bench`: streaming through the queue, time to first token and the gateway's overhead on it.

    python -m bench.streaming [--requests 500] [--words 16] [--repeat 3]

bench/gateway.py's stack (nats-server, one `switchyard gateway` process on examples/, the floor
responder) with a worker process running the streaming example handler
(switchyard.worker.handlers:tokens, no delay between words). Sequential streamed requests at
c=1 (POST /v1/generate/switchyard/echo with Accept: text/event-stream, a new connection each,
as an SSE client opens one), each timed by a blocking socket:

- TTFT: from sending the request to the first `event: chunk` bytes at the client;
- the worker's own first chunk: `timing.first_ms` of the `done` event (handler start to its
  first yield, measured in the worker);
- overhead: TTFT minus that, per request: HTTP, resolution, the JetStream publish and PubAck,
  the worker's pull, and the chunk's way back through the gateway's inbox;
- the last chunk: from sending to the `done` event (all `--words` chunks);

beside the floor: a direct core-NATS request-reply around the echo handler (bench/floor.py).
Results go to bench/results/streaming.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import sys
import time
from typing import Any

from switchyard.messages import Result, WorkItem

from . import probe
from .floor import SUBJECT
from .gateway import machine, save, spread, stack

MODEL = "switchyard/echo"
DONE = re.compile(rb"event: done\ndata: (\{.*?\})\n")


def streamed(host: str, port: int, path: str, body: bytes, key: str) -> tuple[float, float, float]:
    """One streamed request: (TTFT ms, time to the done event ms, the worker's first_ms)."""
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nAccept: text/event-stream\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    first = None
    try:
        t0 = time.perf_counter()
        sock.sendall(head + body)
        while True:
            data = sock.recv(65536)
            if not data:
                break
            buf += data
            if first is None and b"event: chunk" in buf:
                first = time.perf_counter()
            if b"event: done" in buf and DONE.search(buf):
                break
        last = time.perf_counter()
    finally:
        sock.close()
    if not buf.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"streamed request failed: {buf[:200]!r}")
    m = DONE.search(buf)
    if first is None or m is None:
        raise RuntimeError(f"stream did not finish: {buf[-300:]!r}")
    done = json.loads(m.group(1))
    return (first - t0) * 1000, (last - t0) * 1000, float(done["timing"]["first_ms"])


def pct(xs: list[float], q: float) -> float:
    return probe.percentile(xs, q / 100)


def one_round(args: argparse.Namespace, nats_url: str, url: str, key: str) -> dict[str, Any]:
    floor_item = WorkItem(id="floor", op="encode", model=MODEL, bundle="default", machine_profile="cpu",
                          pool="default", items=[{"prompt": "x"}]).encode()
    nc = probe.NatsClient(nats_url)
    try:
        floor = probe.sequential(lambda: Result.decode(nc.request(SUBJECT, floor_item)).ok, args.requests)
    finally:
        nc.close()
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"items": [{"prompt": " ".join(f"w{i}" for i in range(args.words))}]}).encode()
    path = f"/v1/generate/{MODEL}"
    for _ in range(min(50, args.requests)):  # warm-up
        streamed(host, int(port), path, body, key)
    http = probe.HttpClient(url, {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:  # the same request not streamed (one connection kept open): the whole joined result at once
        unary = probe.sequential(lambda: http.post(path, body).status == 200, args.requests)
    finally:
        http.close()
    ttft, last, worker_first, overhead = [], [], [], []
    for _ in range(args.requests):
        t, end, w = streamed(host, int(port), path, body, key)
        ttft.append(t)
        last.append(end)
        worker_first.append(w)
        overhead.append(t - w)
    return {
        "floor_p50_ms": floor.p50_ms, "floor_p99_ms": floor.p99_ms,
        "unary_p50_ms": unary.p50_ms, "unary_p99_ms": unary.p99_ms,
        "ttft_p50_ms": pct(ttft, 50), "ttft_p99_ms": pct(ttft, 99),
        "worker_first_p50_ms": pct(worker_first, 50), "worker_first_p99_ms": pct(worker_first, 99),
        "overhead_p50_ms": pct(overhead, 50), "overhead_p99_ms": pct(overhead, 99),
        "last_p50_ms": pct(last, 50), "last_p99_ms": pct(last, 99),
    }


def report(r: dict[str, Any], args: argparse.Namespace) -> str:
    m, rounds = r["machine"], r["rounds"]
    col = lambda k: [x[k] for x in rounds]  # noqa: E731
    w = 44
    rows = [
        ("floor: NATS request-reply, p50 / p99", "floor"),
        ("not streamed: whole result, p50 / p99", "unary"),
        ("TTFT at the client, p50 / p99", "ttft"),
        ("worker's own first chunk, p50 / p99", "worker_first"),
        ("overhead: TTFT - worker's, p50 / p99", "overhead"),
        (f"last of {args.words} chunks, p50 / p99", "last"),
    ]
    lines = [
        f"machine: {m.get('cpu', '?')}, {m['cores']} cores, {m['python']}, {m['nats_server']}; "
        f"load avg {m['load_before']:.2f} before, {m['load_after']:.2f} after",
        f"setup: 1 gateway process, 1 worker process (handlers:tokens, {args.words} words, no delay), c=1, "
        f"{args.requests} streamed requests a round, a new connection each; {len(rounds)} round(s): "
        "best (median, worst), ms",
        "",
    ]
    for label, key in rows:
        lines.append(f"{label:{w}}{spread(col(key + '_p50_ms'), min, '.3f'):>26}"
                     f"{spread(col(key + '_p99_ms'), min, '.3f'):>26}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=500, help="sequential streamed requests per round")
    p.add_argument("--words", type=int, default=16, help="chunks per stream")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    info = machine()
    # The last --handler wins: the stack's worker runs the streaming example instead of echo.
    with stack(worker_concurrency=4, worker_args=("--handler", "switchyard.worker.handlers:tokens")) as st:
        rounds = []
        for i in range(args.repeat):
            print(f"round {i + 1}/{args.repeat} (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
            rounds.append(one_round(args, st.nats_url, st.url, st.key))
    info["load_after"] = os.getloadavg()[0]
    results = {"machine": info, "rounds": rounds,
               "median_overhead_p50_ms": statistics.median(x["overhead_p50_ms"] for x in rounds)}
    text = report(results, args)
    print(text)
    save("streaming.json", {"args": vars(args), **results, "report": text})


if __name__ == "__main__":
    main()

"""`make bench`: what one job.progress pass costs (gateway/progress.py), beside its floor.

    python -m bench.progress [--lanes 1,40] [--jobs 50] [--rounds 5]

In process, on a real nats-server: the gateway's own state (new_state, a directory config with
one Upstream per lane, no worker anywhere), with `--jobs` jobs queued on each lane through the
inference core's 202 path (`submit`: record, publish, cold-start episode). Each round, timed:

- floor: the reads a pass cannot avoid, one ordered scan of every lane (`scan_lane`: the items by
  sequence and their job records), which is also what one `GET /v1/jobs/{id}` of a lane's last
  job reads;
- pass, all due: `Progress.pass_once()` when every job's followers must hear (the first pass, a
  position that moved): the scans, the ETA reads and one core-NATS publish per job;
- next pass: right after, nothing moved (the common case between RESEND_S repeats), unless there
  are more lanes than one pass reads: then it reads the next ones, all due.

10 lanes x 50 jobs is the per-pass budget (MAX_READS_PER_PASS = 500 items): at 40 lanes a pass reads 10 of
them (the rest in the next passes, round robin), so no pass costs more than that. Results go to
bench/results/progress.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from switchyard.gateway.app import new_state
from switchyard.gateway.config import directory
from switchyard.gateway.progress import MAX_READS_PER_PASS, POSITION_SCAN_MAX, Progress, scan_lane
from switchyard.gateway.submit import Accepted, Submission, submit
from switchyard.natsserver import NatsServer
from switchyard.subjects import PROGRESS_PREFIX

from .gateway import machine

GATEWAY = """apiVersion: switchyard.dev/v1alpha1
kind: Gateway
metadata: {name: bench}
spec: {}
"""
UPSTREAM = """---
apiVersion: switchyard.dev/v1alpha1
kind: Upstream
metadata: {{name: m{i}}}
spec:
  model: bench/m{i}
  operations: [encode]
  machineProfiles: [cpu]
  workers: {{service: m{i}}}
"""


async def one_size(nats_url: str, lanes: int, jobs: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "gateway.yaml").write_text(GATEWAY + "".join(UPSTREAM.format(i=i) for i in range(lanes)))
        st = new_state(nats_url, directory(tmp))
        st.source.load()
        await st.dispatcher.connect()
        nc = st.dispatcher.nc
        assert nc is not None and st.dispatcher.js is not None
        table = st.table()
        heard = 0

        async def count(_: Any) -> None:
            nonlocal heard
            heard += 1

        await nc.subscribe(f"{PROGRESS_PREFIX}.>", cb=count)  # a follower: the publishes go somewhere
        try:
            for i in range(lanes):
                for j in range(jobs):
                    sub = Submission(op="encode", model_ref=f"bench/m{i}", items=[{"text": "x"}], params={},
                                     request_id=f"r{lanes}-{i}-{j}", key=None)
                    assert isinstance(await submit(st, table, sub), Accepted)
            await st.demand.poll(st.dispatcher.js)
            queued = sorted((lane for lane, n in st.demand.by_lane.items() if n > 0), key=lambda lane: lane.subject)
            assert len(queued) == lanes, st.demand.by_lane
            read = queued[:MAX_READS_PER_PASS // POSITION_SCAN_MAX]  # the lanes one pass reads
            floor, due, steady, sent, then = [], [], [], [], []
            for _ in range(rounds):
                started = time.perf_counter()
                for lane in read:
                    await scan_lane(st, lane)
                floor.append(time.perf_counter() - started)
                progress = Progress(st)  # a fresh holder: every job is due
                started = time.perf_counter()
                sent.append(await progress.pass_once())
                due.append(time.perf_counter() - started)
                started = time.perf_counter()
                then.append(await progress.pass_once())  # 0 unless there were more lanes than one pass reads
                steady.append(time.perf_counter() - started)
            await nc.flush()
            med = statistics.median
            return {"lanes": lanes, "jobs_per_lane": jobs, "lanes_per_pass": len(read), "events_per_pass": sent[0],
                    "events_next_pass": then[0],
                    "floor_ms": round(med(floor) * 1e3, 1), "pass_all_due_ms": round(med(due) * 1e3, 1),
                    "pass_steady_ms": round(med(steady) * 1e3, 1),
                    "pass_all_due_per_job_us": round(med(due) / max(sent[0], 1) * 1e6, 1),
                    "followers_heard": heard}
        finally:
            await st.dispatcher.close()


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    loads = [load_average()]
    for lanes in args.lanes:
        server = NatsServer().start()  # a fresh store per size: one size's items are not another's lanes
        try:
            rows.append(await one_size(server.url, lanes, args.jobs, args.rounds))
        finally:
            server.close()
        r = rows[-1]
        loads.append(load_average())
        print(f"{r['lanes']:>4} lanes x {r['jobs_per_lane']} jobs ({r['lanes_per_pass']} read a pass): "
              f"floor (their scans) {r['floor_ms']:>6.1f} ms | pass, all due {r['pass_all_due_ms']:>6.1f} ms "
              f"({r['events_per_pass']} events, {r['pass_all_due_per_job_us']:.0f} us/job) | next pass "
              f"{r['pass_steady_ms']:>6.1f} ms ({r['events_next_pass']} events)", flush=True)
    print(f"load average {min(loads):.1f} to {max(loads):.1f}")
    return {"machine": machine(), "rounds": args.rounds, "load_average": [min(loads), max(loads)], "sizes": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lanes", type=lambda v: [int(x) for x in v.split(",")], default=[1, 10, 40])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "progress.json")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Heartbeat on the wire: sent_at, which nothing read, is gone; beats from workers that still send it decode."""

from __future__ import annotations

import msgpack

from switchyard.messages import VERSION, Heartbeat


def test_a_beat_carries_no_send_time_and_an_older_workers_beat_still_decodes() -> None:
    beat = Heartbeat(worker_id="w1", models=["m"], bundle="default", machine_profile="cpu", pool="default",
                     host="pod-1", in_flight=2)
    wire = msgpack.unpackb(beat.encode(), raw=False)
    assert "sent_at" not in wire and wire["worker_id"] == "w1"

    older = msgpack.packb({**wire, "sent_at": 1_700_000_000.0}, use_bin_type=True)  # a worker before this change
    decoded = Heartbeat.decode(older)
    assert (decoded.worker_id, decoded.host, decoded.in_flight) == ("w1", "pod-1", 2)
    assert wire["v"] == VERSION

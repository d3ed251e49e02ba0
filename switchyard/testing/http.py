"""Small blocking HTTP calls the process-level tests make to a gateway (stdlib only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def status(url: str) -> int:
    """The status a GET gets, or 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def call(url: str, key: str, body: Any = None, **headers: str) -> tuple[int, dict[str, Any]]:
    """POST `body` as JSON (GET when None) with the API key; (status, decoded answer)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST", headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def metric(metrics_url: str, name: str) -> float:
    """A sample by its full name with labels, or the sum of a family's samples (`name{`); 0 when absent."""
    total = 0.0
    with urllib.request.urlopen(metrics_url, timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
            if name.endswith("{") and line.startswith(name):
                total += float(line.rsplit(" ", 1)[1])
    return total

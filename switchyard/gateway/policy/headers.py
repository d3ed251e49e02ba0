"""The IETF RateLimit-Policy and RateLimit headers (draft-ietf-httpapi-ratelimit-headers, structured fields).

    RateLimit-Policy: "per-key";q=100;w=60, "burst";q=4
    RateLimit: "per-key";r=42;t=17, "burst";r=3

One list member per limit that applied to the request, named by the limit's `name`: `q` its quota,
`w` its window in seconds (absent for a concurrent limit), `r` what is left, `t` seconds until the
window ends. On admitted requests and on the 429s alike.

An admitted HTTP request's answer gets them through `ADMITTED`: the limits stage leaves them there for
its request id, and `setup()`'s response hook copies them onto that request's answer as it is prepared
(streams included). A refusal carries them in its ApiError's headers, as every protocol renders those.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from aiohttp import web

from ..http import RID

# (request id, headers) of the request admitted last in this task; the id keeps a keep-alive
# connection's next request (served in the same task) from showing them.
ADMITTED: ContextVar[tuple[str, dict[str, str]] | None] = ContextVar("switchyard_ratelimit", default=None)


@dataclass(frozen=True, slots=True)
class Standing:
    """One limit as it stood for one request."""

    name: str
    quota: int
    window_s: int | None  # None: a concurrent limit
    remaining: int
    reset_s: int | None  # seconds to the window's end; None: concurrent


def render(standings: list[Standing]) -> dict[str, str]:
    if not standings:
        return {}
    policy = ", ".join(f'"{s.name}";q={s.quota}' + (f";w={s.window_s}" if s.window_s is not None else "")
                       for s in standings)
    now = ", ".join(f'"{s.name}";r={max(0, s.remaining)}' + (f";t={s.reset_s}" if s.reset_s is not None else "")
                    for s in standings)
    return {"RateLimit-Policy": policy, "RateLimit": now}


def publish(request_id: str, headers: dict[str, str]) -> None:
    """Hand the admitted request's headers to its HTTP answer (gRPC and WebSocket answers have none)."""
    ADMITTED.set((request_id, headers))


def setup(app: web.Application) -> None:
    async def add_headers(request: web.Request, resp: web.StreamResponse) -> None:
        admitted = ADMITTED.get()
        if admitted is None:
            return
        ADMITTED.set(None)
        if admitted[0] == request.get(RID):
            for name, value in admitted[1].items():
                resp.headers.setdefault(name, value)

    app.on_response_prepare.append(add_headers)

"""key=value log lines; fields come from `extra=` (request_id, worker, lane, ...)."""

from __future__ import annotations

import logging
import sys
import time

_STD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def _fmt(value: object) -> str:
    s = str(value)
    return repr(s) if (not s or any(c in s for c in ' ="\n')) else s


class KVFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        parts = [f"ts={ts}", f"level={record.levelname.lower()}", f"logger={record.name}",
                 f"msg={_fmt(record.getMessage())}"]
        parts += [f"{k}={_fmt(v)}" for k, v in record.__dict__.items() if k not in _STD and not k.startswith("_")]
        if record.exc_info:
            parts.append(f"exc={_fmt(self.formatException(record.exc_info))}")
        return " ".join(parts)


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KVFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

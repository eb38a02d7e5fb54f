"""One JSON object per log line, carrying the request id of the request being served."""

import contextvars
import logging
import sys
from typing import TextIO

from pythonjsonlogger.orjson import OrjsonFormatter

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def json_handler(component: str, stream: TextIO = sys.stdout) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(
        # orjson: cheaper per line than the json module (docs/performance.md, levers).
        OrjsonFormatter(
            "%(levelname)s %(name)s %(message)s %(request_id)s",
            rename_fields={"levelname": "level", "name": "logger"},
            static_fields={"component": component},
            timestamp="time",
        )
    )
    return handler


def configure_logging(component: str, level: str = "INFO") -> None:
    # The lines name no thread or process: records need not look them up (the logging HOWTO,
    # "Optimization").
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [json_handler(component)]
    root.setLevel(level.upper())
    # aio-pika and aiormq narrate every reconnect attempt at INFO; our own lines say what matters.
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    logging.getLogger("aio_pika").setLevel(logging.WARNING)

"""Forwards the engine's log records (connections, subscriptions, security
refusals: INFO and above) to Python's `logging`, logger "subs"."""

from __future__ import annotations

import atexit
import logging
import threading
from typing import Optional

from . import _native

logger = logging.getLogger("subs")

_lock = threading.Lock()
_thread: Optional[threading.Thread] = None
_stop = threading.Event()


def _pump() -> None:
    while not _stop.is_set():
        for level, target, message in _native.drain_logs(0.2):
            if logger.isEnabledFor(level):
                logger.log(level, message, extra={"subs_target": target})


def _shutdown() -> None:
    _stop.set()
    thread = _thread
    if thread is not None:
        thread.join(timeout=1.0)


def start() -> None:
    """Starts the forwarding thread once."""
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_pump, name="subs-logging", daemon=True)
            _thread.start()
            atexit.register(_shutdown)

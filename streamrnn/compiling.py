"""Say so when Numba compiles streamrnn's kernels (a cold cache), once per process.

Every kernel module calls ``announce_compiles()`` when it is imported: it registers one listener
for Numba's ``numba:compile`` event, which fires only when a kernel is really compiled (not when
it is loaded from the on-disk cache).  The first compile of a streamrnn kernel logs one warning,
``COMPILE_NOTICE``, so every command that compiles (``stream``, ``features``, ``train``,
``gradcheck``, ``eval`` ...) says it on stderr instead of waiting in silence.

>>> announce_compiles() is announce_compiles()  # one listener per process, however often called
True
"""

from __future__ import annotations

import logging
import threading

from numba.core import event

log = logging.getLogger("streamrnn")

# Measured (tools/bench.py --only startup, docs/bench.md "Start-up"): the kernels of the first
# command of the README compile in about this many CPU seconds on an empty cache; training and
# the gradient check compile more (the backward kernels).
COMPILE_SECONDS = 10
COMPILE_NOTICE = (f"compiling the Numba kernels (first run on this machine or after an upgrade: about "
                  f"{COMPILE_SECONDS} CPU seconds, more for training); they are cached on disk and later starts "
                  f"take under a second")

_lock = threading.Lock()
_listener = None


def announce_compiles():
    """Register the compile listener (once); returns it."""
    global _listener
    with _lock:
        if _listener is None:
            _listener = _CompileNotice()
            event.register("numba:compile", _listener)
        return _listener


class _CompileNotice(event.Listener):
    """A Numba event listener that logs ``COMPILE_NOTICE`` at the first compile of a
    streamrnn kernel; ``compiled`` counts those compiles (nested ones included)."""

    def __init__(self):
        self.compiled = 0
        self.told = False

    def on_end(self, ev):
        pass

    def on_start(self, ev):
        fn = getattr(ev.data.get("dispatcher"), "py_func", None)
        if not getattr(fn, "__module__", "").startswith("streamrnn"):
            return
        self.compiled += 1
        if not self.told:
            self.told = True
            log.warning("%s", COMPILE_NOTICE)


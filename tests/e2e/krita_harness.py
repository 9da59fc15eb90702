"""Test harness plug-in for real Krita (installed as pykrita/hcharness/__init__.py by test_krita_e2e.py).

Once Krita's first window exists it runs main() of the script named by $HC_HARNESS_SCRIPT and hard-exits
with its return value: os._exit skips Krita's "save changes?" prompts and its slow shutdown. main() may
instead return a generator, which runs from Krita's main event loop: it yields a number of milliseconds to
wait, or a condition (a callable) to wait for, and its return value is the exit code. Krita delivers some
of its own signals (such as "a layer was added") only from the main loop, never inside a nested one.
"""

import os
import runpy
import sys
import traceback

from krita import Krita

if "PyQt6" in sys.modules:  # Krita 6; never import the other binding into Krita's process
    from PyQt6.QtCore import QTimer
else:
    from PyQt5.QtCore import QTimer

_started = False


def _exit(rc: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


def _drive(gen) -> None:
    def step() -> None:
        try:
            wait = next(gen)
        except StopIteration as stop:
            return _exit(int(stop.value or 0))
        except BaseException:
            traceback.print_exc()
            return _exit(99)
        if callable(wait):
            def poll() -> None:
                try:
                    ready = wait()
                except BaseException:
                    traceback.print_exc()
                    return _exit(98)
                QTimer.singleShot(0 if ready else 50, step if ready else poll)
            poll()
        else:
            QTimer.singleShot(int(wait), step)

    step()


def _run() -> None:
    try:
        result = runpy.run_path(os.environ["HC_HARNESS_SCRIPT"])["main"]()
    except BaseException:
        traceback.print_exc()
        return _exit(99)
    if hasattr(result, "__next__"):
        return _drive(result)
    _exit(int(result or 0))


def _on_window() -> None:
    global _started
    if not _started:
        _started = True
        QTimer.singleShot(0, _run)


if os.environ.get("HC_HARNESS_SCRIPT"):
    Krita.instance().notifier().windowCreated.connect(_on_window)
    QTimer.singleShot(int(os.environ.get("HC_HARNESS_TIMEOUT_MS", "240000")), lambda: os._exit(124))

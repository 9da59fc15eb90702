"""The one place that knows whether Krita runs PyQt5 (Krita 5) or PyQt6 (Krita 6).

Krita imports its PyQt before any plug-in loads, so the binding already in sys.modules is the one to use;
importing the other would load a second Qt into the process.
"""

from __future__ import annotations

import sys

if "PyQt6" in sys.modules:
    from PyQt6 import QtCore, QtGui, QtWidgets
    QT6 = True
else:
    try:
        from PyQt5 import QtCore, QtGui, QtWidgets
        QT6 = False
    except ImportError:
        from PyQt6 import QtCore, QtGui, QtWidgets
        QT6 = True

Qt = QtCore.Qt
QTimer = QtCore.QTimer
QEventLoop = QtCore.QEventLoop
QAction = QtGui.QAction if QT6 else QtWidgets.QAction

__all__ = ["QT6", "QAction", "QEventLoop", "QTimer", "Qt", "QtCore", "QtGui", "QtWidgets", "call_later",
           "exec_"]


def exec_(obj) -> int:
    """QDialog/QEventLoop exec: exec_() in PyQt5, exec() in PyQt6."""
    return obj.exec() if QT6 else obj.exec_()


def call_later(ms: int, fn) -> None:
    """Run fn on the GUI thread after ms milliseconds (0: once the events already queued are handled)."""
    QTimer.singleShot(max(0, int(ms)), fn)

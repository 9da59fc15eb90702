"""Runs inside Krita (through tests/e2e/krita_harness.py) for tools/screenshots.sh: the HairCLIP dialog before
and after Apply, and the window with the layer stack. Environment: HC_E2E_ENDPOINT, HC_SHOT_PHOTO, HC_SHOT_OUT."""

import os
import time

from krita import Krita

OUT = os.environ["HC_SHOT_OUT"]


def until(cond, timeout=120.0):
    end = time.monotonic() + timeout
    return lambda: cond() or time.monotonic() > end


def main():
    k = Krita.instance()
    doc = k.openDocument(os.environ["HC_SHOT_PHOTO"])
    k.activeWindow().addView(doc)
    k.setActiveDocument(doc)
    yield 1000
    k.action("hairclip_edit").trigger()
    dialog = next(e for e in k.extensions() if type(e).__name__ == "HairclipExtension").dialog
    model = dialog.model
    dialog.endpoint.setText(os.environ["HC_E2E_ENDPOINT"])
    dialog.endpoint.editingFinished.emit()
    yield until(lambda: model.server_state == "connected", 60)
    dialog.style_mode.setCurrentIndex(dialog.style_mode.findData("text"))
    dialog.style_text.setEditText("bob cut")
    dialog.colour_mode.setCurrentIndex(dialog.colour_mode.findData("rgb"))
    model.update(rgb="#7f3fbf")
    dialog.adjustSize()
    yield 500
    dialog.grab().save(os.path.join(OUT, "krita-dialog.png"))
    dialog.apply_button.click()
    yield until(lambda: model.task is not None and model.task.finished, 300)
    yield 800
    dialog.grab().save(os.path.join(OUT, "krita-dialog-after.png"))
    dialog.close()
    yield 500
    k.activeWindow().qwindow().grab().save(os.path.join(OUT, "krita-layers.png"))
    return 0 if model.task is not None and model.task.state == "done" else 1

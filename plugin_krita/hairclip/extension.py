"""The Krita extension: the Filters > HairCLIP... action and the dialog it opens."""

from __future__ import annotations

from krita import Extension, Krita

ACTION_ID = "hairclip_edit"
MENU = "filter"  # Krita's Filter menu (its name in Krita's menu definitions)


class HairclipExtension(Extension):
    """The Krita extension: adds the Filters > HairCLIP... action and opens the dialog from it."""

    def __init__(self, parent):
        super().__init__(parent)
        self.dialog = None
        self.model = None

    def setup(self) -> None:
        pass

    def createActions(self, window) -> None:  # noqa: N802 - Krita's name
        action = window.createAction(ACTION_ID, "HairCLIP...", MENU)
        action.setToolTip("Edit hair by text, colour or reference image with the local HairCLIP server")
        action.triggered.connect(self.show_dialog)

    def show_dialog(self) -> None:
        from .qt import QtWidgets

        app = Krita.instance()
        win = app.activeWindow()
        parent = win.qwindow() if win is not None else None
        try:  # the plug-in's own dependencies (pyzmq, msgpack) load here, not at Krita's start
            from .jobs import Connection  # noqa: F401
            from .model import EditModel, SettingsStore
            from .qt import call_later
            from .ui import EditDialog
        except ImportError as e:
            QtWidgets.QMessageBox.critical(
                parent, "HairCLIP",
                f"HairCLIP could not load a module it needs: {e}.\n\nReinstall the plug-in with\n\n"
                "    hairclip install-plugin krita\n\nand restart Krita.")
            return
        if self.dialog is None:
            self.model = EditModel(app, SettingsStore(app), call_later)
            self.dialog = EditDialog(self.model, parent)
        self.dialog.show()
        self.dialog.raise_()
        self.dialog.activateWindow()

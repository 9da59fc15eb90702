"""The HairCLIP docker (Settings > Dockers > HairCLIP Preview): widgets only; live.LiveModel holds the state.

It shows the edit over the photo inside the docker, a strength slider, and the history of the last edits;
Apply is the only button that changes the document.
"""

from __future__ import annotations

from krita import DockWidget, DockWidgetFactory, DockWidgetFactoryBase, Krita

from .qt import QtCore, QtGui, QTimer, QtWidgets

W = QtWidgets
DOCKER_ID = "hairclip_preview"
TITLE = "HairCLIP Preview"
SHOW = 256  # px: the preview's box in the docker
FRAME_TEXT = {"exact": "Render at strength {s:.2f}", "crossfade": "Cross-fade at {s:.2f} (dragging)",
              "nearest": "Nearest render while {s:.2f} renders", "first": "First picture",
              "none": "Generate to preview an edit"}


def _qimage(image) -> QtGui.QImage:
    """An RGBA u8 picture (hairclip_shared.preview) as a QImage that owns its pixels."""
    rgba = image if image.channels == "RGBA" else None
    if rgba is None:
        from hairclip_shared.pictures import to_rgba8
        rgba = to_rgba8(image)
    return QtGui.QImage(rgba.tobytes(), rgba.width, rgba.height, 4 * rgba.width,
                        QtGui.QImage.Format.Format_RGBA8888).copy()


class HairclipDocker(DockWidget):
    """The HairCLIP Preview docker's widgets: the picture, the strength slider, the history and its buttons."""

    def __init__(self):
        super().__init__()
        self.setWindowTitle(TITLE)
        self.model = None
        self._syncing = False
        self._history_key: tuple = ()
        body = W.QWidget(self)
        root = W.QVBoxLayout(body)
        self.setWidget(body)
        self.picture = W.QLabel()
        self.picture.setMinimumSize(SHOW // 2, SHOW // 2)
        self.picture.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.frame_line = W.QLabel()
        root.addWidget(self.picture, 1)
        root.addWidget(self.frame_line)
        row = W.QHBoxLayout()
        self.conditions = W.QLabel()
        self.conditions.setWordWrap(True)
        self.settings_button = W.QPushButton("Settings...")
        self.settings_button.setToolTip("The inputs (hairstyle, colour, references) are the HairCLIP dialog's")
        row.addWidget(self.conditions, 1)
        row.addWidget(self.settings_button)
        root.addLayout(row)
        row = W.QHBoxLayout()
        self.generate_button = W.QPushButton("Generate")
        self.generate_button.setToolTip("Edit the active layer into this preview; the document is not changed")
        self.stop_button = W.QPushButton("Stop")
        row.addWidget(self.generate_button, 1)
        row.addWidget(self.stop_button)
        root.addLayout(row)
        row = W.QHBoxLayout()
        self.strength = W.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.strength.setRange(0, 200)
        self.strength.setToolTip("While dragging: renders made ahead, cross-faded; on release: the exact render")
        self.strength_value = W.QLabel()
        row.addWidget(W.QLabel("Strength:"))
        row.addWidget(self.strength, 1)
        row.addWidget(self.strength_value)
        root.addLayout(row)
        self.progress = W.QProgressBar()
        self.progress.setRange(0, 1000)
        self.status = W.QLabel()
        self.status.setWordWrap(True)
        self.error = W.QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #d04040")
        for w in (self.progress, self.status, self.error):
            root.addWidget(w)
        root.addWidget(W.QLabel("History:"))
        self.history = W.QListWidget()
        self.history.setIconSize(QtCore.QSize(48, 48))
        root.addWidget(self.history, 1)
        row = W.QHBoxLayout()
        self.apply_button = W.QPushButton("Apply")
        self.apply_button.setToolTip("Add the chosen edit at its strength as a new layer with a mask")
        self.drop_button = W.QPushButton("Drop")
        self.drop_button.setToolTip("Remove the chosen edit from the history")
        row.addWidget(self.apply_button, 1)
        row.addWidget(self.drop_button)
        root.addLayout(row)
        self.timer = QTimer(self)
        self.timer.setInterval(30)
        self.timer.timeout.connect(self._tick)
        try:  # pyzmq and msgpack load here, not at Krita's start
            from .live import LiveModel
            from .model import SettingsStore
            from .qt import call_later
        except ImportError as e:
            self.error.setText(f"HairCLIP could not load a module it needs: {e}. Reinstall the plug-in with "
                               "`hairclip install-plugin krita` and restart Krita.")
            for w in (self.generate_button, self.apply_button, self.drop_button, self.strength):
                w.setEnabled(False)
            return
        app = Krita.instance()
        self.model = LiveModel(app, SettingsStore(app), call_later)
        self.settings_button.clicked.connect(lambda: app.action("hairclip_edit").trigger())
        self.generate_button.clicked.connect(self.model.generate)
        self.stop_button.clicked.connect(self.model.cancel)
        self.strength.sliderMoved.connect(lambda v: self._slide(v, dragging=True))
        self.strength.sliderReleased.connect(lambda: self._slide(self.strength.value(), dragging=False))
        self.strength.valueChanged.connect(lambda v: self.strength.isSliderDown() or self._slide(v, dragging=False))
        self.history.currentItemChanged.connect(self._chosen)
        self.apply_button.clicked.connect(lambda: self.model.apply())
        self.drop_button.clicked.connect(lambda: self.model.drop())
        self.model.subscribe(self.refresh)
        self.refresh()

    # ------------------------------------------------------------------------------------------ model -> view

    def refresh(self) -> None:
        m = self.model
        if m is None:
            return
        self._syncing = True
        try:
            f = m.frame()
            if f.image is not None:
                pix = QtGui.QPixmap.fromImage(_qimage(f.image))
                self.picture.setPixmap(pix.scaled(SHOW, SHOW, QtCore.Qt.AspectRatioMode.KeepAspectRatio))
            else:
                self.picture.clear()
            self.frame_line.setText(FRAME_TEXT[f.kind].format(s=f.strength))
            from .live import conditions_text
            self.conditions.setText("Inputs: " + conditions_text(m.settings, ("reference", "reference")))
            if not self.strength.isSliderDown():
                self.strength.setValue(round(m.strength * 100))
            self.strength_value.setText(f"{self.strength.value() / 100:.2f}")
            gen = m.generating
            self.generate_button.setEnabled(not gen)
            self.stop_button.setVisible(gen)
            self.progress.setVisible(gen)
            self.progress.setValue(round(m.progress * 1000))
            self.status.setText(m.status)
            self.error.setText(m.error)
            self.error.setVisible(bool(m.error))
            has = m.current is not None
            self.apply_button.setEnabled(has)
            self.drop_button.setEnabled(has)
            self.strength.setEnabled(has)
            self._fill_history()
        finally:
            self._syncing = False
        if m.pending and not self.timer.isActive():
            self.timer.start()

    def _fill_history(self) -> None:
        m = self.model
        key = tuple((e.id, e.strength, id(e.thumbnail)) for e in m.history.entries) + \
            ((m.current.id,) if m.current else ())
        if key == self._history_key:
            return
        self._history_key = key
        self.history.clear()
        for e in m.history.entries:
            item = W.QListWidgetItem(QtGui.QIcon(QtGui.QPixmap.fromImage(_qimage(e.thumbnail))),
                                     f"{e.conditions}  ·  strength {e.strength:.2f}")
            item.setData(QtCore.Qt.ItemDataRole.UserRole, e.id)
            self.history.addItem(item)
            if m.current is not None and e.id == m.current.id:
                self.history.setCurrentItem(item)

    # ------------------------------------------------------------------------------------------ view -> model

    def _slide(self, value: int, dragging: bool) -> None:
        if self._syncing or self.model is None:
            return
        self.strength_value.setText(f"{value / 100:.2f}")
        (self.model.drag if dragging else self.model.release)(value / 100)

    def _chosen(self, item, _previous=None) -> None:
        if not self._syncing and item is not None:
            self.model.select(item.data(QtCore.Qt.ItemDataRole.UserRole))

    def _tick(self) -> None:
        self.model.tick()
        if not self.model.pending:
            self.timer.stop()

    def canvasChanged(self, canvas) -> None:  # noqa: N802 - Krita's name; the preview follows edits, not views
        pass


def register(app) -> None:
    right = getattr(DockWidgetFactoryBase, "DockRight", None)
    if right is None:  # Krita 6's PyQt6 scopes its enums
        right = DockWidgetFactoryBase.DockPosition.DockRight
    app.addDockWidgetFactory(DockWidgetFactory(DOCKER_ID, right, HairclipDocker))

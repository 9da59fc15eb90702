"""The Filters > HairCLIP... dialog: widgets only. The EditModel holds the state and does the work."""

from __future__ import annotations

from hairclip_shared.editing import (
    ALIGNED_LABELS,
    ALIGNED_MODES,
    ALIGNED_RULE,
    COLOUR_MODES,
    HAIRSTYLE_MODES,
    WHOLE_HAIR_LABELS,
    WHOLE_HAIR_MODES,
)
from hairclip_shared.editing import FACE_MODES as FACES
from hairclip_shared.protocol import parse_rgb
from hairclip_shared.wording import (
    COLOUR_MODE_LABELS,
    FACE_LABELS,
    FIELD_HELP,
    FIELD_LABELS,
    HAIRSTYLE_MODE_LABELS,
    SERVER_LABEL,
    SERVER_STATES,
    STOP_EDIT,
    active_fields,
)

from .model import EditModel
from .qt import QtCore, QtGui, QTimer, QtWidgets

W = QtWidgets
STYLE_MODES = tuple((HAIRSTYLE_MODE_LABELS[m], m) for m in HAIRSTYLE_MODES)
COLOUR_CHOICES = tuple((COLOUR_MODE_LABELS[m], m) for m in COLOUR_MODES)
FACE_MODES = tuple((FACE_LABELS[m], m) for m in FACES)
ALIGNED = tuple((ALIGNED_LABELS[m], m) for m in ALIGNED_MODES)
WHOLE_HAIR = tuple((WHOLE_HAIR_LABELS[m], m) for m in WHOLE_HAIR_MODES)
SWATCH = 16  # px: the exact colour's swatch on its button


def _combo(items) -> W.QComboBox:
    box = W.QComboBox()
    for label, data in items:
        box.addItem(label, data)
    return box


def _select_data(box: W.QComboBox, data) -> None:
    i = box.findData(data)
    if i >= 0 and i != box.currentIndex():
        box.setCurrentIndex(i)


class EditDialog(W.QDialog):
    """The HairCLIP dialog: widgets only, a view of the EditModel that holds its state."""

    def __init__(self, model: EditModel, parent=None):
        super().__init__(parent)
        self.model = model
        self._syncing = False
        self.setWindowTitle("HairCLIP")
        self.setMinimumWidth(420)
        root = W.QVBoxLayout(self)

        server = W.QHBoxLayout()
        self.server_label = W.QLabel(SERVER_LABEL + ":")
        self.server_state = W.QLabel()
        self.endpoint = W.QLineEdit()
        self.endpoint.setToolTip(FIELD_HELP["endpoint"])
        self.retry = W.QPushButton("Retry")
        server.addWidget(self.server_label)
        server.addWidget(self.server_state)
        server.addWidget(self.endpoint, 1)
        server.addWidget(self.retry)
        root.addLayout(server)
        self.server_help = W.QLabel()
        self.server_help.setWordWrap(True)
        self.server_help.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.server_help.setFrameShape(W.QFrame.Shape.StyledPanel)
        root.addWidget(self.server_help)

        form = W.QFormLayout()
        self.target = W.QLabel()
        form.addRow("Layer:", self.target)
        self.style_mode = _combo(STYLE_MODES)
        self.style_text = W.QComboBox()
        self.style_text.setEditable(True)
        self.style_ref = W.QComboBox()
        self.style_aligned = _combo(ALIGNED)
        form.addRow(FIELD_LABELS["hairstyle_mode"] + ":", self.style_mode)
        form.addRow("", self.style_text)
        form.addRow("", self.style_ref)
        form.addRow("", self.style_aligned)
        self.colour_mode = _combo(COLOUR_CHOICES)
        self.colour_text = W.QComboBox()
        self.colour_text.setEditable(True)
        # A swatch to click, with the hex code beside it: as button text, Krita would underline one of its
        # characters as a shortcut.
        self.rgb = W.QToolButton()
        self.rgb.setIconSize(QtCore.QSize(SWATCH, SWATCH))
        self.rgb.setToolTip(FIELD_HELP["rgb"])
        self.rgb_hex = W.QLabel()
        self.rgb_hex.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.rgb_row = W.QWidget()
        rgb_row = W.QHBoxLayout(self.rgb_row)
        rgb_row.setContentsMargins(0, 0, 0, 0)
        rgb_row.addWidget(self.rgb)
        rgb_row.addWidget(self.rgb_hex, 1)
        self.colour_ref = W.QComboBox()
        self.colour_aligned = _combo(ALIGNED)
        form.addRow(FIELD_LABELS["colour_mode"] + ":", self.colour_mode)
        form.addRow("", self.colour_text)
        form.addRow("", self.rgb_row)
        form.addRow("", self.colour_ref)
        form.addRow("", self.colour_aligned)
        for box in (self.style_aligned, self.colour_aligned):
            box.setToolTip(ALIGNED_RULE)
        strength = W.QHBoxLayout()
        self.strength = W.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.strength.setRange(0, 200)
        self.strength.setToolTip(FIELD_HELP["strength"] + "; moving it re-renders the last result")
        self.strength_value = W.QLabel()
        strength.addWidget(self.strength, 1)
        strength.addWidget(self.strength_value)
        form.addRow(FIELD_LABELS["strength"] + ":", strength)
        self.faces = _combo(FACE_MODES)
        form.addRow(FIELD_LABELS["faces"] + ":", self.faces)
        self.whole_hair = _combo(WHOLE_HAIR)
        self.whole_hair.setToolTip(FIELD_HELP["whole_hair"])
        form.addRow(FIELD_LABELS["whole_hair"] + ":", self.whole_hair)
        root.addLayout(form)

        self.progress = W.QProgressBar()
        self.progress.setRange(0, 1000)
        self.status = W.QLabel()
        self.status.setWordWrap(True)
        self.preview = W.QLabel()
        self.error = W.QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #d04040")
        self.error.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.hint = W.QLabel()  # why Apply is disabled
        self.hint.setWordWrap(True)
        self.warning = W.QLabel()  # the last edit left hair outside the face crop
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("color: #c08000")
        for w in (self.progress, self.status, self.warning, self.preview, self.error, self.hint):
            root.addWidget(w)
        buttons = W.QDialogButtonBox()
        self.apply_button = buttons.addButton("Apply", W.QDialogButtonBox.ButtonRole.ApplyRole)
        # Shown only while an edit runs: a greyed "Cancel" beside "Close" read like two ways out.
        self.cancel_button = buttons.addButton(STOP_EDIT, W.QDialogButtonBox.ButtonRole.ActionRole)
        self.close_button = buttons.addButton(W.QDialogButtonBox.StandardButton.Close)
        root.addWidget(buttons)

        self.timer = QTimer(self)
        self.timer.setInterval(50)
        self.timer.timeout.connect(self._tick)

        self.endpoint.editingFinished.connect(lambda: self._set(endpoint=self.endpoint.text().strip()))
        self.retry.clicked.connect(self.model.connect)
        combos = {"hairstyle_mode": self.style_mode, "hairstyle_ref": self.style_ref,
                  "colour_mode": self.colour_mode, "colour_ref": self.colour_ref, "faces": self.faces,
                  "hairstyle_ref_aligned": self.style_aligned, "colour_ref_aligned": self.colour_aligned,
                  "whole_hair": self.whole_hair}
        for key, box in combos.items():
            box.currentIndexChanged.connect(lambda i, b=box, k=key: self._set(**{k: b.itemData(i) or ""}))
        self.style_text.currentTextChanged.connect(lambda t: self._set(hairstyle=t))
        self.colour_text.currentTextChanged.connect(lambda t: self._set(colour=t))
        self.rgb.clicked.connect(self._pick_rgb)
        self.strength.valueChanged.connect(lambda v: self._set(strength=v / 100))
        self.apply_button.clicked.connect(self.model.apply)
        self.cancel_button.clicked.connect(self.model.cancel)
        self.close_button.clicked.connect(self.close)
        model.subscribe(self.refresh)
        self.refresh()

    # ------------------------------------------------------------------------------------------ model -> view

    def refresh(self) -> None:
        m, s = self.model, self.model.settings
        self._syncing = True
        try:
            self.server_state.setText(SERVER_STATES.get(m.server_state, m.server_state))
            if not self.endpoint.hasFocus():
                self.endpoint.setText(s.endpoint)
            self.server_help.setText(m.connection.message)
            self.server_help.setVisible(m.server_state in ("not_running", "failed"))
            hairstyles, colours = m.presets
            self._fill_presets(self.style_text, hairstyles, s.hairstyle)
            self._fill_presets(self.colour_text, colours, s.colour)
            _select_data(self.style_mode, s.hairstyle_mode)
            _select_data(self.colour_mode, s.colour_mode)
            _select_data(self.faces, s.faces)
            _select_data(self.style_aligned, s.hairstyle_ref_aligned)
            _select_data(self.colour_aligned, s.colour_ref_aligned)
            _select_data(self.whole_hair, s.whole_hair)
            on = active_fields(s.hairstyle_mode, s.colour_mode)
            for key, widget in (("hairstyle", self.style_text), ("hairstyle_ref", self.style_ref),
                                ("hairstyle_ref_aligned", self.style_aligned), ("colour", self.colour_text),
                                ("rgb", self.rgb_row), ("colour_ref", self.colour_ref),
                                ("colour_ref_aligned", self.colour_aligned)):
                widget.setVisible(key in on)
            self._show_rgb(s.rgb)
            self.strength.setValue(round(s.strength * 100))
            self.strength_value.setText(f"{s.strength:.2f}")
            self.target.setText(m.active_layer_name() or "(no layer)")
            busy = m.busy
            hint = "" if busy else m.apply_hint
            self.apply_button.setEnabled(not busy and not hint)
            self.hint.setText(hint)
            self.hint.setVisible(bool(hint))
            self.cancel_button.setVisible(busy)
            self.cancel_button.setEnabled(busy)
            self.progress.setVisible(busy)
            self.progress.setValue(round(m.progress * 1000))
            self.status.setText(m.status)
            self.warning.setText(m.warning)
            self.warning.setVisible(bool(m.warning) and not busy)
            self.error.setText(m.error)
            self.error.setVisible(bool(m.error))
            self._show_preview()
        finally:
            self._syncing = False
        if m.pending and not self.timer.isActive():
            self.timer.start()

    def _show_rgb(self, rgb: str) -> None:
        r, g, b = parse_rgb(rgb)
        swatch = QtGui.QPixmap(SWATCH, SWATCH)
        swatch.fill(QtGui.QColor(r, g, b))
        self.rgb.setIcon(QtGui.QIcon(swatch))
        self.rgb_hex.setText(rgb)

    def _fill_presets(self, box: W.QComboBox, items: list[str], text: str) -> None:
        if [box.itemText(i) for i in range(box.count())] != items:
            box.clear()
            box.addItems(items)
        if box.currentText() != text:
            box.setEditText(text)

    def _fill_layers(self) -> None:
        layers = self.model.layers()
        s = self.model.settings
        self._syncing = True
        try:
            for box, current in ((self.style_ref, s.hairstyle_ref), (self.colour_ref, s.colour_ref)):
                box.clear()
                box.addItem("(choose a layer)", "")
                for nid, label in layers:
                    box.addItem(label, nid)
                _select_data(box, current)
        finally:
            self._syncing = False

    def _show_preview(self) -> None:
        t = self.model.task
        im = t.preview if t is not None and self.model.busy else None
        if im is None or im.channels not in ("RGBA", "BGRA") or im.depth != "u8":
            self.preview.clear()
            self.preview.setVisible(False)
            return
        fmts = QtGui.QImage.Format
        fmt = fmts.Format_RGBA8888 if im.channels == "RGBA" else fmts.Format_ARGB32  # BGRA in memory
        qimg = QtGui.QImage(im.tobytes(), im.width, im.height, 4 * im.width, fmt).copy()
        self.preview.setPixmap(QtGui.QPixmap.fromImage(qimg).scaled(
            160, 160, QtCore.Qt.AspectRatioMode.KeepAspectRatio))
        self.preview.setVisible(True)

    # ------------------------------------------------------------------------------------------ view -> model

    def _set(self, **changes) -> None:
        if not self._syncing:
            self.model.update(**changes)

    def _pick_rgb(self) -> None:
        r, g, b = parse_rgb(self.model.settings.rgb)
        colour = W.QColorDialog.getColor(QtGui.QColor(r, g, b), self, "Hair colour")
        if colour.isValid():
            self._set(rgb=colour.name())

    def _tick(self) -> None:
        self.model.tick()
        if not self.model.pending:
            self.timer.stop()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self._fill_layers()
        if self.model.server_state in ("idle", "not_running", "failed"):
            self.model.connect()
        self.refresh()
        super().showEvent(event)

    def changeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if event.type() == QtCore.QEvent.Type.ActivationChange and self.isActiveWindow():
            self._fill_layers()  # the user may have added, renamed or removed layers meanwhile
            self.refresh()
        super().changeEvent(event)

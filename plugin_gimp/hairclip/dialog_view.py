"""The GIMP dialog's extras on top of the procedure dialog GIMP generates from the arguments.

Only the chosen modes' fields are shown, the trained presets drop down beside free text, a line says
whether the server answers, and the preview pane follows the strength slider. GTK calls only from GIMP's
main (GTK) thread; the server probe runs on its own thread and reports back through GLib.idle_add.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable

from gi.repository import GLib, GObject, Gtk
from gimp_layers import read_pixels

from hairclip_shared import Client, HairclipError, ServerNotRunning
from hairclip_shared.editing import EditSettings, not_running_message, presets
from hairclip_shared.wording import SERVER_LABEL, SERVER_STATES, active_fields

PROBE_TIMEOUT = 2.0  # s; the dialog's "is the server there?" check, off the GTK thread
# The arguments that belong to one mode; the dialog hides those the chosen modes do not use.
MODE_FIELDS = ("hairstyle", "hairstyle-ref", "hairstyle-ref-aligned", "colour", "rgb", "colour-ref",
               "colour-ref-aligned")
DIALOG_STATE = "HAIRCLIP_DIALOG_STATE"  # a JSON file the dialog describes itself in (for tests, bug reports)


class DialogView:
    """What GIMP's generated dialog lacks, on top of it; GTK calls only from GIMP's main (GTK) thread."""

    def __init__(self, dialog, config, image=None, drawables=(), request: Callable[[], tuple] | None = None):
        self.dialog, self.config, self.image, self.drawables = dialog, config, image, drawables
        self.widgets = {name: dialog.get_widget(name, GObject.TYPE_NONE) for name in MODE_FIELDS}
        self.presets_count = {}
        hairstyles, colours = presets(None)
        for name, items in (("hairstyle", hairstyles), ("colour", colours)):
            self.presets_count[name] = add_preset_list(self.widgets[name], items)
        self.server_state, self.server_help = "connecting", ""
        self.server_line = Gtk.Label(xalign=0.0)
        self.server_line.set_line_wrap(True)
        self.server_line.set_selectable(True)
        dialog.get_content_area().pack_start(self.server_line, False, False, 6)
        self.server_line.show()
        self._probe_n = 0
        self._closed = False
        self._handlers = [config.connect(f"notify::{p}", self._follow_modes) for p in ("hairstyle-mode", "colour-mode")]
        self._handlers.append(config.connect("notify::server", self._server_changed))
        self._follow_modes()
        self.probe()
        self.pane = None
        try:  # GTK's image widgets; the preview is this dialog's only part that needs them
            from preview_pane import PreviewPane
        except ImportError:
            PreviewPane = None  # noqa: N806
        if PreviewPane is not None and image is not None and request is not None:
            self.pane = PreviewPane(config, request)
            dialog.get_content_area().pack_start(self.pane.box, False, False, 6)
        self._state_file = os.environ.get(DIALOG_STATE)
        if self._state_file:
            GLib.timeout_add(300, self._write_state)

    def _follow_modes(self, *_) -> None:
        on = active_fields(self.config.get_property("hairstyle-mode"), self.config.get_property("colour-mode"))
        for name, widget in self.widgets.items():
            if widget is not None:
                widget.set_visible(name.replace("-", "_") in on)

    def _server_changed(self, *_) -> None:
        """Typing an address: ask once the typing rests, not at every key."""
        self._probe_n += 1
        n = self._probe_n
        GLib.timeout_add(500, lambda: n == self._probe_n and not self._closed and self.probe() and False)

    def probe(self) -> None:
        """Ask the server for `hello` off the GTK thread; the answer updates the connection line."""
        self._probe_n += 1
        n, endpoint = self._probe_n, self.config.get_property("server") or EditSettings().endpoint
        self._show_server("connecting", f"{endpoint}")

        def ask() -> None:
            try:
                with Client(endpoint, timeout=PROBE_TIMEOUT, name="gimp-dialog") as client:
                    info = client.info
                state, text = "connected", f"{info.server} on {info.device}" if info else endpoint
            except ServerNotRunning:
                state, text = "not_running", not_running_message(endpoint)
            except HairclipError as e:
                state, text = "failed", e.message
            except Exception as e:  # noqa: BLE001 - shown as is
                state, text = "failed", f"{type(e).__name__}: {e}"
            GLib.idle_add(lambda: n == self._probe_n and not self._closed and self._show_server(state, text))

        threading.Thread(target=ask, daemon=True).start()

    def _show_server(self, state: str, text: str) -> bool:
        self.server_state, self.server_help = state, text
        self.server_line.set_text(f"{SERVER_LABEL}: {SERVER_STATES.get(state, state)}. {text}")
        return False

    def _write_state(self) -> bool:
        """Describe the dialog (field visibility and position, the server line) for a test outside GIMP."""
        if self._closed:
            return False
        fields = {}
        for name in (*MODE_FIELDS, "hairstyle-mode", "colour-mode", "strength", "server"):
            w = self.dialog.get_widget(name, GObject.TYPE_NONE)
            alloc = w.get_allocation()
            xy = w.translate_coordinates(self.dialog, 0, 0) or (alloc.x, alloc.y)
            fields[name] = {"visible": w.get_visible() and w.get_mapped(), "type": type(w).__name__,
                            "x": xy[0], "y": xy[1], "w": alloc.width, "h": alloc.height}
        state = {"fields": fields, "server_state": self.server_state, "server_line": self.server_line.get_text(),
                 "presets": self.presets_count}
        if self.pane is not None:  # what the preview shows, and what the image holds meanwhile
            b = self.pane.button
            xy = b.translate_coordinates(self.dialog, 0, 0) or (0, 0)
            src = self.drawables[0]
            spin = self.dialog.get_widget("strength", GObject.TYPE_NONE).get_spin_button()
            sxy = spin.translate_coordinates(self.dialog, 0, 0) or (0, 0)
            state["preview"] = {**self.pane.describe(), "button": {"x": xy[0], "y": xy[1],
                                "w": b.get_allocation().width, "h": b.get_allocation().height},
                                "spin": {"x": sxy[0], "y": sxy[1], "w": spin.get_allocation().width,
                                         "h": spin.get_allocation().height},
                                "layers": len(self.image.get_layers()),
                                "source_sha1": hashlib.sha1(read_pixels(src, "R'G'B'A u8")).hexdigest()}
        tmp = self._state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, self._state_file)
        return True

    def close(self) -> None:
        self._closed = True
        if self.pane is not None:
            self.pane.close()
        for h in self._handlers:
            self.config.disconnect(h)


def add_preset_list(labeled_entry, items: list[str]) -> int:
    """The trained presets as a drop-down on the text field (an arrow in the entry), and as completions while
    typing; any other text stays allowed. Returns how many presets the list holds."""
    entry = labeled_entry.get_entry() if labeled_entry is not None else None
    if entry is None:
        return 0
    store = Gtk.ListStore(str)
    for item in items:
        store.append([item])
    completion = Gtk.EntryCompletion(model=store, minimum_key_length=0, popup_completion=True)
    completion.set_text_column(0)
    entry.set_completion(completion)
    entry.set_icon_from_icon_name(Gtk.EntryIconPosition.SECONDARY, "pan-down-symbolic")
    entry.set_icon_tooltip_text(Gtk.EntryIconPosition.SECONDARY, "Trained presets")
    menu = Gtk.Menu()
    for item in items:
        mi = Gtk.MenuItem(label=item)
        mi.connect("activate", lambda _mi, text=item: entry.set_text(text))
        menu.append(mi)
    menu.show_all()
    entry.connect("icon-press", lambda _e, _pos, event: menu.popup_at_pointer(event))
    entry._hairclip_menu = menu  # keep the menu alive as long as the entry
    return len(items)

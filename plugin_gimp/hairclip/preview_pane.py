"""The HairCLIP dialog's preview: the edit over the photo, inside the dialog, following the strength slider.

GTK glue only: which render to show and what to ask the server for is hairclip_shared.preview's RenderSession,
the same state machine the Krita docker uses. Nothing here writes to the image; OK (Apply) adds the layer,
from the previewed render when it is the exact one for the dialog's settings.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace

from gi.repository import GdkPixbuf, GLib, Gtk

from hairclip_shared import Client, EditResult, HairclipError, Image, Progress, ServerNotRunning
from hairclip_shared.editing import EditSettings, not_running_message
from hairclip_shared.pictures import shrink, to_rgba8
from hairclip_shared.preview import PREVIEW_SIDE, RenderSession, strength_key

REST_MS = 300  # the slider counts as released once it rests this long (GIMP's scale entry has no release signal)
FRAME_TEXT = {"exact": "Preview at strength {s:.2f}", "crossfade": "Cross-fade at {s:.2f}",
              "nearest": "Nearest render while {s:.2f} renders", "first": "First picture",
              "none": "Preview shows the edit here; OK adds it as a layer"}


class PreviewPane:
    """`prepare()` (GTK thread) -> (settings, request, source wire image): what an edit of the layer sends."""

    def __init__(self, config, prepare: Callable[[], tuple[EditSettings, object, Image]]):
        self.config, self.prepare = config, prepare
        self.box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=4)
        self.image = Gtk.Image()
        self.image.set_size_request(PREVIEW_SIDE, PREVIEW_SIDE)
        self.line = Gtk.Label(xalign=0.0)
        self.line.set_line_wrap(True)
        self.button = Gtk.Button(label="Preview")
        self.button.set_tooltip_text("Edit the layer into this preview; the image changes only with OK")
        self.button.connect("clicked", lambda _b: self.start())
        for w in (self.image, self.line, self.button):
            self.box.pack_start(w, False, False, 0)
        self.box.show_all()
        self.client: Client | None = None
        self.session: RenderSession | None = None
        self.settings: EditSettings | None = None  # what the shown edit asked for
        self.first: Image | None = None
        self.error = ""
        self.kind = "none"
        self._n = self._rest = 0
        self._closed = False
        self._handler = config.connect("notify::strength", self._slid)
        self._show()

    # ------------------------------------------------------------------------------------------ edit

    def start(self) -> None:
        """Read the layer here (GTK thread), then send the edit and wait for it on a thread of its own."""
        try:
            settings, request, source = self.prepare()
        except Exception as e:  # noqa: BLE001 - the plug-in's Failure and HairclipError both carry a message
            self.error = getattr(e, "message", str(e))
            return self._show()
        self._drop_session()
        self._n += 1
        n, self.first, self.error, self.settings = self._n, None, "", None
        self.button.set_sensitive(False)
        self.line.set_text("Editing...")

        def run() -> None:
            try:
                client = Client(settings.endpoint, timeout=5.0, name="gimp-preview")
            except ServerNotRunning as e:
                msg = not_running_message(settings.endpoint, e.message)
                return self._post(n, lambda: self._failed(msg))
            except HairclipError as e:
                msg = e.message
                return self._post(n, lambda: self._failed(msg))
            self._post(n, lambda: self._keep_client(client))
            try:
                job = client.submit(request)
                for ev in job.events():
                    if isinstance(ev, Progress) and ev.preview is not None:
                        first = to_rgba8(shrink(ev.preview, PREVIEW_SIDE))
                        self._post(n, lambda first=first: self._first(first))
                    elif isinstance(ev, EditResult):
                        self._post(n, lambda ev=ev: self._done(settings, source, job.id, ev))
            except HairclipError as e:
                msg = e.message
                self._post(n, lambda: self._failed(msg))

        threading.Thread(target=run, daemon=True).start()

    def _post(self, n: int, fn: Callable[[], None]) -> None:
        GLib.idle_add(lambda: n == self._n and not self._closed and fn() and False)

    def _keep_client(self, client: Client) -> None:
        if self.client is not None:
            self.client.close()
        self.client = client

    def _first(self, first: Image) -> None:
        self.first = first
        self._show()

    def _failed(self, message: str) -> None:
        self.error = message
        self.button.set_sensitive(True)
        self._show()

    def _done(self, settings: EditSettings, source: Image, job_id: str, result: EditResult) -> None:
        client = self.client
        self.session = RenderSession(lambda s: client.rerender(job_id, s), source, result, settings.strength,
                                     ready=lambda s: client.rerender(job_id, s, ready_only=True))
        self.settings = settings
        self.button.set_sensitive(True)
        self._slid()  # the slider may have moved while the edit ran
        GLib.timeout_add(40, self._poll)

    # ------------------------------------------------------------------------------------------ slider

    def _slid(self, *_) -> None:
        s = self.session
        if s is None:
            return
        strength = float(self.config.get_property("strength"))
        s.move(strength)
        self._rest += 1
        rest = self._rest
        GLib.timeout_add(REST_MS, lambda: rest == self._rest and self.session is s and s.release(strength) and False)
        self._show()

    def _poll(self) -> bool:
        s = self.session
        if self._closed or s is None:
            return False
        if s.poll():
            self._show()
        elif s.frame().kind != self.kind:
            self._show()
        return True

    # ------------------------------------------------------------------------------------------ view

    def frame_kind(self) -> str:
        if self.session is not None:
            return self.session.frame().kind
        return "first" if self.first is not None else "none"

    def _show(self) -> None:
        if self._closed:
            return
        s = self.session
        f = s.frame() if s is not None else None
        picture = f.image if f is not None else self.first
        self.kind = self.frame_kind()
        if picture is not None:
            data = GLib.Bytes.new(picture.tobytes())
            pix = GdkPixbuf.Pixbuf.new_from_bytes(data, GdkPixbuf.Colorspace.RGB, True, 8, picture.width,
                                                  picture.height, 4 * picture.width)
            self.image.set_from_pixbuf(pix)
        strength = f.strength if f is not None else float(self.config.get_property("strength"))
        text = FRAME_TEXT[self.kind].format(s=strength)
        if s is not None and (s.error or s.busy):
            text += f" ({s.error})" if s.error else " (rendering...)"
        self.line.set_text(self.error or text)

    def describe(self) -> dict:
        f = self.session.frame() if self.session is not None else None
        return {"kind": self.frame_kind(), "strength": f.strength if f is not None else None,
                "error": self.error, "busy": bool(self.session and self.session.busy),
                "first_picture": self.first is not None}

    # ------------------------------------------------------------------------------------------ Apply

    def result_for(self, settings: EditSettings) -> EditResult | None:
        """The previewed render when it is exactly what OK would ask for (same inputs, same strength)."""
        s = self.session
        if s is None or self.settings is None or replace(self.settings, strength=settings.strength) != settings:
            return None
        return s.result_at(strength_key(settings.strength))

    def _drop_session(self) -> None:
        if self.session is not None:
            self.session.cancel()
        self.session = None

    def close(self) -> None:
        self._closed = True
        self.config.disconnect(self._handler)
        self._drop_session()
        if self.client is not None:
            self.client.close()

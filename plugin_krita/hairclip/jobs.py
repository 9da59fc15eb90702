"""An edit from a layer's pixels to the result layer, and the server connection it runs on. No widgets.

Threads: only the GUI thread touches Krita (reading pixels, inserting the layer). The shared Client's own
I/O thread owns the socket. A small executor runs what could stall the GUI: the `hello` handshake (it waits
up to its timeout when no server runs) and the pixel conversions. The GUI drives everything by calling
`tick()` from a timer; nothing here blocks it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from hairclip_shared import Client, EditResult, Job, ServerInfo
from hairclip_shared.editing import EditSettings, build_request, layer_name, not_running_message, result_warning
from hairclip_shared.pixels import from_wire, split_alpha, to_wire
from hairclip_shared.protocol import (
    Accepted,
    BadRequest,
    HairclipError,
    Image,
    Progress,
    ServerNotRunning,
)
from hairclip_shared.wording import NEED_COLOUR_REF, NEED_HAIRSTYLE_REF

from . import kritadoc

CallLater = Callable[[int, Callable[[], None]], None]
_executor: ThreadPoolExecutor | None = None


def executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hairclip")
    return _executor


class Connection:
    """The Client for one endpoint. connect() is non-blocking; worker threads may call client()."""

    def __init__(self, endpoint: str, pool: ThreadPoolExecutor | None = None, timeout: float = 5.0,
                 client_factory: Callable[..., Client] = Client):
        self.endpoint, self.timeout, self._factory = endpoint, timeout, client_factory
        self._pool = pool or executor()
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._future: Future | None = None
        self.state = "idle"  # idle | connecting | connected | not_running | failed
        self.message = ""
        self.info: ServerInfo | None = None

    def connect(self) -> None:
        """Start a handshake in the background unless one is running or done."""
        with self._lock:
            if self._client is not None or self._future is not None:
                return
            self.state, self.message = "connecting", f"Connecting to {self.endpoint}..."
        self._future = self._pool.submit(self.client)  # outside the lock: client() takes it

    def client(self) -> Client:
        """The connected Client; blocks while saying hello, so call it from a worker thread only."""
        with self._lock:
            if self._client is not None:
                return self._client
        try:
            client = self._factory(self.endpoint, timeout=self.timeout, name="hairclip-krita")
        except ServerNotRunning:
            raise ServerNotRunning(not_running_message(self.endpoint)) from None
        with self._lock:
            if self._client is not None:
                client.close()
                return self._client
            self._client, self.info, self.state = client, client.info, "connected"
            self.message = f"Connected to {client.info.server} on {client.info.device}" if client.info else ""
            return client

    def poll(self) -> bool:
        """GUI side: pick up a finished handshake. True when the state changed."""
        with self._lock:
            fut = self._future
            if fut is None or not fut.done():
                return False
            self._future = None
        try:
            fut.result()  # success already set the state, from the worker
        except ServerNotRunning as e:
            self.state, self.message = "not_running", e.message
        except HairclipError as e:
            self.state, self.message = "failed", e.message
        except Exception as e:  # noqa: BLE001 - shown to the user as is
            self.state, self.message = "failed", f"{type(e).__name__}: {e}"
        return True

    @property
    def pending(self) -> bool:
        return self._future is not None

    def lost(self, err: HairclipError) -> None:
        """A job found the server gone: drop the client so the next connect() starts afresh."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
        self.state, self.message = "not_running", not_running_message(self.endpoint)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


@dataclass(frozen=True)
class EditOutcome:
    """What one edit produced (the scripting API returns this)."""

    layer_id: str
    layer_name: str
    mask: bool  # an editable transparency mask holds the edit's alpha
    undo_steps: int  # Ctrl+Z presses that remove the layer again (0: an earlier layer updated in place)
    faces: list = field(default_factory=list)  # hairclip_shared.Face: bbox and whether it was edited
    timings: dict = field(default_factory=dict)
    job_id: str = ""
    note: str = ""
    warning: str = ""  # hair left outside the face crop (editing.result_warning); "" when none
    old_hair: bool = False  # the selection mask OLD_HAIR_NAME holds that hair

    @property
    def faces_edited(self) -> int:
        return sum(f.edited for f in self.faces)


@dataclass
class Previous:
    """A finished edit the strength slider can re-render from the server's caches."""

    doc: object
    source: kritadoc.LayerPixels
    settings: EditSettings
    ref_names: tuple[str, str]
    job_id: str
    layer_id: str


class EditTask:
    """One edit: read (GUI) -> convert and submit (worker) -> run (poll) -> convert (worker) -> insert (GUI).

    `previous` turns it into a re-render of that edit at settings.strength; when the server no longer has
    it cached, the task falls back to a full edit of the same source.
    """

    def __init__(self, connection: Connection, doc, node, settings: EditSettings, call_later: CallLater,
                 pool: ThreadPoolExecutor | None = None, previous: Previous | None = None,
                 want_mask: bool = True, main_loop: bool = True, insert: bool = True):
        self.connection, self.doc, self.node, self.settings = connection, doc, node, settings
        self.insert = insert  # False: a preview's edit; it ends with `result` and the document untouched
        self.call_later, self.pool, self.previous = call_later, pool or executor(), previous
        self.want_mask, self.main_loop = want_mask, main_loop  # main_loop: False when a caller blocks
        self.state = "new"  # new | preparing | running | converting | inserting | done | failed | cancelled
        self.stage, self.fraction, self.position = "", 0.0, None
        self.preview: Image | None = None
        self.outcome: EditOutcome | None = None
        self.error: BaseException | None = None
        self.source: kritadoc.LayerPixels | None = None
        self.ref_names = ("", "")
        self.name = ""
        self.job: Job | None = None
        self._future: Future | None = None
        self._result: EditResult | None = None
        self.result: EditResult | None = None  # the server's result, once done (kept when insert is False)
        self._cancel = False
        self._existing = previous.layer_id if previous is not None else ""  # the layer a re-render updates
        self.on_done: list[Callable[[EditTask], None]] = []

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    @property
    def rerender(self) -> bool:
        return self.previous is not None and self.source is self.previous.source

    # ------------------------------------------------------------------------------------------ GUI thread

    def start(self) -> EditTask:
        try:
            if self.previous is not None:
                self.source, self.ref_names = self.previous.source, self.previous.ref_names
                self.doc = self.previous.doc
                self.name = layer_name(self.settings, *self.ref_names)
                base, strength = self.previous.job_id, self.settings.strength
                self._submit_async(lambda client: client.rerender(base, strength))
            else:
                self._start_edit()
        except BaseException as e:
            self._fail(e)
        return self

    def insert_result(self, source: kritadoc.LayerPixels, ref_names: tuple[str, str],
                      result: EditResult) -> EditTask:
        """Start by inserting a result the server gave earlier (a preview's render): the same conversion and
        ResultWriter steps as an edit's, instead of `start()`."""
        try:
            self.source, self.ref_names, self._result = source, ref_names, result
            self.name = layer_name(self.settings, *ref_names)
            self._convert(result)
        except BaseException as e:
            self._fail(e)
        return self

    def _start_edit(self) -> None:
        """Read everything the edit needs from Krita now, on the GUI thread."""
        doc, s = self.doc, self.settings
        src = kritadoc.read_layer(doc, self.node, "layer")
        refs = {}
        for role, mode, rid in (("hairstyle", s.hairstyle_mode, s.hairstyle_ref),
                                ("colour", s.colour_mode, s.colour_ref)):
            if mode == "reference":
                ref_node = kritadoc.find_node(doc, rid) if rid else None
                if ref_node is None:
                    raise BadRequest(NEED_HAIRSTYLE_REF if role == "hairstyle" else NEED_COLOUR_REF)
                refs[role] = kritadoc.read_layer(doc, ref_node, f"{role} reference")
        sel = kritadoc.read_selection(doc, src.rect) if s.faces == "selection" else None
        if s.faces == "selection" and sel is None:
            raise BadRequest("There is no selection. Select the faces to edit, or choose 'All faces'.")
        self.source = src
        self.ref_names = (refs["hairstyle"].name if "hairstyle" in refs else "",
                          refs["colour"].name if "colour" in refs else "")
        self.name = layer_name(s, *self.ref_names)

        def submit(client: Client) -> Job:  # worker thread: conversions can take a while for float layers
            def wire(px: kritadoc.LayerPixels) -> Image:
                return to_wire(px.data, px.rect.w, px.rect.h, px.layout)

            mask = Image(src.rect.w, src.rect.h, sel, "A", "u8") if sel is not None else None
            request = build_request(s, wire(src), wire(refs["hairstyle"]) if "hairstyle" in refs else None,
                                    wire(refs["colour"]) if "colour" in refs else None, mask)
            return client.submit(request)

        self._submit_async(submit)

    def _submit_async(self, submit: Callable[[Client], Job]) -> None:
        self.state = "preparing"
        self.stage = "connecting" if self.connection.state != "connected" else "sending"
        self._future = self.pool.submit(lambda: submit(self.connection.client()))

    def tick(self) -> bool:
        """Advance the task; True while it is still going."""
        if self.finished:
            return False
        try:
            self._tick()
        except BaseException as e:
            self._fail(e)
        return not self.finished

    def _tick(self) -> None:
        if self.state == "preparing" and self._future is not None and self._future.done():
            fut, self._future = self._future, None
            self.job = fut.result()
            self.state, self.stage = "running", "queued"
            if self._cancel:
                self.job.cancel()
        if self.state == "running" and self.job is not None:
            for ev in self.job.poll():
                if isinstance(ev, Accepted):
                    self.position = ev.position
                elif isinstance(ev, Progress):
                    self.stage, self.fraction = ev.stage, ev.fraction
                    if ev.preview is not None:
                        self.preview = ev.preview
                elif isinstance(ev, EditResult):
                    self._result = self.result = ev
                    if not self.insert:
                        self.state = "done"
                        self._notify()
                        return
                    self._convert(ev)
                    break
                elif isinstance(ev, HairclipError):
                    if self.rerender and ev.code == "unknown_job":  # the server's cache moved on
                        self.previous = None
                        self.node = kritadoc.find_node(self.doc, self.source.node_id)
                        self._start_edit()
                        return
                    raise ev
        if self.state == "converting" and self._future is not None and self._future.done():
            fut, self._future = self._future, None
            colour, mask = fut.result()
            self._insert(colour, mask, self._old_hair(self._result))

    def _convert(self, result: EditResult) -> None:
        src = self.source
        layer = result.layer
        if (layer.width, layer.height) != (src.rect.w, src.rect.h):
            raise BadRequest(f"The server returned a {layer.width}x{layer.height} layer for a "
                             f"{src.rect.w}x{src.rect.h} source.")
        self.state, self.stage, self.fraction = "converting", "receiving", 0.0
        self._future = self.pool.submit(
            lambda: split_alpha(from_wire(layer, src.layout), src.layout, alpha_from=src.data))

    def _old_hair(self, result: EditResult) -> bytes | None:
        """The result's mask of the hair it left outside the crop (servers that predate it send none)."""
        m = result.hair_outside
        return m.tobytes() if m is not None and (m.width, m.height) == (self.source.rect.w, self.source.rect.h) \
            else None

    def _insert(self, colour: bytes, mask: bytes, old_hair: bytes | None = None) -> None:
        self.state, self.stage = "inserting", "inserting"
        writer = kritadoc.ResultWriter(self.doc, self.source.node_id, self.source.rect, self.source.layout,
                                       colour, mask, self.name, self.call_later, existing=self._existing,
                                       want_mask=self.want_mask, main_loop=self.main_loop, old_hair=old_hair)
        writer.start(self._inserted)

    def _inserted(self, ins: kritadoc.Insertion | None, err: BaseException | None) -> None:
        if err is not None:
            return self._fail(err)
        r = self._result
        self.outcome = EditOutcome(ins.layer_id, self.name, ins.mask, ins.undo_steps, list(r.faces),
                                   dict(r.timings), r.job or (self.job.id if self.job else ""), ins.note,
                                   result_warning(r.meta, ins.old_hair), ins.old_hair)
        # Re-renders always start from the full edit: that is the job the server keeps cached.
        base = self.previous.job_id if self.rerender else (self.job.id if self.job else "")
        self.previous = Previous(self.doc, self.source, self.settings, self.ref_names, base, ins.layer_id)
        self.state = "done"
        self._notify()

    def cancel(self) -> None:
        """Stop the job on the server; a result already being inserted still lands."""
        self._cancel = True
        if self.job is not None and self.state == "running":
            self.job.cancel()
        elif self.state in ("new", "preparing") and self._future is None:
            self.state = "cancelled"
            self._notify()

    def _fail(self, err: BaseException) -> None:
        if isinstance(err, HairclipError) and err.code in ("cancelled",) and self._cancel:
            self.state = "cancelled"
        else:
            self.state, self.error = "failed", err
            if isinstance(err, ServerNotRunning):
                self.connection.lost(err)
        self._notify()

    def _notify(self) -> None:
        for fn in self.on_done:
            fn(self)

    def with_strength(self, strength: float) -> EditTask:
        """A re-render of this finished edit at another strength."""
        s = replace(self.settings, strength=strength)
        return EditTask(self.connection, self.doc, None, s, self.call_later, self.pool, self.previous,
                        self.want_mask, self.main_loop)


def error_text(err: BaseException | None) -> str:
    """An error as the user should read it: the backend's message as is."""
    if err is None:
        return ""
    if isinstance(err, HairclipError):
        return err.message
    return f"{type(err).__name__}: {err}"

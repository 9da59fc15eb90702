"""Thin wrappers around Krita's document API: read a layer's pixels, find layers, insert a result.

Everything here runs on Krita's GUI thread, and nothing here ever writes to the source layer.
What Krita allows, by version (checked against Krita 5.1.5 by tests/e2e/test_krita_e2e.py):
- `Node.addChildNode` is one undo step ("Add layer"); pixels set on a node before it is inserted belong to
  that step. `setPixelData` on a node already in the image is not recorded in the undo history.
- Krita 5.2+ has `Document.createTransparencyMask`: the mask is filled and attached to the new layer before
  the layer is inserted, so the layer and its mask are one undo step.
- Krita 5.1 cannot fill a mask it creates from a script (it has no selection). The mask comes from Krita's
  own `add_new_transparency_mask` action on the new layer, which is a second undo step, and needs the
  document to be shown in the active window. Without a view the edit's alpha is baked into the layer.
- Krita registers a new layer with its views only from its main event loop (KisApplication postpones
  "node added" events while a nested event loop runs). So the 5.1 mask route needs every step to return
  to the main loop; a caller that blocks in a nested loop gets the alpha baked into the layer instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from krita import Krita, Selection

from hairclip_shared.editing import empty_layer_message
from hairclip_shared.pixels import PixelLayout, apply_mask, check_has_pixels, clip_rect, krita_layout
from hairclip_shared.protocol import BadRequest, HairclipError, Rect
from hairclip_shared.wording import OLD_HAIR_NAME

LAYER_TYPES = ("paintlayer", "grouplayer", "filelayer", "clonelayer", "vectorlayer", "filllayer",
               "filterlayer")
MASK_NAME = "HairCLIP edit"


class DocumentChanged(HairclipError):
    """The document or a layer the edit needs went away while it ran."""

    code = "document_changed"


def node_id(node) -> str:
    return node.uniqueId().toString()


def walk(node) -> Iterator:
    """Every node under `node`, top of the stack first (the order of Krita's Layers docker)."""
    for child in reversed(node.childNodes()):
        yield child
        yield from walk(child)


def find_node(doc, nid: str):
    root = doc.rootNode() if doc is not None else None
    if root is None:
        return None
    for node in walk(root):
        if node_id(node) == nid:
            return node
    return None


def list_layers(doc) -> list[tuple[str, str]]:
    """(uniqueId, label) of every layer that has colour pixels, for the reference pickers."""
    out = []

    def visit(node, depth: int) -> None:
        for child in reversed(node.childNodes()):
            if child.type() in LAYER_TYPES:
                out.append((node_id(child), "    " * depth + child.name()))
                visit(child, depth + 1)

    if doc is not None and doc.rootNode() is not None:
        visit(doc.rootNode(), 0)
    return out


def same_document(a, b) -> bool:
    if a is None or b is None or a.rootNode() is None or b.rootNode() is None:
        return False
    return node_id(a.rootNode()) == node_id(b.rootNode())


@dataclass(frozen=True)
class LayerPixels:
    """A layer's pixels over its extent inside the canvas, in Krita's own layout."""

    node_id: str
    name: str
    rect: Rect
    layout: PixelLayout
    data: bytes


def read_layer(doc, node, role: str = "layer") -> LayerPixels:
    """The pixels of `node` (a paint layer's own; any other layer's rendering), clipped to the canvas."""
    if node is None:
        raise BadRequest(f"There is no {role} to read: select a layer first.")
    if node.type() not in LAYER_TYPES:
        raise BadRequest(f"The {role} '{node.name()}' is a {node.type() or 'mask'}; choose a layer instead.")
    try:
        layout = krita_layout(node.colorModel(), node.colorDepth(), node.colorProfile())
    except HairclipError as e:
        raise type(e)(f"{role.capitalize()} '{node.name()}': {e.message}", e.code) from None
    b = node.bounds()
    rect = clip_rect(b.x(), b.y(), b.width(), b.height(), doc.width(), doc.height())
    if rect is None:
        raise BadRequest(empty_layer_message(role, node.name()))
    read = node.pixelData if node.type() == "paintlayer" else node.projectionPixelData
    data = bytes(read(rect.x, rect.y, rect.w, rect.h))
    if len(data) != rect.w * rect.h * layout.bytes_per_pixel:
        raise BadRequest(f"Krita returned {len(data)} bytes for the {rect.w}x{rect.h} {role}; expected "
                         f"{rect.w * rect.h * layout.bytes_per_pixel}.")
    check_has_pixels(data, layout, role, node.name())  # bounds can outlast erased pixels
    return LayerPixels(node_id(node), node.name(), rect, layout, data)


def read_selection(doc, rect: Rect) -> bytes | None:
    """The document's selection over `rect`, one byte per pixel; None without a selection."""
    sel = doc.selection()
    if sel is None:
        return None
    data = bytes(sel.pixelData(rect.x, rect.y, rect.w, rect.h))
    if len(data) != rect.w * rect.h:
        raise BadRequest("Krita returned a selection of the wrong size.")
    if not any(data):
        raise BadRequest("The selection does not overlap the layer. Select the faces to edit, "
                         "or choose 'All faces'.")
    return data


def active_view_shows(doc) -> bool:
    """Does the active window's active view show `doc`? Krita's actions act on that view only."""
    win = Krita.instance().activeWindow()
    view = win.activeView() if win is not None else None
    return view is not None and same_document(view.document(), doc)


@dataclass(frozen=True)
class Insertion:
    """Where a result went: the layer, whether an editable mask holds the edit, how many undos remove it."""

    layer_id: str
    mask: bool
    undo_steps: int
    note: str = ""
    old_hair: bool = False  # a selection mask OLD_HAIR_NAME on the layer holds the hair left outside the crop


class ResultWriter:
    """Put a result into the document as a new paint layer directly above the source, step by step.

    Krita learns about new nodes through queued signals, so the steps after an insertion run from the
    event loop (`call_later`), never in one blocking call. `existing` re-uses a result layer from an
    earlier run (a re-render): its pixels, mask and name are replaced in place. `old_hair` (1 byte a pixel
    over `rect`) is the original's hair the edit left outside the face crop: it becomes a selection mask
    OLD_HAIR_NAME on the new layer, inactive, for the user to pick and paint over; no pixels change for it.
    """

    SETTLE_MS = 60
    RETRIES = 60

    def __init__(self, doc, source_id: str, rect: Rect, layout: PixelLayout, colour: bytes, mask: bytes,
                 name: str, call_later: Callable[[int, Callable[[], None]], None], existing: str = "",
                 want_mask: bool = True, main_loop: bool = True, old_hair: bytes | None = None):
        self.doc, self.source_id, self.rect, self.layout = doc, source_id, rect, layout
        self.old_hair = old_hair
        self.colour, self.mask, self.name = colour, mask, name
        self.call_later, self.existing, self.want_mask = call_later, existing, want_mask
        self.main_loop = main_loop
        self.on_done: Callable[[Insertion | None, BaseException | None], None] = lambda ins, err: None
        self.node = None
        self.previous_id = ""
        self.steps = 0
        self.note = ""
        self._tries = self._stable = 0

    def start(self, on_done: Callable[[Insertion | None, BaseException | None], None]) -> None:
        self.on_done = on_done
        self._guard(self._insert)

    # ------------------------------------------------------------------------------------------ steps

    def _guard(self, step: Callable[[], None]) -> None:
        try:
            step()
        except BaseException as e:  # every failure must reach on_done, or the dialog stays busy forever
            self.on_done(None, e)

    def _later(self, step: Callable[[], None], ms: int | None = None) -> None:
        self.call_later(self.SETTLE_MS if ms is None else ms, lambda: self._guard(step))

    def _source(self):
        if self.doc is None or self.doc.rootNode() is None:
            raise DocumentChanged("The document was closed before the result arrived.")
        src = find_node(self.doc, self.source_id)
        if src is None:
            raise DocumentChanged("The source layer was deleted before the result arrived.")
        return src

    def _insert(self) -> None:
        src = self._source()
        r = self.rect
        if self.existing:
            node = find_node(self.doc, self.existing)
            if node is not None:
                return self._update(node)
        active = self.doc.activeNode()
        self.previous_id = node_id(active) if active is not None else ""
        node = self.doc.createNode(self.name, "paintlayer")
        if (node.colorModel(), node.colorDepth(), node.colorProfile()) != \
                (src.colorModel(), src.colorDepth(), src.colorProfile()):
            node.setColorSpace(src.colorModel(), src.colorDepth(), src.colorProfile())  # still empty: no loss
        self.node = node
        detached = self.want_mask and hasattr(self.doc, "createTransparencyMask")
        shown = active_view_shows(self.doc)
        via_action = self.want_mask and not detached and self.main_loop and shown
        children = [self._old_hair_mask()] if self.old_hair is not None else []
        if detached:
            mask = self.doc.createTransparencyMask(MASK_NAME)
            mask.setPixelData(self.mask, r.x, r.y, r.w, r.h)
            children.insert(0, mask)
        if children:
            node.setChildNodes(children)  # attached before insertion: no undo step of its own
        if detached or via_action:
            node.setPixelData(self.colour, r.x, r.y, r.w, r.h)
        else:
            node.setPixelData(apply_mask(self.colour, self.layout, self.mask), r.x, r.y, r.w, r.h)
            if self.want_mask:
                self.note = ("The edit's alpha is part of the layer: Krita 5.1 adds an editable mask only "
                             + ("from its main event loop (use start_edit, not the blocking run_edit)."
                                if shown else "to the document shown in the active window."))
        src.parentNode().addChildNode(node, src)
        self.steps = 1
        if via_action:
            self._tries = 0
            self._later(self._activate_new, 0)
        else:
            self._later(self._restore_active)

    def _old_hair_selection(self) -> Selection:
        r = self.rect
        sel = Selection()
        sel.setPixelData(self.old_hair, r.x, r.y, r.w, r.h)
        return sel

    def _old_hair_mask(self):
        """A local selection (Krita 5.1 fills one from a script, unlike a transparency mask); Krita leaves a
        new selection mask inactive, so it restricts nothing until the user picks it."""
        mask = self.doc.createSelectionMask(OLD_HAIR_NAME)
        mask.setSelection(self._old_hair_selection())
        return mask

    def _activate_new(self) -> None:
        """Make the new layer active, retrying until Krita's view has heard of it."""
        self.doc.setActiveNode(self.node)
        active = self.doc.activeNode()
        if active is not None and node_id(active) == node_id(self.node):
            self._later(self._add_mask)
            return
        self._retry(self._activate_new, "Krita did not make the new layer active")

    def _add_mask(self) -> None:
        active = self.doc.activeNode()
        if active is None or node_id(active) != node_id(self.node) or not active_view_shows(self.doc):
            return self._bake("the new layer was no longer the active layer")  # never mask another layer
        Krita.instance().action("add_new_transparency_mask").trigger()
        self._tries = 0
        self._later(self._fill_mask, 0)

    def _fill_mask(self) -> None:
        masks = [c for c in self.node.childNodes() if c.type() == "transparencymask"]
        if not masks:
            return self._retry(self._fill_mask, "Krita did not add the transparency mask")
        r = self.rect
        masks[0].setName(MASK_NAME)
        masks[0].setPixelData(self.mask, r.x, r.y, r.w, r.h)
        self.steps = 2
        self._tries = self._stable = 0
        self._later(self._restore_active)

    def _bake(self, why: str) -> None:
        r = self.rect
        self.node.setPixelData(apply_mask(self.colour, self.layout, self.mask), r.x, r.y, r.w, r.h)
        self.note = f"The edit's alpha is part of the layer ({why})."
        self._tries = self._stable = 0
        self._later(self._restore_active)

    def _retry(self, step: Callable[[], None], what: str) -> None:
        self._tries += 1
        if self._tries > self.RETRIES:
            return self._bake(what.lower())
        self._later(step)

    def _restore_active(self) -> None:
        """Give the user back the layer they had active (inserting a layer activates it, a little later)."""
        prev = find_node(self.doc, self.previous_id) if self.previous_id else None
        if prev is None:
            return self._finish()
        active = self.doc.activeNode()
        if active is not None and node_id(active) == self.previous_id:
            self._stable += 1
            if self._stable >= 3:  # it stayed put over a few turns of the event loop
                return self._finish()
            return self._later(self._restore_active)
        self._stable = 0
        self._tries += 1
        if self._tries > self.RETRIES:
            self.note = (self.note + " " if self.note else "") + "Krita did not restore the active layer."
            return self._finish()
        self.doc.setActiveNode(prev)
        self._later(self._restore_active)

    def _update(self, node) -> None:
        r = self.rect
        masks = [c for c in node.childNodes() if c.type() == "transparencymask"]
        if masks:
            node.setPixelData(self.colour, r.x, r.y, r.w, r.h)
            masks[0].setPixelData(self.mask, r.x, r.y, r.w, r.h)
        else:
            node.setPixelData(apply_mask(self.colour, self.layout, self.mask), r.x, r.y, r.w, r.h)
        old = [c for c in node.childNodes() if c.type() == "selectionmask" and c.name() == OLD_HAIR_NAME]
        if old and self.old_hair is not None:  # the same photo's hair: refreshed, never added to an old layer
            old[0].setSelection(self._old_hair_selection())
        node.setName(self.name)
        self.node = node
        self.doc.refreshProjection()
        self.on_done(Insertion(node_id(node), bool(masks), 0, "updated in place", bool(old)), None)

    def _finish(self) -> None:
        self.doc.refreshProjection()
        children = self.node.childNodes()
        masked = any(c.type() == "transparencymask" for c in children)
        old = any(c.type() == "selectionmask" and c.name() == OLD_HAIR_NAME for c in children)
        self.on_done(Insertion(node_id(self.node), masked, self.steps, self.note, old), None)

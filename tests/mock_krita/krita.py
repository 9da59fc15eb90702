"""A small stand-in for Krita's `krita` module: enough of libkis for the HairCLIP plug-in's unit tests.

It keeps what the plug-in relies on and what tests/e2e showed real Krita 5.1 does:
- pixels per node in the colour space's own memory layout (BGRA for U8/U16, RGBA for F16/F32; masks and
  selections 1 byte per pixel), sparse, so layers can sit partly outside the canvas;
- `addChildNode` is one undo step that includes whatever the node already holds; `setPixelData` and
  `setChildNodes` are not recorded;
- a node added to a document that has a view becomes activatable only after the main event loop turns
  (`Krita.process_events`, which the tests' fake loop calls between callbacks);
- the `add_new_transparency_mask` action masks the active layer of the document in the active view;
- Krita 5.1 has no Document.createTransparencyMask; `Krita(version="5.2.0")` adds it;
- Document.createSelectionMask and SelectionMask.setSelection(Selection) exist in 5.1 (a scripted selection
  mask can be filled, unlike a transparency mask); a new selection mask is inactive, so the document's
  selection stays as it was.
"""

from __future__ import annotations

import itertools
import uuid

_ids = itertools.count(1)
PIXEL_BYTES = {"U8": 4, "U16": 8, "F16": 8, "F32": 16}


class QUuid:
    def __init__(self):
        self._s = "{" + str(uuid.UUID(int=next(_ids))) + "}"

    def toString(self) -> str:  # noqa: N802 - Krita's name
        return self._s


class QRect:
    def __init__(self, x=0, y=0, w=0, h=0):
        self._r = (x, y, w, h)

    def x(self):
        return self._r[0]

    def y(self):
        return self._r[1]

    def width(self):
        return self._r[2]

    def height(self):
        return self._r[3]


class Pixels:
    """Sparse pixels: (x, y) -> bytes; absent pixels read as `default`."""

    def __init__(self, bpp: int, default: bytes | None = None):
        self.bpp, self.px = bpp, {}
        self.default = default if default is not None else bytes(bpp)

    def read(self, x, y, w, h) -> bytes:
        d = self.default
        return b"".join(self.px.get((i, j), d) for j in range(y, y + h) for i in range(x, x + w))

    def write(self, data, x, y, w, h) -> None:
        data = bytes(data)
        if len(data) != w * h * self.bpp:
            raise ValueError(f"setPixelData: {len(data)} bytes for {w}x{h}x{self.bpp}")
        b, k = self.bpp, 0
        for j in range(y, y + h):
            for i in range(x, x + w):
                self.px[(i, j)] = data[k:k + b]
                k += b

    def bounds(self) -> QRect:
        keys = [k for k, v in self.px.items() if v != self.default]
        if not keys:
            return QRect()
        xs, ys = [k[0] for k in keys], [k[1] for k in keys]
        return QRect(min(xs), min(ys), max(xs) - min(xs) + 1, max(ys) - min(ys) + 1)


class Node:
    def __init__(self, doc, name: str, kind: str, model="RGBA", depth="U8",
                 profile="sRGB-elle-V2-srgbtrc.icc"):
        self.doc, self._name, self._type = doc, name, kind
        self._model, self._depth, self._profile = model, depth, profile
        self._uid = QUuid()
        self._children: list[Node] = []  # bottom to top, as Krita lists them
        self._parent: Node | None = None
        mask_like = kind in ("transparencymask", "selectionmask")
        self.pixels = Pixels(1 if mask_like else PIXEL_BYTES[depth], b"\xff" if mask_like else None)
        self.has_selection = kind != "transparencymask"  # Krita 5.1: a scripted mask has none
        self.writes = 0

    # identity and tree
    def uniqueId(self):  # noqa: N802
        return self._uid

    def name(self):
        return self._name

    def setName(self, name):  # noqa: N802
        self._name = name

    def type(self):
        return self._type

    def childNodes(self):  # noqa: N802
        return list(self._children)

    def parentNode(self):  # noqa: N802
        return self._parent

    def addChildNode(self, child, above):  # noqa: N802
        index = 0 if above is None else self._children.index(above) + 1
        self.doc._push(("add", self, child, index))
        return True

    def setChildNodes(self, nodes):  # noqa: N802 - not undoable, like Krita's
        for n in self._children:
            n._parent = None
        self._children = list(nodes)
        for n in nodes:
            n._parent = self

    def remove(self):
        if self._parent is None:
            return False
        self.doc._push(("remove", self._parent, self, self._parent._children.index(self)))
        return True

    # colour space
    def colorModel(self):  # noqa: N802
        return self._model

    def colorDepth(self):  # noqa: N802
        return self._depth

    def colorProfile(self):  # noqa: N802
        return self._profile

    def setColorSpace(self, model, depth, profile):  # noqa: N802
        if self.pixels.px:
            raise AssertionError("the mock converts empty layers only")
        self._model, self._depth, self._profile = model, depth, profile
        self.pixels = Pixels(PIXEL_BYTES[depth])
        return True

    # pixels
    def bounds(self):
        return self.pixels.bounds()

    def pixelData(self, x, y, w, h):  # noqa: N802
        if self._type == "transparencymask" and not self.has_selection:
            return b""
        return self.pixels.read(x, y, w, h)

    projectionPixelData = pixelData

    def setPixelData(self, data, x, y, w, h):  # noqa: N802
        if self._type == "transparencymask" and not self.has_selection:
            return  # what Krita 5.1 does with a scripted mask
        self.writes += 1
        self.pixels.write(data, x, y, w, h)

    def setSelection(self, sel):  # noqa: N802 - SelectionMask's
        assert self._type == "selectionmask"
        self.writes += 1
        self.pixels = Pixels(1, b"\x00")
        self.pixels.px = dict(sel.pixels.px)

    def selection(self):
        assert self._type == "selectionmask"
        return Selection(self.pixels)

    def __eq__(self, other):
        return isinstance(other, Node) and other._uid is self._uid

    __hash__ = object.__hash__


class Selection:
    def __init__(self, pixels: Pixels | None = None):
        self.pixels = pixels or Pixels(1, b"\x00")

    def select(self, x, y, w, h, value):
        self.pixels.write(bytes([value]) * (w * h), x, y, w, h)

    def pixelData(self, x, y, w, h):  # noqa: N802
        return self.pixels.read(x, y, w, h)

    def setPixelData(self, data, x, y, w, h):  # noqa: N802
        self.pixels.write(data, x, y, w, h)


class Document:
    def __init__(self, app, w, h, name, model, depth, profile):
        self.app, self._w, self._h, self._name = app, w, h, name
        self._model, self._depth, self._profile = model, depth, profile or "sRGB-elle-V2-srgbtrc.icc"
        self._root = Node(self, "root", "grouplayer", model, depth, self._profile)
        bg = Node(self, "Background", "paintlayer", model, depth, self._profile)
        self._root.setChildNodes([bg])
        self._active = bg
        self._registered = {id(bg)}
        self._selection: Selection | None = None
        self.undo_stack: list[tuple] = []
        self.closed = False
        self.refreshes = 0
        if app.version_tuple >= (5, 2):
            self.createTransparencyMask = self._create_transparency_mask  # noqa: N815 - Krita's name

    def width(self):
        return self._w

    def height(self):
        return self._h

    def rootNode(self):  # noqa: N802
        return None if self.closed else self._root

    def colorModel(self):  # noqa: N802
        return self._model

    def colorDepth(self):  # noqa: N802
        return self._depth

    def colorProfile(self):  # noqa: N802
        return self._profile

    def createNode(self, name, kind):  # noqa: N802
        return Node(self, name, kind, self._model, self._depth, self._profile)

    def createSelectionMask(self, name):  # noqa: N802
        mask = Node(self, name, "selectionmask")
        mask.pixels = Pixels(1, b"\x00")
        return mask

    def _create_transparency_mask(self, name):
        mask = Node(self, name, "transparencymask")
        mask.has_selection = True
        return mask

    def activeNode(self):  # noqa: N802
        return self._active

    def setActiveNode(self, node):  # noqa: N802
        if id(node) in self._registered or not self.app.shown(self):
            self._active = node  # like Krita, quietly ignored for nodes its view has not heard of yet

    def selection(self):
        return self._selection

    def setSelection(self, sel):  # noqa: N802
        self._selection = sel

    def refreshProjection(self):  # noqa: N802
        self.refreshes += 1

    def waitForDone(self):  # noqa: N802
        pass

    def close(self):
        self.closed = True

    def _push(self, cmd):
        self._apply(cmd)
        self.undo_stack.append(cmd)

    def _apply(self, cmd, undo=False):
        op, parent, node, index = cmd
        if (op == "add") != undo:
            parent._children.insert(index, node)
            node._parent = parent
            self.app.pending.append((self, node))
        else:
            parent._children.remove(node)
            node._parent = None

    def undo(self):
        self._apply(self.undo_stack.pop(), undo=True)


class View:
    def __init__(self, doc):
        self._doc = doc

    def document(self):
        return self._doc


class Window:
    def __init__(self):
        self.views, self._active_view, self.actions = [], None, {}

    def addView(self, doc):  # noqa: N802
        self._active_view = View(doc)
        self.views.append(self._active_view)
        return self._active_view

    def activeView(self):  # noqa: N802
        return self._active_view

    def createAction(self, action_id, text, menu="tools/scripts"):  # noqa: N802
        action = Action(action_id, text, menu)
        self.actions[action_id] = action
        Krita.instance()._actions[action_id] = action
        return action

    def qwindow(self):
        return None


class Signal:
    def __init__(self):
        self.slots = []

    def connect(self, fn):
        self.slots.append(fn)

    def emit(self, *args):
        for fn in self.slots:
            fn(*args)


class Action:
    def __init__(self, action_id, text="", menu="", fn=None):
        self.id, self.text, self.menu, self._fn = action_id, text, menu, fn
        self.triggered = Signal()
        self.tooltip = ""

    def setToolTip(self, text):  # noqa: N802
        self.tooltip = text

    def trigger(self):
        if self._fn is not None:
            self._fn()
        self.triggered.emit()


class Extension:
    def __init__(self, parent=None):
        self.parent = parent


class Krita:
    _instance: Krita | None = None

    def __init__(self, version: str = "5.1.5"):
        self._version = version
        self.version_tuple = tuple(int(v) for v in version.split(".")[:2])
        self._docs: list[Document] = []
        self._active_doc: Document | None = None
        self._window = Window()
        self._settings: dict[tuple[str, str], str] = {}
        self._extensions = []
        self.pending: list[tuple[Document, Node]] = []  # nodes the views learn of at the next loop turn
        self._actions = {"add_new_transparency_mask": Action("add_new_transparency_mask", fn=self._add_mask),
                         "edit_undo": Action("edit_undo", fn=lambda: self._active_doc.undo())}

    @classmethod
    def instance(cls) -> Krita:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    @classmethod
    def reset(cls, version: str = "5.1.5") -> Krita:
        cls._instance = cls(version)
        return cls._instance

    def version(self):
        return self._version

    def process_events(self) -> None:
        """One turn of Krita's main event loop: views learn about nodes added since the last turn."""
        for doc, node in self.pending:
            doc._registered.add(id(node))
            for child in node._children:
                doc._registered.add(id(child))
        self.pending.clear()

    def createDocument(self, w, h, name, model, depth, profile, res):  # noqa: N802
        doc = Document(self, w, h, name, model, depth, profile)
        self._docs.append(doc)
        return doc

    def show(self, doc) -> None:
        """Open a view of `doc` in the window and make it the active document."""
        self._window.addView(doc)
        self._active_doc = doc

    def shown(self, doc) -> bool:
        v = self._window.activeView()
        return v is not None and v.document() is doc

    def activeDocument(self):  # noqa: N802
        return self._active_doc

    def setActiveDocument(self, doc):  # noqa: N802
        self._active_doc = doc

    def activeWindow(self):  # noqa: N802
        return self._window

    def action(self, name):
        return self._actions.get(name)

    def readSetting(self, group, key, default):  # noqa: N802
        return self._settings.get((group, key), default)

    def writeSetting(self, group, key, value):  # noqa: N802
        self._settings[(group, key)] = value

    def addExtension(self, ext):  # noqa: N802
        self._extensions.append(ext)
        ext.createActions(self._window)

    def extensions(self):
        return list(self._extensions)

    def _add_mask(self):
        doc = self._active_doc
        if doc is None or not self.shown(doc) or doc._active is None:
            return
        layer = doc._active
        mask = Node(doc, "Transparency Mask 1", "transparencymask")
        mask.has_selection = True
        layer.addChildNode(mask, None)
        doc._active = mask

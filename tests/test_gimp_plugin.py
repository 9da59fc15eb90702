"""The GIMP plug-in outside GIMP, and its installer.

The plug-in runs here against FakeGimp: a small stand-in for the parts of GIMP 3's Python API that
hairclip.py uses, storing each drawable's pixels as floats and converting on every buffer read/write like
GEGL does (for the formats the plug-in asks for). It is checked against real GIMP 3 by
tests/e2e/test_gimp_e2e.py. The server is real (hairclip.server over TCP on 127.0.0.1) and serves
InvertTestEngine, a TEST DOUBLE of the model pipeline with an exactly predictable result.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import stat
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

import hairclip.server  # noqa: F401  (imported before the plug-in's folder, which holds a hairclip.py, is on sys.path)
from hairclip import install_gimp
from hairclip.engine_api import EngineInfo
from hairclip.server import Server
from hairclip_shared import EditResult, Face, Image, JobFailed, Limits
from hairclip_shared.editing import (
    ALIGNED_MODES,
    ALIGNED_RULE,
    COLOUR_MODES,
    FACE_MODES,
    HAIRSTYLE_MODES,
    WHOLE_HAIR_MODES,
    EditSettings,
    empty_layer_message,
    layer_name,
)
from hairclip_shared.wording import FIELD_HELP, OLD_HAIR_NAME, stage_text

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "plugin_gimp" / "hairclip" / "hairclip.py"


# ---------------------------------------------------------------------------------------------- FakeGimp

class Nick:
    """A GObject enum value: only its nick matters to the plug-in."""

    def __init__(self, nick: str):
        self.value_nick = nick

    def __repr__(self) -> str:
        return f"<{self.value_nick}>"


def _enum(*names: str) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{n: Nick(n.lower().replace("_", "-")) for n in names})


FORMATS = {"R'G'B'A u8": (4, "B", 255), "R'G'B'A u16": (4, "<u2", 65535), "R'G'B'A float": (4, "<f4", None),
           "Y u8": (1, "B", 255), "Y' u8": (1, "B", 255)}  # one stored value each: no curves here


class FakeBuffer:
    def __init__(self, drawable: FakeDrawable):
        self.d = drawable

    def get(self, rect, scale, fmt, abyss):
        x, y, w, h = rect
        channels, dtype, top = FORMATS[fmt]
        self.d.log.append(("read", self.d.name, fmt))
        out = np.zeros((h, w, channels), np.float64)  # abyss NONE: outside is 0
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, self.d.width), min(y + h, self.d.height)
        if x1 > x0 and y1 > y0:
            out[y0 - y:y1 - y, x0 - x:x1 - x] = self.d.px[y0:y1, x0:x1, :channels]
        if top is not None:
            out = np.round(np.clip(out, 0, 1) * top)
        return out.astype(dtype).tobytes()

    def set(self, rect, fmt, data):
        x, y, w, h = rect
        channels, dtype, top = FORMATS[fmt]
        a = np.frombuffer(bytes(data), dtype).astype(np.float64).reshape(h, w, channels)
        self.d.px[y:y + h, x:x + w, :channels] = a / top if top is not None else a
        self.d.mutate("buffer.set", fmt)

    def flush(self):
        pass


class FakeDrawable:
    def __init__(self, image: FakeImage, name: str, w: int, h: int, channels: int = 4, kind: str = "layer"):
        self.image, self.name, self.width, self.height, self.kind = image, name, w, h, kind
        self.px = np.zeros((h, w, channels))
        self.offsets = (0, 0)
        self.composite_space = Nick("auto")  # GIMP 3: Normal mode then composites in linear light
        self.mask: FakeDrawable | None = None
        self.owner: FakeDrawable | None = None
        self.id = image.next_id()

    @property
    def log(self):
        return self.image.log

    @property
    def attached(self) -> bool:
        item = self.owner or self
        return item in self.image.layers or item in self.image.channels or item is self.image.selection

    def mutate(self, *what):
        # Only changes to items in the image need undo; a layer being built is not in it yet.
        self.log.append(("mutate" if self.attached else "build", self.name, *what))

    def get_width(self):
        return self.width

    def get_height(self):
        return self.height

    def get_id(self):
        return self.id

    def get_name(self):
        return self.name

    def get_buffer(self):
        return FakeBuffer(self)

    def get_offsets(self):
        return True, *self.offsets

    def get_format(self):  # a Babl format; here its encoding (GIMP 3: Y' u8 for an 8-bit image's channels)
        return "Y' u8" if self.kind == "channel" else "R'G'B'A u8"

    def set_offsets(self, x, y):
        self.offsets = (x, y)
        self.mutate("set_offsets")

    def set_composite_space(self, space):
        self.composite_space = space
        self.mutate("set_composite_space")

    def get_parent(self):
        return None

    def update(self, x, y, w, h):
        pass

    def is_layer(self):
        return self.kind in ("layer", "group")

    def is_group(self):
        return self.kind == "group"

    def create_mask(self, mask_type):
        mask = FakeDrawable(self.image, self.name + " mask", self.width, self.height, 1, "mask")
        mask.px[:] = 1.0  # AddMaskType.WHITE
        mask.owner = self
        return mask

    def add_mask(self, mask):
        self.mask = mask
        self.mutate("add_mask")
        return True

    def get_mask(self):
        return self.mask

    def set_edit_mask(self, edit):
        self.edit_mask = edit
        self.mutate("set_edit_mask")

    def set_visible(self, visible):
        self.visible = visible
        self.mutate("set_visible")


class FakeImage:
    def __init__(self, w: int, h: int, base: str = "rgb", precision: str = "u8-non-linear"):
        self.width, self.height = w, h
        self.base, self.precision = Nick(base), Nick(precision)
        self.layers: list[FakeDrawable] = []  # top first, like GIMP
        self.channels: list[FakeDrawable] = []
        self.log: list[tuple] = []
        self._ids = 0
        self.selection = FakeDrawable(self, "selection", w, h, 1, "channel")

    def next_id(self):
        self._ids += 1
        return self._ids

    def add(self, name, w, h, offsets=(0, 0), kind="layer") -> FakeDrawable:
        layer = FakeDrawable(self, name, w, h, 4, kind)
        layer.offsets = offsets
        self.layers.insert(0, layer)
        return layer

    def get_precision(self):
        return self.precision

    def get_width(self):
        return self.width

    def get_height(self):
        return self.height

    def insert_channel(self, channel, parent, position):
        assert parent is None
        self.channels.insert(position, channel)
        self.log.append(("mutate", channel.name, "insert_channel"))
        return True

    def get_base_type(self):
        return self.base

    def get_selection(self):
        return self.selection

    def get_item_position(self, item):
        return self.layers.index(item)

    def insert_layer(self, layer, parent, position):
        assert parent is None
        self.layers.insert(position, layer)
        self.log.append(("mutate", layer.name, "insert_layer"))
        return True

    def set_selected_layers(self, layers):
        self.selected = list(layers)
        return True

    def undo_group_start(self):
        self.log.append(("undo_group_start",))
        return True

    def undo_group_end(self):
        self.log.append(("undo_group_end",))
        return True


class FakeValues(list):
    def remove(self, i):
        del self[i]


class FakeProcedure:
    def __init__(self, plugin, name, proc_type, run, data):
        self.name, self.run_func = name, run
        self.args: dict[str, tuple] = {}
        self.returns: dict[str, tuple] = {}
        self.info: dict[str, object] = {}

    def __getattr__(self, attr):
        if attr.startswith("add_") and attr.endswith("_argument"):
            return lambda name, *a: self.args.__setitem__(name, (attr[4:-9], *a))
        if attr.startswith("add_") and attr.endswith("_return_value"):
            return lambda name, *a: self.returns.__setitem__(name, (attr[4:-13], *a))
        if attr.startswith(("set_", "add_menu")):
            return lambda *a: self.info.__setitem__(attr, a if len(a) > 1 else a[0])
        raise AttributeError(attr)

    def defaults(self) -> dict:
        out = {}
        for name, (kind, *a) in self.args.items():
            out[name] = None if kind == "layer" else a[-2]
        return out

    def new_return_values(self, status, error):
        # Like GIMP: [status, error message] on failure; [status, each return value's default] on success.
        return FakeValues([status, error.message])


class FakeConfig:
    def __init__(self, values: dict):
        self.values = values
        self.handlers: dict[int, tuple[str, object]] = {}

    def get_property(self, name):
        return self.values[name]

    def set_property(self, name, value):
        self.values[name] = value
        for signal, fn in list(self.handlers.values()):
            if signal == f"notify::{name}":
                fn(self, None)

    def connect(self, signal, fn):
        self.handlers[len(self.handlers) + 1] = (signal, fn)
        return len(self.handlers)

    def disconnect(self, handler):
        del self.handlers[handler]


class FakeWidget:
    """A GTK widget: remembers what the plug-in set on it."""

    def __init__(self, kind="widget", **props):
        self.kind, self.visible, self.props, self.signals = kind, True, dict(props), {}
        self.entry = FakeWidget("entry") if kind == "LabelEntry" else None
        self.children: list = []
        self.text = ""

    def __getattr__(self, attr):
        if attr.startswith("set_"):
            return lambda *a, **k: self.props.__setitem__(attr[4:], a if len(a) != 1 else a[0])
        raise AttributeError(attr)

    def set_visible(self, visible):
        self.visible = visible

    def set_text(self, text):
        self.text = text

    def get_text(self):
        return self.text

    def get_entry(self):
        return self.entry

    def connect(self, signal, fn):
        self.signals[signal] = fn

    def append(self, item):
        self.children.append(item)

    def pack_start(self, child, *a):
        self.children.append(child)

    def show(self):
        pass

    def show_all(self):
        pass


class FakeColor:
    """A Gegl.Color; None stands for the transparent black GIMP 3.0 passes for a colour argument's default."""

    def __init__(self, css: str | None):
        self.css = css

    def get_bytes(self, fmt):
        assert fmt == "R'G'B'A u8"
        data = bytes.fromhex(self.css.lstrip("#")) + b"\xff" if self.css else bytes(4)
        return types.SimpleNamespace(get_data=lambda: data)


class FakeChoice:
    def __init__(self):
        self.nicks: list[str] = []

    def add(self, nick, i, label, help_):
        self.nicks.append(nick)


class FakeDialog:
    answer = True
    shown: list = []
    during_run = None  # a test's look at the dialog while it is open

    @classmethod
    def new(cls, procedure, config, title):
        dialog = cls()
        dialog.procedure, dialog.config = procedure, config
        dialog.widgets, dialog.content = {}, FakeWidget("box")
        cls.shown.append(title)
        return dialog

    def get_widget(self, name, gtype):
        if name not in self.widgets:
            kind = {"string": "LabelEntry", "double": "LabelSpin"}.get(self.procedure.args[name][0], "widget")
            self.widgets[name] = FakeWidget(kind)
        return self.widgets[name]

    def get_scale_entry(self, name, factor):
        self.widgets.setdefault(name, FakeWidget("ScaleEntry"))
        return self.widgets[name]

    def get_content_area(self):
        return self.content

    def fill(self, names):
        for name in self.procedure.args:
            self.get_widget(name, None)

    def run(self):
        if FakeDialog.during_run is not None:
            FakeDialog.during_run(self)
        return self.answer

    def destroy(self):
        pass


def fake_gi() -> tuple[types.ModuleType, types.SimpleNamespace]:
    """A `gi` package whose repository holds the fakes; also returns the Gimp namespace to inspect."""
    progress: list[tuple] = []
    gimp = types.SimpleNamespace(
        PlugIn=object, main=lambda *a: 0, progress=progress,
        ImageProcedure=types.SimpleNamespace(new=FakeProcedure), Procedure=FakeProcedure,
        Choice=types.SimpleNamespace(new=FakeChoice), Layer=FakeDrawable,
        PDBProcType=_enum("PLUGIN"), ProcedureSensitivityMask=_enum("DRAWABLE"),
        RunMode=_enum("INTERACTIVE", "NONINTERACTIVE", "WITH_LAST_VALS"),
        PDBStatusType=_enum("SUCCESS", "CANCEL", "EXECUTION_ERROR", "CALLING_ERROR"),
        ImageType=_enum("RGBA_IMAGE"), LayerMode=_enum("NORMAL"), AddMaskType=_enum("WHITE"),
        LayerColorSpace=_enum("AUTO", "RGB_LINEAR", "RGB_PERCEPTUAL"),
        Selection=types.SimpleNamespace(is_empty=lambda image: not image.selection.px.any()),
        progress_init=lambda text: progress.append(("init", text)),
        progress_set_text=lambda text: progress.append(("text", text)),
        progress_update=lambda f: progress.append(("update", f)),
        progress_end=lambda: progress.append(("end",)),
        displays_flush=lambda: None, messages=[])
    gimp.message = gimp.messages.append

    def new_channel(image, name, w, h, opacity, color):
        assert (w, h) == (image.width, image.height)  # GIMP's channels are the image's size
        return FakeDrawable(image, name, w, h, 1, "channel")

    gimp.Channel = types.SimpleNamespace(new=new_channel)

    def new_layer(image, name, w, h, image_type, opacity, mode):
        assert image_type is gimp.ImageType.RGBA_IMAGE and opacity == 100.0
        return FakeDrawable(image, name, w, h)

    gimp.Layer = types.SimpleNamespace(new=new_layer)
    gegl = types.SimpleNamespace(init=lambda argv: None, Color=types.SimpleNamespace(new=FakeColor),
                                 Rectangle=types.SimpleNamespace(new=lambda x, y, w, h: (x, y, w, h)),
                                 AbyssPolicy=_enum("NONE"))
    glib = types.SimpleNamespace(Error=lambda message=None: types.SimpleNamespace(message=message),
                                 idle_add=lambda fn: fn(), timeout_add=lambda ms, fn: fn())
    gobject = types.SimpleNamespace(ParamFlags=_enum("READWRITE"), Value=lambda gtype, value: value, TYPE_NONE=None)
    gtk = types.SimpleNamespace(Label=lambda **k: FakeWidget("Label", **k), ListStore=lambda *t: FakeWidget("store"),
                                EntryCompletion=lambda **k: FakeWidget("completion", **k),
                                Menu=lambda: FakeWidget("menu"), MenuItem=lambda label: FakeWidget("item", label=label),
                                EntryIconPosition=_enum("SECONDARY"))
    gimpui = types.SimpleNamespace(init=lambda name: None, ProcedureDialog=FakeDialog)
    babl = types.SimpleNamespace(format=lambda name: name, format_get_encoding=lambda fmt: fmt)
    repo = types.ModuleType("gi.repository")
    repo.Gimp, repo.Gegl, repo.GLib, repo.GObject, repo.GimpUi, repo.Babl = gimp, gegl, glib, gobject, gimpui, babl
    repo.Gtk = gtk
    gi = types.ModuleType("gi")
    gi.require_version = lambda name, version: None
    gi.repository = repo
    return gi, gimp


def load_plugin(monkeypatch, hide_shared: bool = False):
    """Import hairclip.py under FakeGimp, as GIMP would run it, without leaving its folder on sys.path."""
    gi, gimp = fake_gi()
    monkeypatch.setitem(sys.modules, "gi", gi)
    monkeypatch.setitem(sys.modules, "gi.repository", gi.repository)
    if hide_shared:
        monkeypatch.setitem(sys.modules, "hairclip_shared", None)  # as if pyzmq/msgpack were missing
    own = [n for n, m in sys.modules.items() if Path(getattr(m, "__file__", None) or "/").parent == PLUGIN.parent]
    for name in own:  # the plug-in's own modules (gimp_layers, dialog_view) bind this test's FakeGimp afresh
        monkeypatch.delitem(sys.modules, name)
    path = list(sys.path)
    spec = importlib.util.spec_from_file_location("hairclip_gimp_plugin", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path
    module.CONNECT_TIMEOUT = 2.0
    return module, gimp


# ---------------------------------------------------------------------------------------------- test server

class InvertTestEngine:
    """TEST DOUBLE of the pipeline: the result inverts the colours, with alpha 1 on the left half, else 0."""

    stages = ("faces", "invert", "composite")

    def __init__(self, fail: str | None = None):
        self.requests = []
        self.fail = fail

    def info(self) -> EngineInfo:
        return EngineInfo("cpu (invert test double)", {"invert": "loaded"}, ["afro"], ["purple"])

    def edit(self, request, ctx) -> EditResult:
        self.requests.append(request)
        for stage in self.stages:
            ctx.progress(stage, 0.5)
            ctx.progress(stage, 1.0)
        if self.fail:
            raise JobFailed(self.fail, "no_face")
        src = request.source
        dtype, top = {"u8": (np.uint8, 255), "u16": ("<u2", 65535), "f32": ("<f4", 1.0)}[src.depth]
        a = np.frombuffer(src.tobytes(), dtype).reshape(src.height, src.width, 4).astype(np.float64) / top
        out = np.concatenate([1.0 - a[..., :3], np.zeros_like(a[..., 3:])], axis=-1)
        out[:, : src.width // 2, 3] = 1.0
        data = (out * top).round().astype(dtype) if top != 1.0 else out.astype(dtype)
        meta, outside = {}, None
        if request.hairstyle == "long":  # a photo with hair below the crop: the bottom half of the layer
            meta = {"hair_outside_crop": 0.5, "whole_hair": request.whole_hair is True}
            if request.whole_hair is not True:
                outside = Image(src.width, src.height, long_hair_mask(src.width, src.height), "A", "u8")
        return EditResult(Image(src.width, src.height, data.tobytes(), request.out_channels, request.out_depth),
                          [Face((0, 0, src.width, src.height), True)], meta=meta, hair_outside=outside)

    def rerender(self, request, ctx):
        raise NotImplementedError


def long_hair_mask(w: int, h: int) -> bytes:
    """InvertTestEngine's hair outside the crop: the bottom half, graded left to right."""
    m = np.zeros((h, w), np.uint8)
    m[h // 2:] = np.linspace(40, 255, w).round().astype(np.uint8)
    return m.tobytes()


@pytest.fixture
def server():
    engine = InvertTestEngine()
    with Server(engine, "tcp://127.0.0.1:*", limits=Limits(lease_s=2.0), shutdown_grace=2) as srv:
        srv.test_engine = engine
        yield srv


def photo(image: FakeImage, name="photo", size=(12, 8), offsets=(3, 5), alpha=1.0) -> FakeDrawable:
    layer = image.add(name, *size, offsets=offsets)
    rng = np.random.default_rng(0)
    layer.px[..., :3] = rng.integers(0, 256, (size[1], size[0], 3)) / 255
    layer.px[..., 3] = alpha
    return layer


def call(plugin, gimp, image, drawables, run_mode="NONINTERACTIVE", **overrides):
    """Run the procedure as GIMP would: the config holds the defaults plus the caller's arguments."""
    proc = plugin.HairClip().do_create_procedure(plugin.PROC)
    values = proc.defaults()
    values.update({k.replace("_", "-"): v for k, v in overrides.items()})
    values["rgb"] = FakeColor(values["rgb"]) if isinstance(values["rgb"], str) else values["rgb"]
    return plugin.run(proc, getattr(gimp.RunMode, run_mode), image, drawables, FakeConfig(values), None)


# ---------------------------------------------------------------------------------------------- procedure

def test_procedure_registers_under_filters_with_typed_arguments(monkeypatch):
    plugin, _ = load_plugin(monkeypatch)
    assert plugin.HairClip().do_query_procedures() == ["plug-in-hairclip"]
    proc = plugin.HairClip().do_create_procedure(plugin.PROC)
    assert proc.info["add_menu_path"] == "<Image>/Filters"
    assert proc.info["set_menu_label"] == "HairCLIP..."
    assert proc.info["set_image_types"] == "RGB*"
    kinds = {name: spec[0] for name, spec in proc.args.items()}
    assert kinds == {"hairstyle-mode": "choice", "hairstyle": "string", "hairstyle-ref": "layer",
                     "hairstyle-ref-aligned": "choice", "colour-mode": "choice", "colour": "string", "rgb": "color",
                     "colour-ref": "layer", "colour-ref-aligned": "choice", "strength": "double", "faces": "choice",
                     "server": "string", "whole-hair": "choice"}
    d = EditSettings()
    assert proc.defaults() | {"rgb": d.rgb} == {
        "hairstyle-mode": d.hairstyle_mode, "hairstyle": d.hairstyle, "hairstyle-ref": None,
        "hairstyle-ref-aligned": "auto", "colour-mode": d.colour_mode, "colour": d.colour, "rgb": d.rgb,
        "colour-ref": None, "colour-ref-aligned": "auto", "strength": d.strength, "faces": d.faces,
        "server": d.endpoint, "whole-hair": "auto"}
    for name in ("hairstyle-ref-aligned", "colour-ref-aligned"):  # the rule is stated in the dialog
        assert proc.args[name][-3].nicks == list(ALIGNED_MODES) and proc.args[name][2] == ALIGNED_RULE
    assert proc.args["rgb"][-2].css == d.rgb
    assert proc.args["hairstyle-ref"][-2] is True and proc.args["colour-ref"][-2] is True  # none allowed
    assert proc.args["strength"][-4:-1] == (0.0, 2.0, 1.0)
    assert proc.args["hairstyle-mode"][-3].nicks == list(HAIRSTYLE_MODES)
    assert proc.args["colour-mode"][-3].nicks == list(COLOUR_MODES)
    assert proc.args["faces"][-3].nicks == list(FACE_MODES)
    assert proc.args["whole-hair"][-3].nicks == list(WHOLE_HAIR_MODES)  # the words Krita's dialog shows too
    assert proc.args["whole-hair"][1:3] == ("Lo_ng hair", FIELD_HELP["whole_hair"])  # L is taken
    assert proc.returns["layer"][0] == "layer"


# ---------------------------------------------------------------------------------------------- the edit

def test_result_is_a_masked_layer_right_above_the_source(monkeypatch, server):
    plugin, gimp = load_plugin(monkeypatch)
    image = FakeImage(40, 30)
    src = photo(image, alpha=0.8)
    image.add("top", 5, 5)
    before = src.px.copy()
    status, layer = call(plugin, gimp, image, [src], server=server.endpoint)
    assert status == gimp.PDBStatusType.SUCCESS
    assert [x.name for x in image.layers] == ["top", layer.name, "photo"]
    assert layer.name == layer_name(EditSettings()) == "HairCLIP: bob cut, purple"
    assert layer.offsets == src.offsets == (3, 5)
    assert (layer.width, layer.height) == (12, 8)
    np.testing.assert_array_equal(src.px, before)  # the source is never written
    expected = np.round((1 - before[..., :3]) * 255) / 255  # InvertTestEngine's colours, through 8 bits
    np.testing.assert_allclose(layer.px[..., :3], expected, atol=1e-9)
    np.testing.assert_allclose(layer.px[..., 3], np.round(0.8 * 255) / 255)  # the source's own alpha
    mask = layer.mask.px[..., 0]
    assert (mask[:, :6] == 1).all() and (mask[:, 6:] == 0).all()  # the edit's alpha
    assert layer.composite_space is gimp.LayerColorSpace.RGB_PERCEPTUAL  # mixed as the backend mixes
    request = server.test_engine.requests[0]
    assert (request.source.width, request.source.height, request.source.depth) == (12, 8, "u8")
    assert (request.hairstyle, request.colour, request.strength) == ("bob cut", "purple", 1.0)


def test_every_change_to_the_image_is_inside_one_undo_group(monkeypatch, server):
    plugin, gimp = load_plugin(monkeypatch)
    image = FakeImage(40, 30)
    src = photo(image)
    call(plugin, gimp, image, [src], server=server.endpoint)
    log = [e for e in image.log if e[0] in ("undo_group_start", "undo_group_end", "mutate")]
    assert log[0] == ("undo_group_start",) and log[-1] == ("undo_group_end",)
    assert [e[0] for e in log].count("undo_group_start") == 1
    # One undoable step: the pixels and the mask were written before the layer joined the image.
    assert [e[2] for e in log[1:-1]] == ["insert_layer"]
    assert not any(e[1] == "photo" for e in image.log if e[0] in ("mutate", "build"))


@pytest.mark.parametrize("whole_hair, sent", [("auto", None), ("yes", True), ("no", False)])
def test_the_long_hair_choice_reaches_the_server(monkeypatch, server, whole_hair, sent):
    plugin, gimp = load_plugin(monkeypatch)
    image = FakeImage(40, 30)
    status, _ = call(plugin, gimp, image, [photo(image)], server=server.endpoint, whole_hair=whole_hair)
    assert status == gimp.PDBStatusType.SUCCESS and server.test_engine.requests[0].whole_hair is sent


def test_hair_left_outside_the_crop_becomes_a_hidden_channel_and_a_message(monkeypatch, server):
    plugin, gimp = load_plugin(monkeypatch)
    image = FakeImage(14, 11)  # the 12 x 8 layer at (3, 5) hangs 1 px off the right and 2 px off the bottom
    src = photo(image)
    before = src.px.copy()
    status, layer = call(plugin, gimp, image, [src], server=server.endpoint, hairstyle="long", colour_mode="none")
    assert status == gimp.PDBStatusType.SUCCESS
    assert [c.name for c in image.channels] == [OLD_HAIR_NAME] == ["HairCLIP: old hair outside the crop"]
    channel = image.channels[0]
    assert not channel.visible  # no tint over the photo until the user asks for it
    assert ("build", OLD_HAIR_NAME, "buffer.set", "Y' u8") in image.log  # the bytes as they are, no curve
    got = np.round(channel.px[..., 0] * 255).astype(np.uint8)
    want = np.zeros((11, 14), np.uint8)
    want[5:, 3:] = np.frombuffer(long_hair_mask(12, 8), np.uint8).reshape(8, 12)[:6, :11]  # in image pixels
    np.testing.assert_array_equal(got, want)
    assert gimp.messages == ["50% of the hair lies outside the face crop and was left as it was: recolour it with "
                             "'Long hair beyond the face crop', or paint over it. The selection 'HairCLIP: old "
                             "hair outside the crop' outlines it."]
    np.testing.assert_array_equal(src.px, before)  # the source is never written
    log = [e for e in image.log if e[0] in ("undo_group_start", "undo_group_end", "mutate")]
    assert [e[0] for e in log[:1] + log[-1:]] == ["undo_group_start", "undo_group_end"]  # the same undo step
    assert [e[2] for e in log[1:-1]] == ["insert_layer", "insert_channel"]
    assert image.selected == [src] and layer.mask is not None


def test_a_whole_hair_edit_or_an_older_server_adds_no_channel_and_no_message(monkeypatch, server):
    plugin, gimp = load_plugin(monkeypatch)
    image = FakeImage(40, 30)
    call(plugin, gimp, image, [photo(image)], server=server.endpoint, hairstyle="long", whole_hair="yes")
    call(plugin, gimp, image, [photo(image)], server=server.endpoint)  # no meta, no mask: as before
    assert image.channels == [] and gimp.messages == []


def test_progress_bar_follows_the_servers_progress_stream(monkeypatch, server):
    plugin, gimp = load_plugin(monkeypatch)
    image = FakeImage(40, 30)
    call(plugin, gimp, image, [photo(image)], server=server.endpoint)
    texts = [p[1] for p in gimp.progress if p[0] == "text"]
    for stage in InvertTestEngine.stages:  # the shared wording, never the internal stage names
        assert f"HairCLIP: {stage_text(stage)}" in texts and f"HairCLIP: {stage}" not in texts
    updates = [p[1] for p in gimp.progress if p[0] == "update"]
    assert updates == sorted(updates) and 0 < updates[-1] < 1.0
    assert gimp.progress[0][0] == "init" and gimp.progress[-1] == ("end",)


def test_hairstyle_reference_layer_and_exact_colour_are_sent(monkeypatch, server):
    plugin, gimp = load_plugin(monkeypatch)
    image = FakeImage(40, 30)
    src = photo(image)
    ref = photo(image, "ref", size=(6, 4), offsets=(0, 0))
    status, layer = call(plugin, gimp, image, [src], server=server.endpoint, hairstyle_mode="reference",
                            hairstyle_ref=ref, colour_mode="rgb", rgb="#102030", strength=1.5)
    assert status == gimp.PDBStatusType.SUCCESS
    request = server.test_engine.requests[0]
    assert request.hairstyle is None and request.rgb == (0x10, 0x20, 0x30) and request.strength == 1.5
    got = np.frombuffer(request.hairstyle_ref.tobytes(), np.uint8).reshape(4, 6, 4)
    np.testing.assert_array_equal(got, np.round(ref.px * 255))
    assert layer.name == "HairCLIP: hairstyle of ref, #102030 (strength 1.5)"


@pytest.mark.parametrize("size, hairstyle_aligned, colour_aligned, expected", [
    ((1024, 1024), "auto", "auto", ("hairstyle_ref", "colour_ref")),  # square 1024: an aligned crop by default
    ((1024, 1024), "no", "auto", ("colour_ref",)),
    ((1024, 1000), "auto", "yes", ("colour_ref",)),
    ((6, 4), "auto", "auto", ()),
])
def test_reference_layers_are_marked_aligned_by_the_shared_rule(monkeypatch, server, size, hairstyle_aligned,
                                                                colour_aligned, expected):
    plugin, gimp = load_plugin(monkeypatch)
    image = FakeImage(*size)
    src = photo(image)
    ref = photo(image, "ref", size=size, offsets=(0, 0))
    status, _ = call(plugin, gimp, image, [src], server=server.endpoint, hairstyle_mode="reference",
                     hairstyle_ref=ref, colour_mode="reference", colour_ref=ref,
                     hairstyle_ref_aligned=hairstyle_aligned, colour_ref_aligned=colour_aligned)
    assert status == gimp.PDBStatusType.SUCCESS
    assert server.test_engine.requests[0].aligned == expected


@pytest.mark.parametrize("role", ["hairstyle", "colour"])
def test_an_empty_reference_layer_is_refused_on_the_spot_as_in_krita(monkeypatch, server, role):
    plugin, gimp = load_plugin(monkeypatch)
    image = FakeImage(40, 30)
    src = photo(image)
    ref = photo(image, "empty", size=(6, 4), offsets=(0, 0), alpha=0.0)
    status, message = call(plugin, gimp, image, [src], server=server.endpoint, **{
        f"{role}_mode": "reference", f"{role}_ref": ref})
    assert status == gimp.PDBStatusType.EXECUTION_ERROR
    assert message == empty_layer_message(f"{role} reference", "empty")  # kritadoc.read_layer's sentence
    assert not server.test_engine.requests and [x.name for x in image.layers] == ["empty", "photo"]


def test_a_colour_default_lost_on_the_way_through_the_pdb_is_restored(monkeypatch, server):
    plugin, gimp = load_plugin(monkeypatch)
    image = FakeImage(40, 30)
    status, layer = call(plugin, gimp, image, [photo(image)], server=server.endpoint, colour_mode="rgb",
                         rgb=FakeColor(None))
    assert status == gimp.PDBStatusType.SUCCESS
    assert server.test_engine.requests[0].rgb == (0x7F, 0x3F, 0xBF) and layer.name.endswith("#7f3fbf")


@pytest.mark.parametrize("precision, depth, fmt", [("u16-non-linear", "u16", "R'G'B'A u16"),
                                                   ("u32-linear", "u16", "R'G'B'A u16"),
                                                   ("half-linear", "f32", "R'G'B'A float"),
                                                   ("float-non-linear", "f32", "R'G'B'A float")])
def test_high_bit_depth_images_keep_their_precision(monkeypatch, server, precision, depth, fmt):
    plugin, gimp = load_plugin(monkeypatch)
    image = FakeImage(40, 30, precision=precision)
    src = photo(image)
    src.px[0, 0, :3] = (0.1234567, 0.5, 0.9876543)  # not on the 8-bit grid
    status, layer = call(plugin, gimp, image, [src], server=server.endpoint)
    assert status == gimp.PDBStatusType.SUCCESS
    assert server.test_engine.requests[0].source.depth == depth
    assert ("read", "photo", fmt) in image.log and ("build", layer.name, "buffer.set", fmt) in image.log
    tol = 0.5 / 65535 if depth == "u16" else 1e-6
    np.testing.assert_allclose(layer.px[0, 0, :3], 1 - np.array([0.1234567, 0.5, 0.9876543]), atol=tol)


@pytest.mark.parametrize("base, what", [("gray", "grayscale"), ("indexed", "indexed-colour")])
def test_greyscale_and_indexed_images_are_refused_with_a_clear_message(monkeypatch, server, base, what):
    plugin, gimp = load_plugin(monkeypatch)
    image = FakeImage(40, 30, base=base)
    src = photo(image)
    status, message = call(plugin, gimp, image, [src], server=server.endpoint)
    assert status == gimp.PDBStatusType.EXECUTION_ERROR
    assert what in message and "Image > Mode > RGB" in message
    assert [x.name for x in image.layers] == ["photo"] and not server.test_engine.requests


def test_faces_in_the_selection_send_the_selection_over_the_layer(monkeypatch, server):
    plugin, gimp = load_plugin(monkeypatch)
    image = FakeImage(40, 30)
    src = photo(image)  # at (3, 5)
    image.selection.px[6:9, 5:10] = 1.0  # image coordinates: layer rows 1..3, columns 2..6
    status, _ = call(plugin, gimp, image, [src], server=server.endpoint, faces="selection")
    assert status == gimp.PDBStatusType.SUCCESS
    sel = server.test_engine.requests[0].selection
    mask = np.frombuffer(sel.tobytes(), np.uint8).reshape(8, 12)
    expected = np.zeros((8, 12), np.uint8)
    expected[1:4, 2:7] = 255
    np.testing.assert_array_equal(mask, expected)


def test_faces_in_the_selection_without_a_selection_says_so(monkeypatch, server):
    plugin, gimp = load_plugin(monkeypatch)
    image = FakeImage(40, 30)
    status, message = call(plugin, gimp, image, [photo(image)], server=server.endpoint, faces="selection")
    assert status == gimp.PDBStatusType.EXECUTION_ERROR and "no selection" in message.lower()


@pytest.mark.parametrize("case", ["two layers", "group", "mask"])
def test_only_a_single_pixel_layer_is_edited(monkeypatch, server, case):
    plugin, gimp = load_plugin(monkeypatch)
    image = FakeImage(40, 30)
    src = photo(image)
    drawables = {"two layers": [src, photo(image, "b")], "group": [image.add("g", 4, 4, kind="group")],
                 "mask": [src.create_mask(None)]}[case]
    status, message = call(plugin, gimp, image, drawables, server=server.endpoint)
    assert status == gimp.PDBStatusType.CALLING_ERROR and "layer" in message
    assert not server.test_engine.requests


def test_interactive_run_shows_the_dialog_and_cancel_changes_nothing(monkeypatch, server):
    plugin, gimp = load_plugin(monkeypatch)
    image = FakeImage(40, 30)
    src = photo(image)
    FakeDialog.shown.clear()
    monkeypatch.setattr(FakeDialog, "answer", False)
    status, _ = call(plugin, gimp, image, [src], run_mode="INTERACTIVE", server=server.endpoint)
    assert status == gimp.PDBStatusType.CANCEL and FakeDialog.shown == ["HairCLIP"]
    assert [x.name for x in image.layers] == ["photo"] and not server.test_engine.requests
    monkeypatch.setattr(FakeDialog, "answer", True)
    status, _ = call(plugin, gimp, image, [src], run_mode="INTERACTIVE", server=server.endpoint)
    assert status == gimp.PDBStatusType.SUCCESS and len(image.layers) == 2


def _open_dialog(monkeypatch, server_endpoint, look, **overrides):
    """Run the procedure interactively; `look(dialog, view)` runs while the dialog is open."""
    plugin, gimp = load_plugin(monkeypatch)
    image = FakeImage(40, 30)
    src = photo(image)
    seen = {}

    def during(dialog):
        seen["view"] = view = next(fn for sig, fn in dialog.config.handlers.values()
                                   if sig == "notify::server").__self__
        look(dialog, view)

    monkeypatch.setattr(FakeDialog, "during_run", staticmethod(during))
    monkeypatch.setattr(FakeDialog, "answer", False)
    status, _ = call(plugin, gimp, image, [src], run_mode="INTERACTIVE", server=server_endpoint, **overrides)
    assert status == gimp.PDBStatusType.CANCEL and "view" in seen
    assert not seen["view"].config.handlers  # closing the dialog let go of the config
    return seen["view"]


def _shown(dialog) -> set[str]:
    return {name for name, w in dialog.widgets.items() if w.visible}


def test_dialog_shows_only_the_fields_of_the_chosen_modes(monkeypatch, server):
    def look(dialog, view):
        mode_fields = {"hairstyle", "hairstyle-ref", "hairstyle-ref-aligned", "colour", "rgb", "colour-ref",
                       "colour-ref-aligned"}
        assert _shown(dialog) & mode_fields == {"hairstyle", "colour"}  # both modes "in words"
        dialog.config.set_property("colour-mode", "rgb")
        assert _shown(dialog) & mode_fields == {"hairstyle", "rgb"}
        dialog.config.set_property("hairstyle-mode", "reference")
        assert _shown(dialog) & mode_fields == {"hairstyle-ref", "hairstyle-ref-aligned", "rgb"}
        dialog.config.set_property("colour-mode", "none")
        assert _shown(dialog) & mode_fields == {"hairstyle-ref", "hairstyle-ref-aligned"}
        assert {"hairstyle-mode", "colour-mode", "strength", "faces", "server"} <= _shown(dialog)

    _open_dialog(monkeypatch, server.endpoint, look)


def test_dialog_offers_the_trained_presets_beside_free_text_and_strength_as_a_slider(monkeypatch, server):
    from hairclip_shared.editing import COLOURS, HAIRSTYLES

    def look(dialog, view):
        assert dialog.widgets["strength"].kind == "ScaleEntry"  # a slider with its value, 0..2
        for name, presets in (("hairstyle", HAIRSTYLES), ("colour", COLOURS)):
            entry = dialog.widgets[name].entry
            menu = entry._hairclip_menu
            assert [i.props["label"] for i in menu.children] == list(presets)
            menu.children[2].signals["activate"](menu.children[2])  # picking one fills the text field
            assert entry.text == presets[2]
            assert "completion" in entry.props  # typing still allowed, with completions
        assert view.presets_count == {"hairstyle": len(HAIRSTYLES), "colour": len(COLOURS)}

    _open_dialog(monkeypatch, server.endpoint, look)


def _wait(cond, timeout=10.0) -> bool:
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        time.sleep(0.02)
    return cond()


@pytest.mark.parametrize("alive", [True, False])
def test_dialog_says_whether_the_server_answers_and_how_to_start_it(monkeypatch, server, alive):
    endpoint = server.endpoint if alive else "tcp://127.0.0.1:9"

    def look(dialog, view):
        assert view.server_line in dialog.content.children
        assert _wait(lambda: view.server_state != "connecting"), view.server_line.text
        text = view.server_line.text
        if alive:
            assert view.server_state == "connected" and text.startswith("Server: Connected.")
        else:
            assert view.server_state == "not_running" and text.startswith("Server: Not running.")
            assert "hairclip serve" in text and endpoint in text

    _open_dialog(monkeypatch, endpoint, look)


def test_after_apply_the_source_stays_active_and_no_mask_is_being_edited(monkeypatch, server):
    plugin, gimp = load_plugin(monkeypatch)
    image = FakeImage(40, 30)
    src = photo(image)
    status, layer = call(plugin, gimp, image, [src], server=server.endpoint)
    assert status == gimp.PDBStatusType.SUCCESS
    assert image.selected == [src]  # the next brush stroke lands on the photo, as in Krita
    assert layer.edit_mask is False  # selecting the new layer edits its pixels, not its mask


def test_server_not_running_tells_how_to_start_it(monkeypatch):
    plugin, gimp = load_plugin(monkeypatch)
    monkeypatch.setattr(plugin, "CONNECT_TIMEOUT", 0.3)
    image = FakeImage(40, 30)
    status, message = call(plugin, gimp, image, [photo(image)], server="tcp://127.0.0.1:9")
    assert status == gimp.PDBStatusType.EXECUTION_ERROR
    assert "hairclip serve" in message and "tcp://127.0.0.1:9" in message
    # said once: not "...is answering at X..." and then "(No HairCLIP server answered at X.)"
    assert message.count("tcp://127.0.0.1:9") == 1 and message.count("No HairCLIP server") == 1, message
    assert gimp.progress[-1] == ("end",) and len(image.layers) == 1


def test_engine_errors_reach_the_user_as_is(monkeypatch, server):
    plugin, gimp = load_plugin(monkeypatch)
    server.test_engine.fail = "No face was found in the layer."
    image = FakeImage(40, 30)
    status, message = call(plugin, gimp, image, [photo(image)], server=server.endpoint)
    assert (status, message) == (gimp.PDBStatusType.EXECUTION_ERROR, "No face was found in the layer.")
    assert len(image.layers) == 1


def test_missing_pyzmq_keeps_the_menu_entry_and_says_what_to_install(monkeypatch):
    plugin, gimp = load_plugin(monkeypatch, hide_shared=True)
    proc = plugin.HairClip().do_create_procedure(plugin.PROC)
    assert proc.info["add_menu_path"] == "<Image>/Filters" and proc.args == {}
    image = FakeImage(40, 30)
    status, message = plugin.run(proc, gimp.RunMode.INTERACTIVE, image, [photo(image)], FakeConfig({}), None)
    assert status == gimp.PDBStatusType.EXECUTION_ERROR
    assert f'hairclip install-plugin gimp --gimp-python "{sys.executable}"' in message


# ---------------------------------------------------------------------------------------------- installer

def test_default_destination_is_the_newest_gimp3_profile(tmp_path):
    home = tmp_path / "home"
    env = {"XDG_CONFIG_HOME": str(home / "cfg")}
    assert install_gimp.default_dest(home, "linux", env) == home / "cfg" / "GIMP" / "3.0" / "plug-ins"
    (home / "cfg" / "GIMP" / "3.0").mkdir(parents=True)
    (home / "cfg" / "GIMP" / "2.10").mkdir(parents=True)
    flatpak = home / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP" / "3.2"
    flatpak.mkdir(parents=True)
    assert install_gimp.default_dest(home, "linux", env) == flatpak / "plug-ins"
    appdata = tmp_path / "Roaming"
    assert install_gimp.default_dest(home, "win32", {"APPDATA": str(appdata)}) == \
        appdata / "GIMP" / "3.0" / "plug-ins"
    assert install_gimp.default_dest(home, "darwin", {}) == \
        home / "Library" / "Application Support" / "GIMP" / "3.0" / "plug-ins"


def test_interpreter_files_name_gimps_python():
    assert install_gimp.parse_interp("python=python.exe\n:Python:E::py::python3:\n") == "python.exe"
    assert install_gimp.parse_interp("python=python3.9\npython3=python3.11\n") == "python3.11"
    assert install_gimp.parse_interp("/usr/bin/python3=/usr/bin/python3\n") == "/usr/bin/python3"
    assert install_gimp.parse_interp("# Example entries\n#scm=/path/to/scm\n:Scheme-ext:E::scm::/x:\n") is None


def test_windows_bundle_python_is_found_through_pygimp_interp(tmp_path):
    gimp = tmp_path / "Program Files" / "GIMP 3"
    (gimp / "lib" / "gimp" / "3.0" / "interpreters").mkdir(parents=True)
    (gimp / "lib" / "gimp" / "3.0" / "interpreters" / "pygimp.interp").write_text(
        "python=python.exe\npython3=python.exe\n:Python:E::py::python3:\n")
    (gimp / "bin").mkdir()
    (gimp / "bin" / "python.exe").write_bytes(b"")
    env = {"ProgramFiles": str(tmp_path / "Program Files")}
    assert install_gimp.find_gimp_python(tmp_path / "dest", "win32", env) == [str(gimp / "bin" / "python.exe")]


def test_probe_reports_version_platform_and_missing_modules():
    info = install_gimp.probe_python([sys.executable])
    assert info.version == "{}.{}".format(*sys.version_info[:2]) and not info.missing
    bare = install_gimp.probe_python([sys.executable, "-I", "-S"])  # no site-packages: no pyzmq, no msgpack
    assert bare.missing == ["pyzmq", "msgpack"] and bare.platform == info.platform


def test_wheels_are_for_gimps_python_not_this_one():
    P = install_gimp.PythonInfo
    assert install_gimp.wheel_platforms("Linux", "x86_64") == P("3.13", "linux-x86_64").pip_platforms()
    assert P("3.12", "win-amd64").pip_platforms() == ["win_amd64"]
    assert "macosx_11_0_arm64" in P("3.12", "macosx-11.0-arm64").pip_platforms()
    with pytest.raises(install_gimp.InstallError):
        P("3.12", "emscripten-3.1-wasm32").pip_platforms()


def _install(dest, **kw):
    ns = argparse.Namespace(dest=dest, deps="auto", gimp_python=None, python=None, platform=None)
    for k, v in kw.items():
        setattr(ns, k, v)
    return install_gimp.install(ns)


def test_install_copies_the_plugin_and_the_shared_client(tmp_path, capsys):
    script = tmp_path / "hairclip" / "hairclip.py"
    assert _install(tmp_path, gimp_python=sys.executable) == 0
    assert script.read_bytes() == PLUGIN.read_bytes()
    assert script.stat().st_mode & stat.S_IXUSR  # GIMP only starts executable plug-ins
    # GIMP re-registers a plug-in only when its file time changes, so every install must change it.
    assert abs(script.stat().st_mtime - time.time()) < 60
    shared = tmp_path / "hairclip" / "hairclip_shared"
    assert (shared / "editing.py").is_file() and (shared / "client.py").is_file()
    assert not list(tmp_path.rglob("__pycache__")) and not (tmp_path / "hairclip" / "vendor").exists()
    assert "already has pyzmq and msgpack" in capsys.readouterr().out


def test_install_vendors_wheels_only_where_gimps_python_lacks_them(tmp_path, monkeypatch):
    fetched = []

    def fake_fetch(vendor, version, platforms, packages):
        fetched.append((version, platforms, list(packages)))
        (vendor / "zmq").mkdir(parents=True)
        return ["pyzmq-27.0.0-cp313-cp313-manylinux_2_28_x86_64.whl"]

    monkeypatch.setattr(install_gimp, "fetch_wheels", fake_fetch)
    monkeypatch.setattr(install_gimp, "probe_python", lambda cmd: install_gimp.PythonInfo(
        "3.13", "linux-x86_64", have=("msgpack",)))
    assert _install(tmp_path, gimp_python="gimp-python") == 0
    assert fetched == [("3.13", install_gimp.wheel_platforms("Linux", "x86_64"), ["pyzmq"])]
    assert (tmp_path / "hairclip" / "vendor" / "zmq").is_dir()
    # A reinstall keeps the wheels while they are needed, and drops them once GIMP's Python has both.
    assert _install(tmp_path, gimp_python="gimp-python", deps="none") == 0
    assert (tmp_path / "hairclip" / "vendor" / "zmq").is_dir() and len(fetched) == 1
    monkeypatch.setattr(install_gimp, "probe_python", lambda cmd: install_gimp.PythonInfo(
        "3.13", "linux-x86_64", have=("zmq", "msgpack")))
    assert _install(tmp_path, gimp_python="gimp-python") == 0
    assert not (tmp_path / "hairclip" / "vendor").exists() and len(fetched) == 1
    # Without a GIMP to ask: the version (and platform) given on the command line.
    assert _install(tmp_path, python="3.12", platform=["win_amd64"]) == 0
    assert fetched[-1] == ("3.12", ["win_amd64"], ["pyzmq", "msgpack"])


def test_installed_plugin_finds_its_shared_package_and_vendor_folder(tmp_path):
    assert _install(tmp_path, deps="none") == 0
    folder = tmp_path / "hairclip"
    (folder / "vendor").mkdir()
    # Run the installed file's path set-up in a Python that sees neither the repo nor site-packages.
    code = ("import importlib.util, runpy, sys; sys.modules['gi'] = None\n"
            f"try: runpy.run_path({str(folder / 'hairclip.py')!r})\nexcept ImportError: pass\n"
            "print(importlib.util.find_spec('hairclip_shared').origin); print(sys.path)")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ""})
    assert str(folder / "hairclip_shared" / "__init__.py") in out.stdout, out.stderr
    assert str(folder / "vendor") in out.stdout

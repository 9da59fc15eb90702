"""The Krita plug-in without Krita: tests/mock_krita stands in for libkis, a real server runs a small engine.

The plug-in package is loaded under another name (hairclip_krita) because the backend owns `hairclip`.
A fake event loop runs the plug-in's call_later steps and lets the mock's views learn about new nodes
between steps, as Krita's main loop does.
"""

from __future__ import annotations

import heapq
import importlib
import importlib.util
import itertools
import struct
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

from hairclip.engine_api import EngineInfo
from hairclip.server import Server
from hairclip_shared import EditResult, Face, Image, JobFailed
from hairclip_shared.editing import ALIGNED_RULE, EditSettings, empty_layer_message
from hairclip_shared.pixels import krita_layout, to_wire
from hairclip_shared.protocol import BadRequest, HairclipError, Limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "mock_krita"))
import krita as mk  # noqa: E402 - the mock, found through the path above


def _load_plugin():
    pkg = ROOT / "plugin_krita" / "hairclip"
    if "hairclip_krita" not in sys.modules:
        spec = importlib.util.spec_from_file_location("hairclip_krita", pkg / "__init__.py",
                                                      submodule_search_locations=[str(pkg)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["hairclip_krita"] = module
        spec.loader.exec_module(module)
    names = ("kritadoc", "jobs", "model", "extension")
    return tuple(importlib.import_module(f"hairclip_krita.{m}") for m in names)


kritadoc, jobs, model_mod, extension = _load_plugin()


# ---------------------------------------------------------------------------------------------- harness

class Loop:
    """Krita's main event loop, in miniature: timers in order, views updated between callbacks."""

    def __init__(self, app):
        self.app, self.queue, self.now, self._n = app, [], 0, itertools.count()

    def call_later(self, ms, fn):
        heapq.heappush(self.queue, (self.now + ms, next(self._n), fn))

    def run(self, until, tick=None, timeout=10.0) -> bool:
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                return False
            self.app.process_events()
            if self.queue:
                t, _, fn = heapq.heappop(self.queue)
                self.now = max(self.now, t)
                fn()
            elif tick is not None:
                tick()
                time.sleep(0.002)
            else:
                return until()
        return True


class SyncPool:
    """The plug-in's worker pool, run inline so tests are deterministic."""

    def submit(self, fn, *args):
        fut = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as e:
            fut.set_exception(e)
        return fut


DT = {"u8": np.uint8, "u16": np.uint16, "f32": np.float32}
TOP = {"u8": 255, "u16": 65535, "f32": 1.0}


class BoxEngine:
    """A test engine: the edit darkens a centre box by 0.5 * strength and says so in alpha (opaque there,
    0 elsewhere); outside the box the layer carries the source's own colours, like the real compositor.
    The hairstyle "long" stands for a photo with hair below the crop: the bottom quarter of the layer is
    that hair, reported in meta and, unless whole_hair is asked for, sent as the `hair_outside` mask."""

    def __init__(self):
        self.requests, self.cache = [], {}
        self.gate = threading.Event()
        self.gate.set()

    def info(self):
        return EngineInfo("cpu (box test engine)", {"box": "loaded"}, ["afro", "bob cut"], ["purple"])

    def edit(self, req, ctx):
        self.requests.append(req)
        if req.hairstyle == "fail":
            raise JobFailed("No face was found in the layer.", "no_face")
        self.cache[ctx.job_id] = req
        return self._run(req, req.strength, ctx)

    def rerender(self, r, ctx):
        self.requests.append(r)
        base = self.cache.get(r.base)
        if base is None:
            raise BadRequest("not cached", "unknown_job")
        return self._run(base, r.strength, ctx)

    def _run(self, req, strength, ctx):
        ctx.progress("edit", 0.0)
        while not self.gate.wait(0.01):
            ctx.check()
        s = req.source
        a = np.frombuffer(s.data, DT[s.depth]).reshape(s.height, s.width, 4).astype(np.float64) / TOP[s.depth]
        out = a.copy()
        out[..., s.channels.index("A")] = 0.0
        h, w = s.height, s.width
        box = np.s_[h // 4:3 * h // 4, w // 4:3 * w // 4]
        for c in "RGB":
            i = s.channels.index(c)
            out[box + (i,)] = a[box + (i,)] * (1 - 0.5 * min(strength, 1.0))
        out[box + (s.channels.index("A"),)] = 1.0
        od = req.out_depth
        o = out * TOP[od]
        o = (np.round(o) if od != "f32" else o).astype(DT[od])
        ctx.progress("edit", 1.0)
        layer = Image(w, h, o.tobytes(), req.out_channels, od)
        meta, outside = {}, None
        if req.hairstyle == "long":
            meta = {"hair_outside_crop": 0.25, "whole_hair": req.whole_hair is True}
            if req.whole_hair is not True:
                outside = Image(w, h, long_hair_mask(w, h), "A", "u8")
        return EditResult(layer, [Face((w // 4, h // 4, w // 2, h // 2), True)], meta=meta, hair_outside=outside)


def long_hair_mask(w: int, h: int) -> bytes:
    """BoxEngine's hair outside the crop: the bottom quarter, soft on its left half."""
    m = np.zeros((h, w), np.uint8)
    m[3 * h // 4:, w // 2:] = 255
    m[3 * h // 4:, :w // 2] = 100
    return m.tobytes()


@pytest.fixture(scope="module")
def engine():
    return BoxEngine()


@pytest.fixture(scope="module")
def endpoint(engine):
    limits = Limits(lease_s=5.0)
    with Server(engine, "tcp://127.0.0.1:*", limits=limits, shutdown_grace=2) as srv:
        yield srv.endpoint


@pytest.fixture
def app():
    return mk.Krita.reset()


@pytest.fixture
def loop(app):
    return Loop(app)


@pytest.fixture
def conn(endpoint):
    c = jobs.Connection(endpoint, pool=SyncPool(), timeout=3.0)
    yield c
    c.close()


def bgra_image(w, h, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    px = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    px[..., 3] = 255
    return px.tobytes()


def photo_doc(app, w=32, h=24, depth="U8", profile="", show=True, seed=0):
    doc = app.createDocument(w, h, "photo", "RGBA", depth, profile, 72.0)
    src = doc.rootNode().childNodes()[0]
    if depth == "U8":
        src.setPixelData(bgra_image(w, h, seed), 0, 0, w, h)
    if show:
        app.show(doc)
    return doc, src


def run_task(task, loop, timeout=10.0):
    task.start()
    assert loop.run(lambda: task.finished, tick=task.tick, timeout=timeout), (task.state, task.error)
    return task


def new_task(conn, loop, doc, node, **settings):
    s = EditSettings(endpoint=conn.endpoint, **settings)
    return jobs.EditTask(conn, doc, node, s, loop.call_later, pool=SyncPool())


def mask_of(node):
    masks = [c for c in node.childNodes() if c.type() == "transparencymask"]
    return masks[0] if masks else None


# ---------------------------------------------------------------------------------------------- reading

def test_read_layer_clips_an_offset_layer_to_the_canvas(app):
    doc = app.createDocument(20, 10, "d", "RGBA", "U8", "", 72.0)
    node = doc.createNode("over the edge", "paintlayer")
    node.setPixelData(bgra_image(12, 8), -4, 6, 12, 8)  # x -4..8, y 6..14: 4 px off the left and bottom
    px = kritadoc.read_layer(doc, node)
    assert (px.rect.x, px.rect.y, px.rect.w, px.rect.h) == (0, 6, 8, 4)
    assert px.layout.order == "BGRA" and px.data == node.pixelData(0, 6, 8, 4)


def test_read_layer_refuses_other_colour_models_and_masks(app):
    doc = app.createDocument(8, 8, "cmyk", "CMYKA", "U8", "", 72.0)
    node = doc.rootNode().childNodes()[0]
    node.pixels = mk.Pixels(5)
    node.setPixelData(bytes([1]) * 8 * 8 * 5, 0, 0, 8, 8)
    with pytest.raises(HairclipError, match="CMYK") as e:
        kritadoc.read_layer(doc, node)
    assert e.value.code == "unsupported_pixels" and "Background" in e.value.message
    doc2 = app.createDocument(8, 8, "d", "RGBA", "U8", "", 72.0)
    with pytest.raises(BadRequest, match="choose a layer"):
        kritadoc.read_layer(doc2, doc2.createNode("m", "transparencymask"))
    with pytest.raises(BadRequest, match="no pixels inside the canvas"):
        kritadoc.read_layer(doc2, doc2.createNode("empty", "paintlayer"))


def test_a_layer_whose_pixels_are_all_transparent_is_refused_with_the_shared_sentence(app):
    doc = app.createDocument(8, 8, "d", "RGBA", "U8", "", 72.0)
    node = doc.createNode("erased", "paintlayer")
    node.setPixelData(bytes([10, 20, 30, 0]) * 4 * 2, 2, 3, 4, 2)  # colour left behind, alpha 0 (erased)
    assert node.bounds().width() == 4  # so the extent alone does not tell
    with pytest.raises(BadRequest) as e:
        kritadoc.read_layer(doc, node, "hairstyle reference")
    assert e.value.message == empty_layer_message("hairstyle reference", "erased")


def test_list_layers_top_first_and_nested(app):
    doc = app.createDocument(8, 8, "d", "RGBA", "U8", "", 72.0)
    root, bg = doc.rootNode(), doc.rootNode().childNodes()[0]
    group = doc.createNode("group", "grouplayer")
    root.addChildNode(group, bg)
    group.addChildNode(doc.createNode("inner", "paintlayer"), None)
    group.addChildNode(doc.createNode("inner mask", "transparencymask"), None)
    assert [label for _, label in kritadoc.list_layers(doc)] == ["group", "    inner", "Background"]


def test_selection_over_the_layer(app):
    doc, src = photo_doc(app, 16, 8)
    rect = kritadoc.read_layer(doc, src).rect
    assert kritadoc.read_selection(doc, rect) is None
    doc.setSelection(mk.Selection())
    with pytest.raises(BadRequest, match="does not overlap"):
        kritadoc.read_selection(doc, rect)
    doc.selection().select(2, 1, 4, 3, 255)
    sel = kritadoc.read_selection(doc, rect)
    assert len(sel) == 16 * 8 and sum(v == 255 for v in sel) == 12 and sel[1 * 16 + 2] == 255


# ---------------------------------------------------------------------------------------------- writing

def _writer(doc, src, loop, colour=None, mask=None, **kw):
    w, h = doc.width(), doc.height()
    layout = krita_layout("RGBA", "U8")
    colour = colour if colour is not None else bytes([10, 20, 30, 255]) * (w * h)
    mask = mask if mask is not None else bytes(range(w * h))
    rect = kritadoc.read_layer(doc, src).rect
    return kritadoc.ResultWriter(doc, kritadoc.node_id(src), rect, layout, colour, mask, "HairCLIP: afro",
                                 loop.call_later, **kw)


def _write(writer, loop):
    done = {}
    writer.start(lambda ins, err: done.update(ins=ins, err=err))
    assert loop.run(lambda: bool(done))
    if done["err"] is not None:
        raise done["err"]
    return done["ins"]


def test_result_lands_above_the_source_with_a_mask_krita51(app, loop):
    doc, src = photo_doc(app, 12, 8)
    top = doc.createNode("top", "paintlayer")
    doc.rootNode().addChildNode(top, src)
    before = src.pixelData(0, 0, 12, 8)
    steps_before = len(doc.undo_stack)
    ins = _write(_writer(doc, src, loop), loop)
    names = [n.name() for n in doc.rootNode().childNodes()]
    assert names == ["Background", "HairCLIP: afro", "top"]  # directly above the source, below the rest
    layer = doc.rootNode().childNodes()[1]
    assert ins.layer_id == kritadoc.node_id(layer) and ins.mask and ins.undo_steps == 2
    assert layer.pixelData(0, 0, 12, 8) == bytes([10, 20, 30, 255]) * 96
    assert mask_of(layer).pixelData(0, 0, 12, 8) == bytes(range(96))
    assert src.pixelData(0, 0, 12, 8) == before and not src.childNodes()
    assert doc.activeNode() is src  # the user's active layer is given back
    assert len(doc.undo_stack) - steps_before == 2
    doc.undo()
    doc.undo()
    assert [n.name() for n in doc.rootNode().childNodes()] == ["Background", "top"]


def test_result_with_krita52_mask_api_is_one_undo_step():
    app = mk.Krita.reset("5.2.2")
    loop = Loop(app)
    doc, src = photo_doc(app, 12, 8)
    ins = _write(_writer(doc, src, loop), loop)
    layer = doc.rootNode().childNodes()[1]
    assert ins.undo_steps == 1 and ins.mask and len(doc.undo_stack) == 1
    assert mask_of(layer).pixelData(0, 0, 12, 8) == bytes(range(96))
    doc.undo()  # one undo takes the layer and its mask
    assert [n.name() for n in doc.rootNode().childNodes()] == ["Background"]


def test_without_a_view_the_alpha_is_baked_in(app, loop):
    doc, src = photo_doc(app, 4, 2, show=False)
    colour = bytes([10, 20, 30, 255]) * 8
    ins = _write(_writer(doc, src, loop, colour=colour, mask=bytes([0, 255, 128, 255] * 2)), loop)
    layer = doc.rootNode().childNodes()[1]
    assert not ins.mask and ins.undo_steps == 1 and "active window" in ins.note
    assert layer.pixelData(0, 0, 4, 2)[3::4] == bytes([0, 255, 128, 255] * 2)


def test_blocking_callers_get_the_alpha_baked_in_on_krita51(app, loop):
    doc, src = photo_doc(app, 4, 2)
    ins = _write(_writer(doc, src, loop, main_loop=False), loop)
    assert not ins.mask and ins.undo_steps == 1 and "main event loop" in ins.note


def test_never_masks_another_layer(app, loop, monkeypatch):
    """If Krita will not make the new layer active, the mask action must not run on whatever is active."""
    doc, src = photo_doc(app, 4, 2)
    monkeypatch.setattr(doc, "setActiveNode", lambda node: None)  # the view never takes the new layer
    ins = _write(_writer(doc, src, loop), loop)
    assert not ins.mask and "did not make the new layer active" in ins.note
    layers = doc.rootNode().childNodes()
    assert not any(c.type() == "transparencymask" for n in layers for c in n.childNodes())


def test_a_closed_document_is_an_error_not_a_crash(app, loop):
    doc, src = photo_doc(app, 4, 2)
    writer = _writer(doc, src, loop)
    doc.close()
    with pytest.raises(kritadoc.DocumentChanged, match="closed"):
        _write(writer, loop)


# ---------------------------------------------------------------------------------------------- edits

def test_edit_end_to_end_u8(app, loop, conn, engine):
    doc, src = photo_doc(app, 32, 24, seed=3)
    before = src.pixelData(0, 0, 32, 24)
    task = run_task(new_task(conn, loop, doc, src, hairstyle="bob cut", colour="purple"), loop)
    assert task.state == "done", task.error
    out = task.outcome
    assert out.layer_name == "HairCLIP: bob cut, purple" and out.mask and out.faces_edited == 1
    req = engine.requests[-1]
    assert (req.source.channels, req.source.depth) == (req.out_channels, req.out_depth) == ("BGRA", "u8")
    assert req.hairstyle == "bob cut" and req.colour == "purple" and req.selection is None
    layer = kritadoc.find_node(doc, out.layer_id)
    got = np.frombuffer(layer.pixelData(0, 0, 32, 24), np.uint8).reshape(24, 32, 4)
    src_px = np.frombuffer(before, np.uint8).reshape(24, 32, 4)
    np.testing.assert_array_equal(got[:6], src_px[:6])  # outside the edit: the source's own colours
    np.testing.assert_array_equal(got[6:18, 8:24, :3], np.round(src_px[6:18, 8:24, :3] * 0.5))
    assert (got[..., 3] == 255).all()  # the layer keeps the source's alpha; the edit's alpha is the mask
    m = np.frombuffer(mask_of(layer).pixelData(0, 0, 32, 24), np.uint8).reshape(24, 32)
    assert (m[6:18, 8:24] == 255).all() and m.sum() == 255 * 12 * 16
    assert src.pixelData(0, 0, 32, 24) == before


@pytest.mark.parametrize("depth,profile", [("U16", "sRGB-elle-V2-srgbtrc.icc"),
                                           ("U16", "sRGB-elle-V2-g10.icc"),
                                           ("F16", "sRGB-elle-V2-g10.icc"),
                                           ("F32", "sRGB-elle-V2-g10.icc")])
def test_edit_end_to_end_deep_and_linear(app, loop, conn, engine, depth, profile):
    w, h = 16, 8
    doc, src = photo_doc(app, w, h, depth=depth, profile=profile)
    rng = np.random.default_rng(5)
    vals = rng.uniform(0.05, 0.95, (h, w, 4))  # samples in the layer's memory order
    vals[..., 3] = 1.0
    if depth == "U16":
        raw = np.round(vals * 65535).astype("<u2").tobytes()
    else:
        raw = vals.astype("<f2" if depth == "F16" else "<f4").tobytes()
    src.setPixelData(raw, 0, 0, w, h)
    task = run_task(new_task(conn, loop, doc, src, hairstyle="afro", colour_mode="none"), loop)
    assert task.state == "done", task.error
    req = engine.requests[-1]
    layout = krita_layout("RGBA", depth, profile)
    assert (req.source.channels, req.source.depth) == (layout.order, layout.wire_depth)
    if layout.gamma == 1.0:  # the server saw sRGB-encoded values, not linear ones
        wd = layout.wire_depth
        sent = np.frombuffer(req.source.tobytes(), DT[wd]).reshape(h, w, 4) / TOP[wd]
        lin = vals[0, 0, 0]
        enc = 12.92 * lin if lin <= 0.0031308 else 1.055 * lin ** (1 / 2.4) - 0.055
        assert abs(sent[0, 0, 0] - enc) < 2e-3  # vals are in memory order, like the wire
    layer = kritadoc.find_node(doc, task.outcome.layer_id)
    assert (layer.colorDepth(), layer.colorProfile()) == (depth, profile)
    out = layer.pixelData(0, 0, w, h)
    got = (np.frombuffer(out, "<u2").astype(float) / 65535 if depth == "U16" else
           np.frombuffer(out, "<f2" if depth == "F16" else "<f4").astype(float)).reshape(h, w, 4)
    tol = {"U16": 1e-4, "F16": 2e-3, "F32": 1e-4}[depth] * (20 if layout.gamma == 1.0 else 1)
    np.testing.assert_allclose(got[:2], vals[:2], atol=tol)  # untouched rows come back as they went
    if layout.gamma is None:  # the box is darkened in the encoding the server sees
        np.testing.assert_allclose(got[2:6, 4:12, :3], vals[2:6, 4:12, :3] * 0.5, atol=tol)


def test_edit_with_selection_and_reference_layers(app, loop, conn, engine):
    doc, src = photo_doc(app, 16, 12)
    ref = doc.createNode("style ref", "paintlayer")
    ref.setPixelData(bgra_image(6, 5, 9), 3, 2, 6, 5)
    doc.rootNode().addChildNode(ref, src)
    doc.setSelection(mk.Selection())
    doc.selection().select(4, 2, 6, 5, 255)
    task = run_task(new_task(conn, loop, doc, src, hairstyle_mode="reference",
                             hairstyle_ref=kritadoc.node_id(ref), colour_mode="rgb", rgb="#102030",
                             faces="selection"), loop)
    assert task.state == "done", task.error
    req = engine.requests[-1]
    assert (req.hairstyle_ref.width, req.hairstyle_ref.height) == (6, 5) and req.rgb == (16, 32, 48)
    sel = np.frombuffer(req.selection.tobytes(), np.uint8).reshape(12, 16)
    assert req.selection.channels == "A" and sel.sum() == 255 * 30 and sel[2:7, 4:10].min() == 255
    assert task.outcome.layer_name == "HairCLIP: hairstyle of style ref, #102030"


def test_a_square_1024_reference_layer_is_sent_as_an_aligned_crop_unless_told_otherwise(app, loop, conn, engine):
    doc, src = photo_doc(app, 1024, 1024, show=False)
    square, other = doc.createNode("aligned ref", "paintlayer"), doc.createNode("photo ref", "paintlayer")
    square.setPixelData(bgra_image(1024, 1024, 3), 0, 0, 1024, 1024)
    other.setPixelData(bgra_image(600, 800, 4), 10, 20, 600, 800)
    doc.rootNode().addChildNode(square, src)
    doc.rootNode().addChildNode(other, src)
    refs = dict(hairstyle_mode="reference", hairstyle_ref=kritadoc.node_id(square),
                colour_mode="reference", colour_ref=kritadoc.node_id(other))
    for overrides, expected in (({}, ("hairstyle_ref",)),
                                ({"hairstyle_ref_aligned": "no", "colour_ref_aligned": "yes"}, ("colour_ref",))):
        task = run_task(new_task(conn, loop, doc, src, **refs, **overrides), loop, timeout=60)
        assert task.state == "done", task.error
        assert engine.requests[-1].aligned == expected


def test_selection_mode_without_a_selection_says_so(app, loop, conn):
    doc, src = photo_doc(app, 8, 8)
    task = run_task(new_task(conn, loop, doc, src, faces="selection"), loop)
    assert task.state == "failed" and "no selection" in jobs.error_text(task.error)
    assert len(doc.rootNode().childNodes()) == 1


def test_backend_errors_are_shown_as_they_are(app, loop, conn):
    doc, src = photo_doc(app, 8, 8)
    task = run_task(new_task(conn, loop, doc, src, hairstyle="fail"), loop)
    assert task.state == "failed" and jobs.error_text(task.error) == "No face was found in the layer."
    assert len(doc.rootNode().childNodes()) == 1


def test_unsupported_layer_fails_before_anything_is_sent(app, loop, conn, engine):
    doc = app.createDocument(8, 8, "gray", "GRAYA", "U8", "", 72.0)
    app.show(doc)
    n = len(engine.requests)
    task = run_task(new_task(conn, loop, doc, doc.rootNode().childNodes()[0]), loop)
    assert task.state == "failed" and "grayscale" in jobs.error_text(task.error)
    assert len(engine.requests) == n


def test_not_running_explains_how_to_start_the_server(app, loop):
    conn = jobs.Connection("tcp://127.0.0.1:9", pool=SyncPool(), timeout=0.3)
    doc, src = photo_doc(app, 8, 8)
    task = run_task(new_task(conn, loop, doc, src), loop)
    assert task.state == "failed" and "hairclip serve" in jobs.error_text(task.error)
    assert conn.state == "not_running" and "hairclip serve" in conn.message


def test_cancel_stops_the_job_and_adds_nothing(app, loop, conn, engine):
    doc, src = photo_doc(app, 8, 8)
    engine.gate.clear()
    try:
        task = new_task(conn, loop, doc, src)
        task.start()
        assert loop.run(lambda: task.state == "running" and task.stage == "edit", tick=task.tick)
        task.cancel()
        assert loop.run(lambda: task.finished, tick=task.tick)
    finally:
        engine.gate.set()
    assert task.state == "cancelled" and len(doc.rootNode().childNodes()) == 1


def test_strength_rerender_updates_the_same_layer(app, loop, conn, engine):
    doc, src = photo_doc(app, 16, 8)
    first = run_task(new_task(conn, loop, doc, src, hairstyle="afro"), loop)
    layer = kritadoc.find_node(doc, first.outcome.layer_id)
    px1 = layer.pixelData(0, 0, 16, 8)
    again = run_task(first.with_strength(0.4), loop)
    assert again.state == "done" and again.outcome.layer_id == first.outcome.layer_id
    assert again.outcome.undo_steps == 0 and layer.name() == "HairCLIP: afro, purple (strength 0.4)"
    assert type(engine.requests[-1]).__name__ == "RerenderRequest" and layer.pixelData(0, 0, 16, 8) != px1
    assert len(doc.rootNode().childNodes()) == 2
    engine.cache.clear()  # the server forgot the edit: the task falls back to a full edit, same layer
    third = run_task(again.with_strength(0.8), loop)
    assert third.state == "done" and third.outcome.layer_id == first.outcome.layer_id
    assert type(engine.requests[-1]).__name__ == "EditRequest" and len(doc.rootNode().childNodes()) == 2


def old_hair_of(node):
    masks = [c for c in node.childNodes() if c.type() == "selectionmask"]
    return masks[0] if masks else None


@pytest.mark.parametrize("version", ["5.1.5", "5.2.2"])
def test_hair_left_outside_the_crop_becomes_a_selection_mask_on_the_new_layer(version, endpoint, engine):
    app = mk.Krita.reset(version)
    loop = Loop(app)
    conn = jobs.Connection(endpoint, pool=SyncPool(), timeout=3.0)
    doc, src = photo_doc(app, 16, 8)
    before = src.pixelData(0, 0, 16, 8)
    task = run_task(new_task(conn, loop, doc, src, hairstyle="long", colour_mode="none"), loop)
    out = task.outcome
    assert engine.requests[-1].whole_hair is None  # "auto": left to the server
    assert out.old_hair and out.mask and out.warning == (
        "25% of the hair lies outside the face crop and was left as it was: recolour it with 'Long hair beyond "
        "the face crop', or paint over it. The selection 'HairCLIP: old hair outside the crop' outlines it.")
    layer = kritadoc.find_node(doc, out.layer_id)
    old = old_hair_of(layer)
    assert old.name() == "HairCLIP: old hair outside the crop"
    assert old.selection().pixelData(0, 0, 16, 8) == long_hair_mask(16, 8)  # byte for byte, in place
    assert mask_of(layer).pixelData(0, 0, 16, 8) != old.selection().pixelData(0, 0, 16, 8)
    assert doc.selection() is None  # inactive: it selects nothing until the user picks it
    assert src.pixelData(0, 0, 16, 8) == before and not src.childNodes()
    steps = 2 if version == "5.1.5" else 1  # the layer (and 5.1's mask action): none of its own
    assert len(doc.undo_stack) == steps
    for _ in range(steps):
        doc.undo()
    assert [n.name() for n in doc.rootNode().childNodes()] == ["Background"]  # it goes with the layer
    conn.close()


def test_a_whole_hair_edit_and_an_older_server_add_no_selection_and_no_warning(app, loop, conn, engine):
    doc, src = photo_doc(app, 16, 8)
    task = run_task(new_task(conn, loop, doc, src, hairstyle="long", colour_mode="none", whole_hair="yes"), loop)
    assert engine.requests[-1].whole_hair is True
    assert not task.outcome.old_hair and task.outcome.warning == ""
    assert old_hair_of(kritadoc.find_node(doc, task.outcome.layer_id)) is None
    plain = run_task(new_task(conn, loop, doc, src, hairstyle="afro"), loop)  # no meta, no mask: as before
    assert not plain.outcome.old_hair and plain.outcome.warning == ""


def test_a_strength_rerender_keeps_one_old_hair_selection(app, loop, conn, engine):
    doc, src = photo_doc(app, 16, 8)
    first = run_task(new_task(conn, loop, doc, src, hairstyle="long", colour_mode="none", whole_hair="no"), loop)
    assert engine.requests[-1].whole_hair is False
    again = run_task(first.with_strength(0.5), loop)
    layer = kritadoc.find_node(doc, first.outcome.layer_id)
    assert again.outcome.layer_id == first.outcome.layer_id and again.outcome.old_hair
    masks = [c for c in layer.childNodes() if c.type() == "selectionmask"]
    assert len(masks) == 1 and masks[0].selection().pixelData(0, 0, 16, 8) == long_hair_mask(16, 8)


# ---------------------------------------------------------------------------------------------- dialog model

def _model(app, loop, endpoint):
    app.writeSetting("hairclip", "settings", EditSettings(endpoint=endpoint, hairstyle="afro").to_json())
    return model_mod.EditModel(app, model_mod.SettingsStore(app), loop.call_later,
                               lambda ep: jobs.Connection(ep, pool=SyncPool(), timeout=0.5))


def test_model_remembers_inputs_and_connects(app, loop, endpoint):
    m = _model(app, loop, endpoint)
    assert m.settings.hairstyle == "afro" and m.server_state == "idle"
    m.connect()
    m.tick()
    assert m.server_state == "connected" and m.presets == (["afro", "bob cut"], ["purple"])
    m.update(colour="red", strength=0.5)
    assert EditSettings.from_json(app.readSetting("hairclip", "settings", "")).colour == "red"


def test_model_not_running_state(app, loop):
    m = _model(app, loop, "tcp://127.0.0.1:9")
    m.connect()
    m.tick()
    assert m.server_state == "not_running" and "hairclip serve" in m.connection.message
    assert m.presets[0][:2] == ["afro", "bob cut"] and len(m.presets[0]) == 44  # the offline list


def test_model_apply_and_strength_slider(app, loop, endpoint, engine):
    m = _model(app, loop, endpoint)
    m.apply()
    assert m.error == "Open an image first."
    doc, src = photo_doc(app, 16, 8)
    m.apply()
    assert loop.run(lambda: not m.busy, tick=m.tick)
    assert m.error == "" and m.note.startswith("Added 'HairCLIP: afro, purple'") and m.last is not None
    assert m.server_state == "connected"  # the edit connected on its own; the dialog shows it
    n = len(engine.requests)
    m.update(strength=0.3)
    m.update(strength=0.6)  # a drag: only the resting value is re-rendered
    assert loop.run(lambda: len(engine.requests) > n and not m.busy, tick=m.tick)
    assert len(engine.requests) == n + 1 and engine.requests[-1].strength == 0.6
    assert m.note.startswith("Updated") and len(doc.rootNode().childNodes()) == 2
    m.update(hairstyle="bob cut")  # a new input: the next Apply is a new edit, not a re-render
    assert m.last is None


def test_model_keeps_the_whole_hair_choice_and_shows_the_warning_until_the_next_edit(app, loop, endpoint, engine):
    m = _model(app, loop, endpoint)
    assert m.settings.whole_hair == "auto"  # the server's default
    m.update(whole_hair="no", hairstyle="long", colour_mode="none")
    assert EditSettings.from_json(app.readSetting("hairclip", "settings", "")).whole_hair == "no"
    assert model_mod.EditModel(app, model_mod.SettingsStore(app), loop.call_later).settings.whole_hair == "no"
    doc, src = photo_doc(app, 16, 8)
    m.apply()
    assert loop.run(lambda: not m.busy, tick=m.tick)
    assert engine.requests[-1].whole_hair is False
    assert m.warning.startswith("25% of the hair lies outside the face crop") and "HairCLIP: old hair" in m.warning
    m.update(whole_hair="yes")
    m.apply()
    assert m.warning == ""  # cleared as the next edit starts
    assert loop.run(lambda: not m.busy, tick=m.tick)
    assert engine.requests[-1].whole_hair is True and m.warning == ""


def test_extension_adds_filters_menu_action(app):
    ext = extension.HairclipExtension(app)
    ext.createActions(app.activeWindow())
    action = app.activeWindow().actions["hairclip_edit"]
    assert action.menu == "filter" and action.text == "HairCLIP..."


def test_floats_survive_wire_conversion_exactly_for_srgb_f32():
    layout = krita_layout("RGBA", "F32", "sRGB-elle-V2-srgbtrc.icc")
    raw = struct.pack("<8f", 0.25, 0.5, 0.75, 1.0, 0.1, 0.2, 0.3, 0.4)
    assert to_wire(raw, 2, 1, layout).tobytes() == raw


# ---------------------------------------------------------------------------------------------- dialog widgets

def _qt_binding() -> str | None:
    for name in ("PyQt6", "PyQt5"):  # whichever Krita would bring; the plug-in's shim follows it
        if importlib.util.find_spec(name) is not None:
            return name
    return None


@pytest.mark.skipif(_qt_binding() is None, reason="needs PyQt6 or PyQt5, which only Krita's Python has here; "
                                                  "tests/e2e drives the dialog in real Krita")
def test_dialog_widgets_follow_the_model(app, endpoint, engine, monkeypatch):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    widgets = importlib.import_module(f"{_qt_binding()}.QtWidgets")
    qapp = widgets.QApplication.instance() or widgets.QApplication([])
    ui = importlib.import_module("hairclip_krita.ui")
    loop = Loop(app)
    m = _model(app, loop, "tcp://127.0.0.1:9")
    d = ui.EditDialog(m)
    assert d.style_text.count() == 44 and d.style_text.currentText() == "afro"  # offline presets
    d.colour_mode.setCurrentIndex(d.colour_mode.findData("rgb"))
    assert m.settings.colour_mode == "rgb" and d.rgb.isVisibleTo(d) and not d.colour_text.isVisibleTo(d)
    d.strength.setValue(150)
    assert m.settings.strength == 1.5 and d.strength_value.text() == "1.50"
    d.faces.setCurrentIndex(d.faces.findData("selection"))
    assert m.settings.faces == "selection"
    assert not d.style_aligned.isVisibleTo(d)
    assert d.whole_hair.currentData() == "auto" and d.whole_hair.isVisibleTo(d)
    d.whole_hair.setCurrentIndex(d.whole_hair.findData("no"))
    assert m.settings.whole_hair == "no"
    d.style_mode.setCurrentIndex(d.style_mode.findData("reference"))
    assert d.style_aligned.isVisibleTo(d) and d.style_aligned.currentData() == "auto"
    assert "1024x1024" in d.style_aligned.currentText() and d.style_aligned.toolTip() == ALIGNED_RULE
    d.style_aligned.setCurrentIndex(d.style_aligned.findData("yes"))
    assert m.settings.hairstyle_ref_aligned == "yes"
    d.style_mode.setCurrentIndex(d.style_mode.findData("text"))
    m.connect()
    m.tick()
    assert d.server_state.text() == "Not running" and d.server_help.isVisibleTo(d)
    assert "hairclip serve" in d.server_help.text()
    d.endpoint.setText(endpoint)
    d.endpoint.editingFinished.emit()
    m.tick()
    assert d.server_state.text() == "Connected" and not d.server_help.isVisibleTo(d)
    assert d.style_text.count() == 2  # the server's own list
    d.faces.setCurrentIndex(d.faces.findData("all"))
    doc, src = photo_doc(app, 16, 8)
    d.apply_button.click()
    assert d.cancel_button.isEnabled() and not d.apply_button.isEnabled()
    assert loop.run(lambda: not m.busy, tick=m.tick)
    qapp.processEvents()
    assert "Added 'HairCLIP: afro, #7f3fbf (strength 1.5)'" in d.status.text() and not d.error.isVisibleTo(d)
    assert engine.requests[-1].whole_hair is False and not d.warning.isVisibleTo(d)  # no long hair here
    d.close()


def _dialog(app, endpoint, monkeypatch):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    widgets = importlib.import_module(f"{_qt_binding()}.QtWidgets")
    qapp = widgets.QApplication.instance() or widgets.QApplication([])
    ui = importlib.import_module("hairclip_krita.ui")
    loop = Loop(app)
    m = _model(app, loop, endpoint)
    return ui.EditDialog(m), m, loop, qapp


@pytest.mark.skipif(_qt_binding() is None, reason="needs PyQt6 or PyQt5")
def test_dialog_labels_come_from_the_shared_vocabulary(app, endpoint, monkeypatch):
    from hairclip_shared.wording import COLOUR_MODE_LABELS, HAIRSTYLE_MODE_LABELS, SERVER_LABEL, STOP_EDIT

    d, m, loop, qapp = _dialog(app, endpoint, monkeypatch)
    assert [d.style_mode.itemText(i) for i in range(d.style_mode.count())] == list(HAIRSTYLE_MODE_LABELS.values())
    assert [d.colour_mode.itemText(i) for i in range(d.colour_mode.count())] == list(COLOUR_MODE_LABELS.values())
    assert d.server_label.text() == SERVER_LABEL + ":"  # the server row says what it is about
    assert d.cancel_button.text() == STOP_EDIT and not d.cancel_button.isVisibleTo(d)  # only while a job runs
    d.colour_mode.setCurrentIndex(d.colour_mode.findData("rgb"))
    m.update(rgb="#7f3fbf")
    assert d.rgb_hex.text() == "#7f3fbf" and d.rgb.text() == "" and not d.rgb.icon().isNull()
    assert d.rgb.icon().pixmap(16, 16).toImage().pixelColor(8, 8).name() == "#7f3fbf"  # a swatch of the colour
    d.close()


@pytest.mark.skipif(_qt_binding() is None, reason="needs PyQt6 or PyQt5")
def test_dialog_disables_apply_with_a_hint_until_a_reference_layer_is_chosen(app, endpoint, monkeypatch):
    from hairclip_shared.wording import NEED_HAIRSTYLE_REF

    d, m, loop, qapp = _dialog(app, endpoint, monkeypatch)
    doc, src = photo_doc(app, 16, 8)
    d._fill_layers()
    assert d.apply_button.isEnabled() and not d.hint.isVisibleTo(d)
    d.style_mode.setCurrentIndex(d.style_mode.findData("reference"))
    assert not d.apply_button.isEnabled() and d.hint.isVisibleTo(d) and d.hint.text() == NEED_HAIRSTYLE_REF
    d.style_ref.setCurrentIndex(1)  # the first layer in the list
    assert m.settings.hairstyle_ref and d.apply_button.isEnabled() and not d.hint.isVisibleTo(d)
    d.close()


@pytest.mark.skipif(_qt_binding() is None, reason="needs PyQt6 or PyQt5")
def test_switching_to_a_dead_server_clears_the_outcome_and_disables_apply(app, endpoint, monkeypatch):
    from hairclip_shared.wording import NEED_SERVER

    d, m, loop, qapp = _dialog(app, endpoint, monkeypatch)
    doc, src = photo_doc(app, 16, 8)
    d.apply_button.click()
    assert d.cancel_button.isVisibleTo(d) and d.cancel_button.isEnabled()
    assert loop.run(lambda: not m.busy, tick=m.tick)
    assert "Added 'HairCLIP" in d.status.text() and not d.cancel_button.isVisibleTo(d)
    d.endpoint.setText("tcp://127.0.0.1:9")
    d.endpoint.editingFinished.emit()
    assert d.status.text() == "" and m.last is None  # no stale success line
    m.tick()
    assert m.server_state == "not_running" and not d.apply_button.isEnabled() and d.hint.text() == NEED_SERVER
    assert "hairclip serve" in d.server_help.text() and d.server_help.isVisibleTo(d)
    d.close()


def test_progress_is_not_full_while_the_result_is_still_arriving(app, loop, endpoint, engine):
    m = _model(app, loop, endpoint)
    photo_doc(app, 16, 8)
    m.apply()
    seen = []
    # while the edit runs: a tick that finishes it hides the bar (progress 0.0 once not busy), which is no step back
    assert loop.run(lambda: not m.busy, tick=lambda: (m.tick(), m.busy and seen.append((m.task.stage, m.progress))))
    receiving = [p for stage, p in seen if stage in ("receiving", "inserting")]
    assert receiving and max(receiving) < 1.0
    assert [p for _, p in seen] == sorted(p for _, p in seen)

"""The Krita docker's model (plugin_krita/hairclip/live.py) without Krita: generate -> preview -> history -> Apply,
against a real server running the box test engine of test_krita_plugin, and tests/mock_krita."""

from __future__ import annotations

import importlib
import threading

import numpy as np
import pytest

from hairclip.server import Server
from hairclip_shared import Image
from hairclip_shared.editing import EditSettings
from hairclip_shared.protocol import SLIDER_STEP, Limits, RerenderRequest
from test_krita_plugin import BoxEngine, Loop, SyncPool, jobs, kritadoc, mask_of, model_mod, photo_doc

live = importlib.import_module("hairclip_krita.live")  # the plug-in package, as test_krita_plugin loads it


class PreviewEngine(BoxEngine):
    """The box engine, plus a first picture (the photo, grey) streamed before the final layer, and renders
    ahead: while idle, the grid strengths next to the last one asked, which a ``ready_only`` look takes."""

    def __init__(self):
        super().__init__()
        self.lock, self.plan, self.ahead, self.looks = threading.Lock(), [], {}, []

    def edit(self, req, ctx):
        if req.preview:
            s = req.source
            ctx.progress("first_picture", 1.0, preview=Image(s.width, s.height, bytes([77]) * (s.width * s.height * 3),
                                                             "RGB", "u8"))
        result = super().edit(req, ctx)
        with self.lock:
            self.ahead.clear()
            self._plan(ctx.job_id, req.strength)
        return result

    def rerender(self, r, ctx):
        result = super().rerender(r, ctx)
        self.cache[ctx.job_id] = self.cache[r.base]
        with self.lock:
            self._plan(r.base, r.strength)
        return result

    def _plan(self, base, strength):
        k = round(strength / SLIDER_STEP)
        grid = {round(j * SLIDER_STEP, 6) for j in (k - 1, k, k + 1)} - {round(strength, 6)}
        self.plan = [(base, s) for s in sorted(grid, key=lambda s: abs(s - strength)) if (base, s) not in self.ahead]

    def render_ahead(self, interrupted):
        with self.lock:
            if not self.plan:
                return False
            base, s = self.plan.pop(0)
        self.ahead[(base, s)] = self._run(self.cache[base], s, Quiet())
        return bool(self.plan)

    def ready(self, r, job_id):
        self.looks.append(r.strength)
        with self.lock:
            result = self.ahead.get((r.base, r.strength))
            if result is None and (r.base, r.strength) not in self.plan:
                self.plan = [(r.base, r.strength)] + [p for p in self.plan if p != (r.base, r.strength)]
        return result


class Quiet:
    """The progress line of a render ahead: nobody listens."""

    def progress(self, stage, fraction, preview=None):
        pass

    def check(self):
        pass


@pytest.fixture(scope="module")
def engine():
    return PreviewEngine()


@pytest.fixture(scope="module")
def endpoint(engine):
    with Server(engine, "tcp://127.0.0.1:*", limits=Limits(lease_s=5.0), shutdown_grace=2) as srv:
        yield srv.endpoint


@pytest.fixture
def app():
    import krita as mk

    return mk.Krita.reset()


@pytest.fixture
def loop(app):
    return Loop(app)


@pytest.fixture
def model(app, loop, endpoint):
    app.writeSetting("hairclip", "settings", EditSettings(endpoint=endpoint, hairstyle="afro").to_json())
    m = live.LiveModel(app, model_mod.SettingsStore(app), loop.call_later,
                       lambda ep: jobs.Connection(ep, pool=SyncPool(), timeout=2.0), pool=SyncPool())
    yield m
    m.close()


def settle(m, loop, cond, timeout=10.0):
    assert loop.run(cond, tick=m.tick, timeout=timeout), (m.status, m.error)


def generated(m, loop):
    m.generate()
    settle(m, loop, lambda: not m.generating)
    assert m.error == "" and m.current is not None, m.error
    return m.current


def layer_ids(doc):
    return [kritadoc.node_id(n) for n in doc.rootNode().childNodes()]


def test_generate_shows_the_first_picture_then_the_result_and_adds_nothing(model, app, loop, engine):
    doc, src = photo_doc(app, 32, 24)
    ids, before = layer_ids(doc), src.pixelData(0, 0, 32, 24)
    engine.gate.clear()  # hold the edit after its first picture
    try:
        model.generate()
        settle(model, loop, lambda: model.frame().kind == "first")
        f = model.frame()
        assert (f.image.width, f.image.height) == (32, 24) and f.image.tobytes()[:3] == bytes([77]) * 3
    finally:
        engine.gate.set()
    settle(model, loop, lambda: not model.generating)
    entry = model.current
    assert [e.id for e in model.history.entries] == [entry.id]
    assert entry.conditions == "afro, purple" and entry.strength == 1.0 and entry.thumbnail.width <= 64
    f = model.frame()
    assert f.kind == "exact" and f.strength == 1.0
    # The picture is the result laid over the photo: the box darkened by half, the rest the photo as it is.
    px = np.frombuffer(f.image.tobytes(), np.uint8).reshape(24, 32, 4)
    photo = np.frombuffer(before, np.uint8).reshape(24, 32, 4)[..., [2, 1, 0, 3]]  # BGRA -> RGBA
    assert np.array_equal(px[0], photo[0]) and np.all(np.abs(px[12, 16, :3] - photo[12, 16, :3] * 0.5) <= 1)
    assert layer_ids(doc) == ids and src.pixelData(0, 0, 32, 24) == before


def test_dragging_crossfades_renders_from_the_server_and_release_shows_the_exact_one(model, app, loop, engine):
    doc, src = photo_doc(app, 32, 24)
    ids, before = layer_ids(doc), src.pixelData(0, 0, 32, 24)
    generated(model, loop)
    n = len(engine.requests)
    model.drag(0.65)
    settle(model, loop, lambda: model.frame().kind == "crossfade")
    assert {0.6, 0.7} <= set(engine.looks)  # looked at; the looks moved the server's renders ahead there
    assert not any(isinstance(r, RerenderRequest) for r in engine.requests[n:])  # and nothing was queued
    assert model.frame().parts == ((0.6, pytest.approx(0.5)), (0.7, pytest.approx(0.5)))
    assert model.current.strength == 1.0  # the entry changes only on release
    model.release(0.65)
    settle(model, loop, lambda: model.frame().kind == "exact")
    assert model.frame().strength == 0.65 and model.current.strength == 0.65
    assert engine.requests[-1].strength == 0.65
    assert layer_ids(doc) == ids and src.pixelData(0, 0, 32, 24) == before  # still nothing in the document


def test_apply_adds_the_entry_at_its_strength_as_a_masked_layer_above_the_source(model, app, loop, engine):
    doc, src = photo_doc(app, 32, 24)
    ids, before = layer_ids(doc), src.pixelData(0, 0, 32, 24)
    generated(model, loop)
    model.release(0.4)
    settle(model, loop, lambda: model.frame().kind == "exact")
    n = len(engine.requests)
    model.apply()
    settle(model, loop, lambda: model.applying is not None and model.applying.finished)
    assert len(engine.requests) == n  # the render shown is the one applied: no new server work
    out = model.applying.outcome
    after = layer_ids(doc)
    assert len(after) == len(ids) + 1 and after.index(out.layer_id) == after.index(kritadoc.node_id(src)) + 1
    layer = kritadoc.find_node(doc, out.layer_id)
    assert layer.name() == "HairCLIP: afro, purple (strength 0.4)" and mask_of(layer) is not None
    colour = np.frombuffer(layer.pixelData(0, 0, 32, 24), np.uint8).reshape(24, 32, 4)
    photo = np.frombuffer(before, np.uint8).reshape(24, 32, 4)
    assert np.all(np.abs(colour[12, 16, :3] - photo[12, 16, :3] * 0.8) <= 1)  # the box at strength 0.4
    assert src.pixelData(0, 0, 32, 24) == before and model.note.startswith("Added 'HairCLIP: afro, purple")


def test_apply_before_the_exact_render_arrives_waits_for_it(model, app, loop, engine):
    doc, src = photo_doc(app, 32, 24)
    generated(model, loop)
    engine.gate.clear()
    try:
        model.release(1.25)
        model.apply()
        assert model.applying is None and model.pending
    finally:
        engine.gate.set()
    settle(model, loop, lambda: model.applying is not None and model.applying.finished)
    layer = kritadoc.find_node(doc, model.applying.outcome.layer_id)
    assert layer.name() == "HairCLIP: afro, purple (strength 1.25)"


def test_history_entries_can_be_chosen_applied_or_dropped(model, app, loop, engine):
    doc, src = photo_doc(app, 32, 24)
    first = generated(model, loop)
    app.writeSetting("hairclip", "settings",
                     EditSettings(endpoint=model.settings.endpoint, hairstyle="bob cut", colour="blond").to_json())
    second = generated(model, loop)
    assert [e.conditions for e in model.history.entries] == ["bob cut, blond", "afro, purple"]
    model.select(first.id)
    assert model.current is first
    model.drop(second.id)
    assert [e.id for e in model.history.entries] == [first.id] and len(doc.rootNode().childNodes()) == 1
    model.apply(first.id)
    settle(model, loop, lambda: model.applying is not None and model.applying.finished)
    names = [n.name() for n in doc.rootNode().childNodes()]  # bottom to top
    assert names == [src.name(), "HairCLIP: afro, purple"], names  # the chosen entry, not the newer one
    model.drop()
    assert model.current is None and len(model.history) == 0 and model.frame().kind == "none"


def test_generate_without_a_document_says_so(model):
    model.generate()
    assert model.error == "Open an image first." and model.current is None

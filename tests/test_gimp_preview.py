"""The GIMP plug-in's OK after a preview, under FakeGimp (see test_gimp_plugin): the previewed render becomes the
layer, through the same steps as an edit, without a new server job. The dialog's preview pane itself (GTK) runs in
real GIMP 3 in tests/e2e/test_gimp_e2e.py; its state machine is hairclip_shared.preview's (tests/test_preview.py)."""

from __future__ import annotations

import numpy as np

from hairclip_shared import EditResult, Image
from test_gimp_plugin import FakeColor, FakeConfig, FakeImage, FakeProcedure, load_plugin, photo, server  # noqa: F401


def _config(plugin, **overrides) -> FakeConfig:
    proc = plugin.HairClip().do_create_procedure(plugin.PROC)
    assert isinstance(proc, FakeProcedure)
    values = proc.defaults()
    values.update(overrides)
    values["rgb"] = FakeColor(values["rgb"]) if isinstance(values["rgb"], str) else values["rgb"]
    return FakeConfig(values)


def test_ok_with_a_previewed_render_adds_it_as_the_layer_without_asking_the_server(monkeypatch, server):  # noqa: F811
    plugin, gimp = load_plugin(monkeypatch)
    image = FakeImage(40, 30)
    src = photo(image)
    before = src.px.copy()
    px = np.zeros((8, 12, 4), np.uint8)
    px[..., 0], px[:, :4, 3] = 200, 255  # red, the edit on the left third
    previewed = EditResult(Image(12, 8, px.tobytes(), "RGBA", "u8"))
    config = _config(plugin, server=server.endpoint, strength=0.55)
    layer = plugin.edit(image, [src], config, previewed)
    assert not server.test_engine.requests  # the render shown was the one applied
    assert [x.name for x in image.layers] == ["HairCLIP: bob cut, purple (strength 0.55)", "photo"]
    np.testing.assert_allclose(layer.px[..., 0], 200 / 255)
    mask = layer.mask.px[..., 0]
    assert (mask[:, :4] == 1).all() and (mask[:, 4:] == 0).all()
    np.testing.assert_array_equal(src.px, before)


def test_a_previewed_render_of_another_size_is_not_used(monkeypatch, server):  # noqa: F811
    plugin, gimp = load_plugin(monkeypatch)
    image = FakeImage(40, 30)
    src = photo(image)
    stale = EditResult(Image(4, 4, bytes(64), "RGBA", "u8"))  # the layer was resized while the dialog was open
    plugin.edit(image, [src], _config(plugin, server=server.endpoint), stale)
    assert len(server.test_engine.requests) == 1 and len(image.layers) == 2

"""hairclip_shared.editing: what both plug-ins do between their editor and the wire, without an editor."""

from __future__ import annotations

import ast
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hairclip_shared.editing import (
    ALIGNED_LABELS,
    ALIGNED_RULE,
    COLOURS,
    HAIRSTYLES,
    EditSettings,
    build_request,
    empty_layer_message,
    layer_name,
    not_running_message,
    presets,
    reference_is_aligned,
)
from hairclip_shared.pixels import (
    UnsupportedPixels,
    apply_mask,
    check_has_pixels,
    clip_rect,
    from_wire,
    gimp_layout,
    has_pixels,
    krita_layout,
    split_alpha,
    to_wire,
)
from hairclip_shared.protocol import BadRequest, Image, Limits, Rect, ServerInfo

BACKEND = Path(__file__).resolve().parents[1] / "backend" / "hairclip"


def _srgb(lin):
    lin = np.asarray(lin, float)
    return np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * np.abs(lin) ** (1 / 2.4) - 0.055)


# ---------------------------------------------------------------------------------------------- presets

def test_official_lists_match_the_backend():
    prompts = (BACKEND / "data" / "hairstyles.txt").read_text().splitlines()
    assert HAIRSTYLES == tuple(p.removesuffix(" hairstyle") for p in prompts) and len(HAIRSTYLES) == 44
    tree = ast.parse((BACKEND / "nets" / "mapper.py").read_text())
    colours = next(ast.literal_eval(n.value) for n in ast.walk(tree) if isinstance(n, ast.Assign)
                  and any(getattr(t, "id", None) == "COLOURS" for t in n.targets))
    assert COLOURS == colours and len(COLOURS) == 12


def test_presets_prefer_the_servers_lists():
    assert presets(None) == (list(HAIRSTYLES), list(COLOURS))
    info = ServerInfo("0.1", 1, "cpu", {}, ["afro"], ["teal"], Limits())
    assert presets(info) == (["afro"], ["teal"])
    empty = ServerInfo("0.1", 1, "cpu", {}, [], [], Limits())
    assert presets(empty) == (list(HAIRSTYLES), list(COLOURS))


def test_not_running_message_says_how_to_start():
    msg = not_running_message("tcp://127.0.0.1:5570")
    assert "tcp://127.0.0.1:5570" in msg and "hairclip serve" in msg


def test_not_running_message_says_each_thing_once_and_keeps_a_cause_that_adds_something():
    endpoint = "tcp://127.0.0.1:5570"
    same = not_running_message(endpoint, f"No HairCLIP server answered at {endpoint} within 5 s.")
    assert same == not_running_message(endpoint) and same.count(endpoint) == 1
    lost = not_running_message(endpoint, f"Lost the connection to the HairCLIP server at {endpoint}.")
    assert lost.startswith("Lost the connection") and lost.count(endpoint) == 1 and "hairclip serve" in lost


@pytest.mark.parametrize("layout", [krita_layout("RGBA", "U8", ""), krita_layout("RGBA", "U16", ""),
                                    krita_layout("RGBA", "F16", ""), krita_layout("RGBA", "F32", ""),
                                    gimp_layout("u8-non-linear"), gimp_layout("float-linear")])
def test_a_layer_has_pixels_when_any_alpha_is_above_zero(layout):
    bpp, n = layout.bytes_per_pixel, 5
    alpha_at = layout.order.index("A") * (bpp // 4)
    data = bytearray(b"\x7f" * bpp * n)  # colour everywhere
    for i in range(n):
        data[i * bpp + alpha_at:i * bpp + alpha_at + bpp // 4] = bytes(bpp // 4)
    assert not has_pixels(bytes(data), layout)
    with pytest.raises(BadRequest) as e:
        check_has_pixels(bytes(data), layout, "colour reference", "blank")
    assert e.value.message == empty_layer_message("colour reference", "blank")
    data[3 * bpp + alpha_at + bpp // 4 - 1] = 1  # one pixel's alpha, in its most significant byte
    assert has_pixels(bytes(data), layout)
    check_has_pixels(bytes(data), layout, "colour reference", "blank")


# ---------------------------------------------------------------------------------------------- settings

def test_settings_round_trip_through_json():
    s = EditSettings(hairstyle="pixie cut", colour_mode="rgb", rgb="#102030", strength=1.25,
                     faces="selection")
    assert EditSettings.from_json(s.to_json()) == s


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", '{"strength": "high"}', '{"strength": 9}',
                                  '{"strength": true}', '{"faces": "some"}', '{"rgb": "purple"}',
                                  '{"hairstyle_mode": 3}', '{"endpoint": "localhost"}', '{"new_key": 1}'])
def test_bad_or_foreign_settings_fall_back_to_defaults(text):
    assert EditSettings.from_json(text) == EditSettings()


def test_settings_keep_the_valid_fields_of_a_partly_bad_file():
    s = EditSettings.from_json('{"hairstyle": "afro", "strength": 7, "colour": "blond", "strength_x": 1}')
    assert (s.hairstyle, s.colour, s.strength) == ("afro", "blond", 1.0)
    assert EditSettings.from_json('{"strength": 2}').strength == 2.0


# ---------------------------------------------------------------------------------------------- requests

SRC = Image(4, 2, bytes(32), "BGRA")


def test_build_request_from_text_presets():
    req = build_request(EditSettings(hairstyle=" bob cut ", colour="purple", strength=0.5), SRC)
    assert (req.hairstyle, req.colour, req.strength, req.faces) == ("bob cut", "purple", 0.5, "all")
    assert (req.out_channels, req.out_depth) == ("BGRA", "u8")  # the result comes back in the layer's layout


def test_build_request_rgb_references_and_selection():
    ref = Image(3, 3, bytes(27), "RGB")
    mask = Image(4, 2, bytes(8), "A")
    s = EditSettings(hairstyle_mode="reference", colour_mode="rgb", rgb="#7f3fbf", faces="selection")
    req = build_request(s, SRC, hairstyle_ref=ref, selection=mask)
    assert req.hairstyle_ref is ref and req.rgb == (127, 63, 191) and req.selection is mask
    req = build_request(EditSettings(hairstyle_mode="none", colour_mode="reference"), SRC, colour_ref=ref)
    assert req.colour_ref is ref and req.hairstyle is None
    req = build_request(EditSettings(faces="selection"), SRC, selection=Rect(0, 0, 2, 2))
    assert req.selection == Rect(0, 0, 2, 2)


@pytest.mark.parametrize("mode, size, aligned", [
    ("auto", (1024, 1024), True), ("auto", (1024, 1023), False), ("auto", (2048, 2048), False),
    ("auto", (512, 512), False), ("yes", (300, 200), True), ("no", (1024, 1024), False),
])
def test_a_reference_is_an_aligned_crop_when_told_so_or_when_square_1024(mode, size, aligned):
    assert reference_is_aligned(mode, *size) is aligned
    ref = Image(*size, bytes(3 * size[0] * size[1]), "RGB")
    s = EditSettings(hairstyle_mode="reference", colour_mode="reference", hairstyle_ref_aligned=mode)
    req = build_request(s, SRC, hairstyle_ref=ref, colour_ref=Image(4, 4, bytes(48), "RGB"))
    assert req.aligned == (("hairstyle_ref",) if aligned else ())


def test_the_aligned_rule_is_stated_where_the_user_chooses():
    assert "1024x1024" in ALIGNED_LABELS["auto"] and "1024x1024" in ALIGNED_RULE
    assert EditSettings.from_json('{"colour_ref_aligned": "maybe", "hairstyle_ref_aligned": "no"}') == EditSettings(
        hairstyle_ref_aligned="no")
    # text conditions never carry an aligned flag, whatever the setting
    assert build_request(EditSettings(hairstyle_ref_aligned="yes"), SRC).aligned == ()


@pytest.mark.parametrize("settings_,kw,match", [
    (EditSettings(hairstyle="  "), {}, "Type a hairstyle"),
    (EditSettings(colour=""), {}, "Type a hair colour"),
    (EditSettings(hairstyle_mode="reference"), {}, "whose hairstyle"),
    (EditSettings(colour_mode="reference"), {}, "whose hair colour"),
    (EditSettings(hairstyle_mode="none", colour_mode="none"), {}, "Nothing to change"),
    (EditSettings(faces="selection"), {}, "no selection"),
    (EditSettings(hairstyle="x" * 201), {}, "200"),
])
def test_build_request_says_what_to_fix(settings_, kw, match):
    with pytest.raises(BadRequest, match=match):
        build_request(settings_, SRC, **kw)


def test_layer_names_say_what_the_edit_was():
    assert layer_name(EditSettings()) == "HairCLIP: bob cut, purple"
    assert layer_name(EditSettings(colour_mode="rgb", rgb="7F3FBF", strength=1.5)) == \
        "HairCLIP: bob cut, #7f3fbf (strength 1.5)"
    assert layer_name(EditSettings(hairstyle_mode="reference", colour_mode="none", strength=0.0),
                      hairstyle_ref_name="Anna") == "HairCLIP: hairstyle of Anna (strength 0)"
    s = EditSettings(hairstyle_mode="none", colour_mode="reference")
    assert layer_name(s, colour_ref_name="ref") == "HairCLIP: colour of ref"


# ---------------------------------------------------------------------------------------------- layouts

@pytest.mark.parametrize("depth,order,sample", [("U8", "BGRA", "u8"), ("U16", "BGRA", "u16"),
                                                ("F16", "RGBA", "f16"), ("F32", "RGBA", "f32")])
def test_krita_layouts(depth, order, sample):
    lay = krita_layout("RGBA", depth, "sRGB-elle-V2-srgbtrc.icc")
    assert (lay.order, lay.sample, lay.gamma, lay.note) == (order, sample, None, "")
    assert krita_layout("RGBA", depth, "sRGB-elle-V2-g10.icc").gamma == 1.0


@pytest.mark.parametrize("model,word", [("GRAYA", "grayscale"), ("CMYKA", "CMYK"), ("LABA", "L*a*b*"),
                                        ("XYZA", "XYZ"), ("YCbCrA", "YCbCr")])
def test_krita_refuses_other_colour_models(model, word):
    with pytest.raises(UnsupportedPixels, match="RGB/Alpha") as e:
        krita_layout(model, "U8")
    assert word in e.value.message and e.value.code == "unsupported_pixels"


def test_krita_profile_curves_and_notes():
    assert krita_layout("RGBA", "U8", "sRGB-elle-V2-g22.icc").gamma == 2.2
    assert krita_layout("RGBA", "F32", "scRGB (linear)").gamma == 1.0
    assert "not sRGB" in krita_layout("RGBA", "U16", "Rec2020-elle-V4-g10.icc").note
    with pytest.raises(UnsupportedPixels):
        krita_layout("RGBA", "F64")


@pytest.mark.parametrize("precision,babl,sample", [
    ("u8-non-linear", "R'G'B'A u8", "u8"), ("GIMP_PRECISION_U16_LINEAR", "R'G'B'A u16", "u16"),
    ("u32-perceptual", "R'G'B'A u16", "u16"), ("half-linear", "R'G'B'A float", "f32"),
    ("float-non-linear", "R'G'B'A float", "f32"), ("double-linear", "R'G'B'A float", "f32")])
def test_gimp_layouts(precision, babl, sample):
    lay = gimp_layout(precision, "GIMP_RGB")
    assert (lay.babl, lay.sample, lay.order, lay.gamma) == (babl, sample, "RGBA", None)


def test_gimp_refuses_gray_and_indexed():
    for base in ("gray", "GIMP_INDEXED"):
        with pytest.raises(UnsupportedPixels, match="Image > Mode > RGB"):
            gimp_layout("u8-non-linear", base)


# ---------------------------------------------------------------------------------------------- pixels

def test_8_and_16_bit_srgb_go_on_the_wire_without_a_copy():
    data = bytearray(range(32))
    im = to_wire(data, 4, 2, krita_layout("RGBA", "U8"))
    assert im.data is data and (im.channels, im.depth) == ("BGRA", "u8")
    im16 = to_wire(memoryview(bytes(64)), 4, 2, krita_layout("RGBA", "U16"))
    assert (im16.channels, im16.depth, im16.nbytes) == ("BGRA", "u16", 64)
    assert from_wire(im, krita_layout("RGBA", "U8")) == bytes(data)


def test_channel_order_is_never_swapped():
    px = bytes([10, 20, 30, 40])  # B, G, R, A in Krita's 8-bit layout
    im = to_wire(px, 1, 1, krita_layout("RGBA", "U8"))
    assert im.channels == "BGRA" and im.tobytes() == px


def test_linear_float_is_encoded_clamped_and_alpha_left_alone():
    lay = krita_layout("RGBA", "F32", "sRGB-elle-V2-g10.icc")
    raw = struct.pack("<8f", 0.21404, 2.0, float("nan"), 0.5, -1.0, 0.001, 1.0, 1.5)
    vals = struct.unpack("<8f", to_wire(raw, 2, 1, lay).tobytes())
    assert vals[0] == pytest.approx(0.5, abs=1e-4) and vals[1] == 1.0 and vals[2] == 0.0
    assert vals[3] == 0.5 and vals[4] == 0.0 and vals[5] == pytest.approx(_srgb(0.001), abs=1e-6)
    assert vals[7] == 1.0  # alpha is clamped but never curved


def test_half_floats_become_f32_on_the_wire_and_back():
    lay = krita_layout("RGBA", "F16", "sRGB-elle-V2-srgbtrc.icc")
    vals = (0.25, 0.5, 0.75, 1.0, 0.125, 0.0, 1.0, 0.5)
    im = to_wire(struct.pack("<8e", *vals), 2, 1, lay)
    assert (im.depth, struct.unpack("<8f", im.tobytes())) == ("f32", vals)
    assert struct.unpack("<8e", from_wire(im, lay)) == vals


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["U8", "U16", "F16", "F32"]), st.sampled_from(["sRGB-elle-V2-srgbtrc.icc",
                                                                      "sRGB-elle-V2-g10.icc"]),
       st.integers(1, 5), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_round_trip_is_faithful(depth, profile, w, h, seed):
    """Editor bytes -> wire -> editor bytes, as a result that changed nothing would come back."""
    lay = krita_layout("RGBA", depth, profile)
    rng = np.random.default_rng(seed)
    v = rng.uniform(0, 1, (h, w, 4))
    dtype, scale = {"U8": ("u1", 255), "U16": ("<u2", 65535), "F16": ("<f2", 1), "F32": ("<f4", 1)}[depth]
    raw = (np.round(v * scale) if scale > 1 else v).astype(dtype).tobytes()
    back = np.frombuffer(from_wire(to_wire(raw, w, h, lay), lay), dtype).astype(float) / scale
    orig = np.frombuffer(raw, dtype).astype(float) / scale
    tol = {"U8": 0, "U16": 0, "F16": 1e-3, "F32": 1e-6}[depth]
    if lay.gamma == 1.0:  # 8/16-bit linear pass through a quantised sRGB encoding: a level or two
        tol = {"U8": 8 / 255, "U16": 3 / 65535, "F16": 2e-3, "F32": 1e-5}[depth]
    np.testing.assert_allclose(back, orig, atol=tol + 1e-12)
    np.testing.assert_array_equal(back.reshape(h, w, 4)[..., 3], orig.reshape(h, w, 4)[..., 3])


def test_to_wire_checks_the_buffer_size():
    with pytest.raises(BadRequest, match="needs 32 bytes"):
        to_wire(bytes(31), 4, 2, krita_layout("RGBA", "U8"))


def test_from_wire_wants_the_layout_it_asked_for():
    with pytest.raises(BadRequest, match="BGRA u16"):
        from_wire(Image(1, 1, bytes(4), "BGRA", "u8"), krita_layout("RGBA", "U16"))


@pytest.mark.parametrize("depth", ["U8", "U16", "F16", "F32"])
def test_split_alpha_gives_the_layer_the_sources_alpha_and_the_mask_the_edits(depth):
    lay = krita_layout("RGBA", depth)
    dtype, top = {"U8": ("u1", 255), "U16": ("<u2", 65535), "F16": ("<f2", 1.0), "F32": ("<f4", 1.0)}[depth]
    result = np.array([[0.1, 0.2, 0.3, 0.0], [0.4, 0.5, 0.6, 0.5], [0.7, 0.8, 0.9, 1.0]]) * top
    source = np.array([[1, 1, 1, 1.0], [1, 1, 1, 0.25], [1, 1, 1, 1.0]]) * top
    if top > 1:
        result, source = np.round(result), np.round(source)
    res_b, src_b = result.astype(dtype).tobytes(), source.astype(dtype).tobytes()
    colour, mask = split_alpha(res_b, lay, alpha_from=src_b)
    assert list(mask) == [0, 128, 255]
    c = np.frombuffer(colour, dtype).reshape(3, 4)
    np.testing.assert_array_equal(c[:, :3], result.astype(dtype)[:, :3])
    np.testing.assert_array_equal(c[:, 3], source.astype(dtype)[:, 3])
    opaque, _ = split_alpha(res_b, lay)
    assert (np.frombuffer(opaque, dtype).reshape(3, 4)[:, 3].astype(float) == top).all()


@pytest.mark.parametrize("depth", ["U8", "U16", "F32"])
def test_apply_mask_multiplies_alpha(depth):
    lay = krita_layout("RGBA", depth)
    dtype, top = {"U8": ("u1", 255), "U16": ("<u2", 65535), "F32": ("<f4", 1.0)}[depth]
    px = np.array([[9, 9, 9, top], [9, 9, 9, top], [9, 9, 9, top // 2 if top > 1 else 0.5]], dtype)
    out = np.frombuffer(apply_mask(px.tobytes(), lay, bytes([0, 255, 255])), dtype).reshape(3, 4)
    assert out[0, 3] == 0 and out[1, 3] == px[1, 3] and out[2, 3] == px[2, 3] and (out[:, :3] == 9).all()
    with pytest.raises(BadRequest, match="mask has 2 pixels"):
        apply_mask(px.tobytes(), lay, bytes(2))


def test_clip_rect_respects_offsets_and_canvas():
    assert clip_rect(-4, 6, 12, 8, 20, 10) == Rect(0, 6, 8, 4)
    assert clip_rect(0, 0, 20, 10, 20, 10) == Rect(0, 0, 20, 10)
    assert clip_rect(25, 0, 5, 5, 20, 10) is None and clip_rect(0, 0, 0, 5, 20, 10) is None

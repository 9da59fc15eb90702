"""The wire schema on its own, without sockets: what is accepted, what is refused, and with which code."""

from __future__ import annotations

import array
import math
import re
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from hairclip_shared import (
    BadRequest,
    Busy,
    Cancelled,
    EditRequest,
    EditResult,
    Face,
    HairclipError,
    Image,
    JobFailed,
    Limits,
    ProtocolError,
    Rect,
    RerenderRequest,
    ServerInfo,
)
from hairclip_shared.protocol import (
    ERROR_CODES,
    PROTOCOL_VERSION,
    REQUESTS,
    error_from_wire,
    pack,
    parse_images,
    parse_rgb,
    unpack_header,
)

ROOT = Path(__file__).resolve().parents[1]


def img(w: int = 4, h: int = 3, channels: str = "BGRA", depth: str = "u8") -> Image:
    n = w * h * {"RGBA": 4, "BGRA": 4, "RGB": 3, "BGR": 3, "A": 1}[channels] * {"u8": 1, "u16": 2, "f32": 4}[depth]
    return Image(w, h, bytes(range(256)) * (n // 256) + bytes(n % 256), channels, depth)


def wire_round_trip(req: EditRequest) -> EditRequest:
    params, specs, frames = req.to_wire()
    params = msgpack.unpackb(pack(params))  # what the server really sees: lists, not tuples
    return EditRequest.from_wire(params, parse_images(specs, [memoryview(f) for f in frames], Limits()))


def test_edit_request_survives_the_wire_unchanged():
    src = img(8, 6)
    for req in (
        EditRequest(src, hairstyle="afro", rgb="#FF0080", strength=1.25, faces=2, selection=(1, 2, 3, 4)),
        EditRequest(src, hairstyle_ref=img(5, 5, "RGB"), colour="purple", faces="largest", return_aligned=True,
                    preview=False, out_channels="RGBA", out_depth="u16"),
        EditRequest(src, colour_ref=img(2, 2, "RGBA"), selection=img(8, 6, "A")),
    ):
        assert wire_round_trip(req) == req


def test_defaults_follow_the_source_format():
    req = EditRequest(img(channels="BGRA", depth="u16"), hairstyle="bob cut")
    assert (req.out_channels, req.out_depth, req.strength, req.faces) == ("BGRA", "u16", 1.0, "all")
    assert EditRequest(img(channels="RGB"), hairstyle="afro").out_channels == "RGBA"
    assert EditRequest(img(), hairstyle="  afro  ").hairstyle == "afro"


@pytest.mark.parametrize("rgb, expected", [("#FF0080", (255, 0, 128)), ("ff0080", (255, 0, 128)),
                                           ([1, 2, 3], (1, 2, 3)), ((0, 0, 255), (0, 0, 255))])
def test_rgb_is_a_hex_string_or_three_ints(rgb, expected):
    assert parse_rgb(rgb) == expected


@pytest.mark.parametrize("rgb", ["#FF00", "red", [1, 2], [1, 2, 256], [1.0, 2, 3], [True, 0, 0], 7])
def test_bad_rgb_is_refused(rgb):
    with pytest.raises(BadRequest):
        parse_rgb(rgb)


BAD_REQUESTS = {
    "nothing to edit": dict(),
    "hairstyle twice": dict(hairstyle="afro", hairstyle_ref=img()),
    "two colours": dict(colour="red", rgb=(1, 2, 3)),
    "colour ref and rgb": dict(colour_ref=img(), rgb="#000000"),
    "empty text": dict(hairstyle="   "),
    "text too long": dict(hairstyle="x" * 201),
    "strength too high": dict(hairstyle="afro", strength=2.5),
    "strength negative": dict(hairstyle="afro", strength=-0.1),
    "strength nan": dict(hairstyle="afro", strength=math.nan),
    "strength as text": dict(hairstyle="afro", strength="1"),
    "faces word": dict(hairstyle="afro", faces="biggest"),
    "faces negative": dict(hairstyle="afro", faces=-1),
    "faces bool": dict(hairstyle="afro", faces=True),
    "selection outside": dict(hairstyle="afro", selection=(2, 0, 3, 3)),
    "selection empty": dict(hairstyle="afro", selection=(0, 0, 0, 3)),
    "selection floats": dict(hairstyle="afro", selection=(0, 0, 1.5, 3)),
    "mask wrong size": dict(hairstyle="afro", selection=img(3, 3, "A")),
    "mask with colour": dict(hairstyle="afro", selection=img(4, 3, "RGBA")),
    "mask as reference": dict(hairstyle_ref=img(4, 3, "A")),
    "out channels": dict(hairstyle="afro", out_channels="RGB"),
    "out depth": dict(hairstyle="afro", out_depth="f16"),
    "preview not bool": dict(hairstyle="afro", preview=1),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_invalid_edit_requests_are_refused_with_a_readable_message(case):
    with pytest.raises(BadRequest) as err:
        EditRequest(img(), **BAD_REQUESTS[case])
    assert err.value.code == "bad_request" and len(err.value.message) > 20


def test_a_mask_source_and_wrongly_sized_data_are_refused():
    with pytest.raises(BadRequest):
        EditRequest(img(channels="A"), hairstyle="afro")
    with pytest.raises(BadRequest) as err:
        Image(4, 3, bytes(47), "BGRA")
    assert err.value.code == "bad_frames"
    with pytest.raises(BadRequest):
        Image(4, 3, [0] * 48, "BGRA")
    with pytest.raises(BadRequest):
        Image(4, 3, bytes(48), "ARGB")


@pytest.mark.parametrize("params, message", [
    ({"hairstyle": "afro", "seed": 3}, "Unknown field 'seed'"),
    ({"hairstyle": 5}, "must be str"),
    ({"hairstyle": "afro", "strength": "0.5"}, "must be float"),
    ({"hairstyle": "afro", "faces": 1.0}, "must be str or int"),
    ({"hairstyle": "afro", "return_aligned": 1}, "must be bool"),
    ({"hairstyle": "afro", "selection": [0, 0, 1]}, "four integers"),
    ("afro", "must be a map"),
])
def test_params_from_the_wire_follow_the_schema_exactly(params, message):
    with pytest.raises(BadRequest, match=re.escape(message)):
        EditRequest.from_wire(params, {"source": img()})


def test_params_from_the_wire_need_a_source_and_one_kind_of_selection():
    with pytest.raises(BadRequest, match="source"):
        EditRequest.from_wire({"hairstyle": "afro"}, {})
    with pytest.raises(BadRequest, match="not both"):
        EditRequest.from_wire({"hairstyle": "afro", "selection": [0, 0, 1, 1]},
                              {"source": img(), "mask": img(channels="A")})


def spec(role="source", w=4, h=3, channels="BGRA", depth="u8"):
    return {"role": role, "width": w, "height": h, "channels": channels, "depth": depth}


def test_declared_sizes_are_checked_against_the_limits_before_any_frame_is_looked_at():
    limits = Limits(max_pixels=100, max_frame_bytes=1000, max_total_bytes=1500, max_frames=2)
    cases = {
        "pixels": [spec(w=11, h=10, channels="A")],
        "frame bytes": [spec(w=10, h=10, channels="RGBA", depth="f32")],
        "total bytes": [spec("a", 10, 10, "RGBA", "u16"), spec("b", 10, 10, "RGBA", "u16")],
        "count": [spec("a", 1, 1), spec("b", 1, 1), spec("c", 1, 1)],
    }
    for what, specs in cases.items():
        with pytest.raises(BadRequest) as err:
            parse_images(specs, [], limits)  # no frames at all: the declaration alone is refused
        assert err.value.code == "too_large", what


@pytest.mark.parametrize("specs, frames, code", [
    ([spec()], [], "bad_frames"),
    ([spec()], [bytes(48), bytes(1)], "bad_frames"),
    ([spec()], [bytes(47)], "bad_frames"),
    ([spec(), spec()], [bytes(48), bytes(48)], "bad_request"),  # a role twice
    ([spec("face")], [bytes(48)], "bad_request"),  # a role edits do not know
    ([{**spec(), "stride": 16}], [bytes(48)], "unknown_field"),
    ([{**spec(), "width": "4"}], [bytes(48)], "bad_request"),
    ([spec(w=0)], [b""], "bad_request"),
    ("source", [bytes(48)], "bad_request"),
])
def test_image_declarations_must_match_their_frames(specs, frames, code):
    with pytest.raises(BadRequest) as err:
        parse_images(specs, frames, Limits(), ("source", "mask"))
    assert err.value.code == code


def test_headers_are_size_checked_then_decoded_then_versioned():
    ok = unpack_header(pack({"v": PROTOCOL_VERSION, "op": "ping"}), 100)
    assert ok == {"v": PROTOCOL_VERSION, "op": "ping"}
    cases = [
        (pack({"v": 1, "op": "x", "pad": "x" * 200}), BadRequest, "too_large"),
        (b"\xc1", BadRequest, "bad_header"),
        (b"\x92\x01", BadRequest, "bad_header"),  # truncated array
        (pack([1, "ping"]), BadRequest, "bad_header"),
        (pack({1: 2}), BadRequest, "bad_header"),  # non-string map key
        (pack({"v": 1, "op": "ping", "x": msgpack.ExtType(5, b"x")}), BadRequest, "bad_header"),
        (pack({"op": "ping"}), ProtocolError, "unsupported_version"),
        (pack({"v": 2, "op": "ping"}), ProtocolError, "unsupported_version"),
        (pack({"v": True, "op": "ping"}), ProtocolError, "unsupported_version"),
        (pack({"v": 1, "op": 3}), BadRequest, "bad_header"),
        (b"\xa2\xff\xfe", BadRequest, "bad_header"),  # invalid UTF-8
    ]
    for data, kind, code in cases:
        with pytest.raises(kind) as err:
            unpack_header(data, 100)
        assert err.value.code == code, data


def test_error_codes_become_typed_exceptions_that_keep_the_code_and_message():
    assert isinstance(error_from_wire("busy", "m"), Busy)
    assert isinstance(error_from_wire("lease_expired", "m"), Cancelled)
    assert isinstance(error_from_wire("unknown_field", "m"), BadRequest)
    assert isinstance(error_from_wire("unsupported_version", "m"), ProtocolError)
    err = error_from_wire("no_face", "No face was found in the layer.")  # an engine's own code
    assert isinstance(err, JobFailed) and (err.code, err.message) == ("no_face", "No face was found in the layer.")
    assert all(issubclass(cls, HairclipError) for cls in ERROR_CODES.values())


def test_result_and_hello_survive_the_wire():
    layer = img(4, 3, "BGRA")
    res = EditResult(layer, [Face((1, 2, 3, 4), True), Face((0, 0, 1, 1), False)], {"invert": 0.5},
                     [img(2, 2, "RGBA")], {"seed": 7})
    header, frames = res.to_wire("job-1")
    back = EditResult.from_wire(msgpack.unpackb(pack(header)), frames, Limits())
    assert back == EditResult(layer, res.faces, res.timings, res.aligned, res.meta, "job-1")
    assert back.faces_edited == 1
    info = ServerInfo("0.1.0", 1, "cpu", {"e4e": "loaded"}, ["afro"], ["red"], Limits(lease_s=3.0))
    assert ServerInfo.from_wire(msgpack.unpackb(pack(info.to_wire("r1")))) == info
    assert Limits.from_wire({**Limits().to_wire(), "max_new_thing": 1}) == Limits()  # newer servers


def test_the_hair_left_outside_the_crop_travels_as_its_own_optional_mask():
    layer = img(4, 3, "BGRA")
    outside = Image(4, 3, bytes(range(12)), "A", "u8")
    res = EditResult(layer, [Face((0, 0, 4, 3), True)], {}, [img(2, 2, "RGBA")], {}, hair_outside=outside)
    header, frames = res.to_wire("job-2")
    assert [spec["role"] for spec in header["images"]] == ["layer", "aligned0", "hair_outside"]
    back = EditResult.from_wire(msgpack.unpackb(pack(header)), frames, Limits())
    assert back.hair_outside == outside and back.aligned == res.aligned  # not mistaken for an aligned crop
    # A server that predates the mask sends none: the client reads None.
    header, frames = EditResult(layer).to_wire("job-3")
    assert EditResult.from_wire(msgpack.unpackb(pack(header)), frames, Limits()).hair_outside is None
    # Only a one-byte mask the size of the layer is one.
    for bad in (Image(2, 3, bytes(6), "A", "u8"), img(4, 3, "RGBA")):
        with pytest.raises(ProtocolError, match="hair_outside"):
            EditResult(layer, hair_outside=bad).to_wire("job-4")
        good_header, good_frames = EditResult(layer, hair_outside=outside).to_wire("job-5")
        good_header["images"][-1] = bad.spec("hair_outside")
        with pytest.raises(ProtocolError, match="hair_outside"):
            EditResult.from_wire(msgpack.unpackb(pack(good_header)), [*good_frames[:-1], bad.data], Limits())


def test_rerender_requests_check_their_base_id_and_strength():
    assert RerenderRequest("job-1", 2).strength == 2.0
    for base, strength in (("../x", 1.0), ("", 1.0), ("ok", 3.0), ("ok", float("inf"))):
        with pytest.raises(BadRequest):
            RerenderRequest(base, strength)


def test_rect_selection_is_normalised_from_a_tuple():
    assert EditRequest(img(), hairstyle="afro", selection=[0, 1, 2, 2]).selection == Rect(0, 1, 2, 2)


def test_the_shared_package_needs_only_pyzmq_and_msgpack():
    code = ("import sys, hairclip_shared, hairclip_shared.client\n"
            "heavy = {'numpy', 'torch', 'PyQt5', 'PyQt6', 'gi', 'hairclip'} & set(sys.modules)\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT / "shared", timeout=30)


def test_protocol_md_documents_every_op_and_error_code():
    doc = (ROOT / "shared" / "PROTOCOL.md").read_text()
    for name in [*REQUESTS, "accepted", "progress", "result", "error", "pong", *ERROR_CODES]:
        assert f"`{name}`" in doc, name


@pytest.mark.parametrize("numpy_available", [True, False])
def test_finiteness_check_finds_one_nan_or_inf_sample_with_or_without_numpy(monkeypatch, numpy_available):
    from hairclip_shared.protocol import BadImage, all_finite, check_finite

    if not numpy_available:  # an editor's embedded Python may lack numpy
        monkeypatch.setitem(sys.modules, "numpy", None)
    samples = array.array("f", [0.25] * (3 * 5 * 4))
    assert all_finite(Image(5, 3, samples, "RGBA", "f32"))
    for bad in (math.nan, math.inf, -math.inf):
        poisoned = array.array("f", samples)
        poisoned[17] = bad
        with pytest.raises(BadImage, match="The colour reference layer has NaN or infinite"):
            check_finite(Image(5, 3, poisoned, "RGBA", "f32"), "colour reference")
    assert all_finite(Image(5, 3, bytes(60), "RGBA", "u8"))


def test_slider_crossfade_blends_the_two_nearest_grid_strengths():
    from hairclip_shared.protocol import slider_crossfade

    (lo, wl), (hi, wh) = slider_crossfade(0.93)
    assert (lo, hi) == (0.9, 1.0) and wl == pytest.approx(0.7) and wh == pytest.approx(0.3)
    assert slider_crossfade(1.2) == [(1.2, 1.0)]  # on the grid: that render alone
    assert slider_crossfade(5.0) == [(2.0, 1.0)] and slider_crossfade(-1) == [(0.0, 1.0)]  # clamped to the range

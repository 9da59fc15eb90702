#!/usr/bin/env python3
"""HairCLIP for GIMP 3: Filters > HairCLIP... edits the hair in a layer through the local HairCLIP server.

The procedure is the API and the dialog a view of its arguments: scripts and other plug-ins call the same
procedure through the PDB, non-interactively. The result is a new layer right above the source, with the
edit's alpha as an editable layer mask, added as one undo step; the source layer is never written.
Only GIMP glue lives here; the request, the layer name and the pixel conversions come from
hairclip_shared.editing, which the Krita plug-in shares.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `hairclip install-plugin gimp` puts the shared package beside this file, and pyzmq/msgpack in vendor/
# when GIMP's own Python lacks them.
_HERE = Path(__file__).resolve().parent
for _p in (_HERE, _HERE / "vendor"):
    if _p.is_dir() and str(_p) not in sys.path:
        sys.path.insert(1, str(_p))

import gi  # noqa: E402

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gegl", "0.4")
gi.require_version("Babl", "0.1")
from gi.repository import Babl, Gegl, Gimp, GimpUi, GLib, GObject  # noqa: E402

try:
    from hairclip_shared import Accepted, Client, EditResult, HairclipError, Image, Progress, ServerNotRunning
    from hairclip_shared.editing import (
        ALIGNED_LABELS,
        ALIGNED_MODES,
        ALIGNED_RULE,
        COLOUR_MODES,
        FACE_MODES,
        HAIRSTYLE_MODES,
        EditSettings,
        build_request,
        check_has_pixels,
        from_wire,
        gimp_layout,
        layer_name,
        not_running_message,
        presets,
        split_alpha,
        to_wire,
    )
    _MISSING = None
except ImportError as e:  # the menu entry stays, and says what to install
    _MISSING = e

PROC = "plug-in-hairclip"
RW = GObject.ParamFlags.READWRITE
MODE_LABELS = {"none": "Keep as it is", "text": "Text", "reference": "Copy from a layer", "rgb": "Exact colour"}
FACE_LABELS = {"all": "All faces", "selection": "Faces in the selection"}
STAGE_LABELS = {"queued": "waiting for the server"}
CONNECT_TIMEOUT = 5.0  # s; a running server answers within milliseconds, and heartbeats every second mid-job


class Failure(Exception):
    """Ends the run with a message GIMP shows as is."""

    def __init__(self, message: str, status: Gimp.PDBStatusType = Gimp.PDBStatusType.EXECUTION_ERROR):
        super().__init__(message)
        self.message, self.status = message, status


# ---------------------------------------------------------------------------------------------- registration

def _choice(values: tuple[str, ...], labels: dict[str, str]) -> Gimp.Choice:
    choice = Gimp.Choice.new()
    for i, v in enumerate(values):
        choice.add(v, i, labels.get(v, v), "")
    return choice


def add_arguments(procedure: Gimp.Procedure) -> None:
    """The procedure's typed arguments: EditSettings field for field, with GIMP layers for the references."""
    d = EditSettings()
    hairstyles, colours = presets(None)
    procedure.add_choice_argument("hairstyle-mode", "_Hairstyle", "How to choose the hairstyle",
                                  _choice(HAIRSTYLE_MODES, MODE_LABELS), d.hairstyle_mode, RW)
    procedure.add_string_argument("hairstyle", "Hairstyle _text",
                                  "A hairstyle in words; trained ones: " + ", ".join(hairstyles), d.hairstyle, RW)
    procedure.add_layer_argument("hairstyle-ref", "Hairstyle refere_nce", "The layer whose hairstyle to copy",
                                 True, RW)
    procedure.add_choice_argument("hairstyle-ref-aligned", "Hairstyle reference alignment", ALIGNED_RULE,
                                  _choice(ALIGNED_MODES, ALIGNED_LABELS), d.hairstyle_ref_aligned, RW)
    procedure.add_choice_argument("colour-mode", "Hair colo_ur", "How to choose the hair colour",
                                  _choice(COLOUR_MODES, MODE_LABELS), d.colour_mode, RW)
    procedure.add_string_argument("colour", "Colour te_xt",
                                  "A hair colour in words; trained ones: " + ", ".join(colours), d.colour, RW)
    rgb = Gegl.Color.new(d.rgb)
    procedure.add_color_argument("rgb", "Exact colour (RG_B)", "The exact hair colour", False, rgb, RW)
    procedure.add_layer_argument("colour-ref", "Colour refer_ence", "The layer whose hair colour to copy",
                                 True, RW)
    procedure.add_choice_argument("colour-ref-aligned", "Colour reference alignment", ALIGNED_RULE,
                                  _choice(ALIGNED_MODES, ALIGNED_LABELS), d.colour_ref_aligned, RW)
    procedure.add_double_argument("strength", "Stren_gth",
                                  "1 is the edit as trained, 0 leaves the hair as it is, above 1 exaggerates",
                                  0.0, 2.0, d.strength, RW)
    procedure.add_choice_argument("faces", "_Faces", "Which faces to edit", _choice(FACE_MODES, FACE_LABELS),
                                  d.faces, RW)
    procedure.add_string_argument("server", "Ser_ver", "The HairCLIP server's address", d.endpoint, RW)
    procedure.add_layer_return_value("layer", "Layer", "The new hair layer", False, RW)


class HairClip(Gimp.PlugIn):
    def do_set_i18n(self, name: str) -> bool:
        return False

    def do_query_procedures(self) -> list[str]:
        return [PROC]

    def do_create_procedure(self, name: str) -> Gimp.Procedure:
        Gegl.init(None)
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, run, None)
        procedure.set_image_types("RGB*")
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        procedure.set_menu_label("HairCLIP...")
        procedure.add_menu_path("<Image>/Filters")
        procedure.set_documentation(
            "Edit the hair by text or reference image (HairCLIP)",
            "Sends the layer to the local HairCLIP server (`hairclip serve`) and adds the edited hair as a "
            "new layer above it, with the edit's extent as a layer mask.", name)
        procedure.set_attribution("HairCLIP Studio", "HairCLIP Studio", "2025")
        if _MISSING is None:
            add_arguments(procedure)
        return procedure


# ---------------------------------------------------------------------------------------------- run

def run(procedure, run_mode, image, drawables, config, data):
    try:
        if _MISSING is not None:
            raise Failure(missing_message(_MISSING))
        restore_lost_colour(config)
        if run_mode == Gimp.RunMode.INTERACTIVE and not show_dialog(procedure, config):
            return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
        layer = edit(image, drawables, config)
    except Failure as e:
        return procedure.new_return_values(e.status, GLib.Error(e.message))
    except HairclipError as e:
        return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error(e.message))
    if run_mode != Gimp.RunMode.NONINTERACTIVE:
        Gimp.displays_flush()
    values = procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())
    values.remove(1)
    values.insert(1, GObject.Value(Gimp.Layer, layer))
    return values


def missing_message(err: ImportError) -> str:
    return (f"HairCLIP cannot start: {err}. GIMP runs plug-ins with the Python at {sys.executable} "
            f"({sys.version_info[0]}.{sys.version_info[1]}), which needs pyzmq and msgpack. Install them with:\n\n"
            f"    hairclip install-plugin gimp --gimp-python \"{sys.executable}\"")


def show_dialog(procedure, config) -> bool:
    GimpUi.init("hairclip")
    dialog = GimpUi.ProcedureDialog.new(procedure, config, "HairCLIP")
    dialog.fill(None)
    ok = dialog.run()
    dialog.destroy()
    return ok


def srgb_bytes(colour) -> bytes:
    return bytes(colour.get_bytes(Babl.format("R'G'B'A u8")).get_data())[:4]


def restore_lost_colour(config) -> None:
    """GIMP 3.0 hands a colour argument's default over the PDB as transparent black; put ours back.

    The colour button has no alpha, so alpha 0 can only be that lost default, never the user's choice.
    """
    if srgb_bytes(config.get_property("rgb"))[3] == 0:
        config.set_property("rgb", Gegl.Color.new(EditSettings().rgb))


def settings_from(config) -> tuple[EditSettings, Gimp.Layer | None, Gimp.Layer | None]:
    """The procedure's arguments as the shared EditSettings, plus the two reference layers."""
    get = config.get_property
    hairstyle_ref, colour_ref = get("hairstyle-ref"), get("colour-ref")
    r, g, b, _ = srgb_bytes(get("rgb"))
    settings = EditSettings(
        endpoint=get("server") or EditSettings().endpoint,
        hairstyle_mode=get("hairstyle-mode"), hairstyle=get("hairstyle") or "",
        hairstyle_ref=str(hairstyle_ref.get_id()) if hairstyle_ref else "",
        colour_mode=get("colour-mode"), colour=get("colour") or "", rgb=f"#{r:02x}{g:02x}{b:02x}",
        colour_ref=str(colour_ref.get_id()) if colour_ref else "",
        strength=float(get("strength")), faces=get("faces"),
        hairstyle_ref_aligned=get("hairstyle-ref-aligned"), colour_ref_aligned=get("colour-ref-aligned"))
    return settings, hairstyle_ref, colour_ref


def source_layer(image, drawables) -> Gimp.Layer:
    if len(drawables) != 1:
        raise Failure("Select exactly one layer for HairCLIP to edit.", Gimp.PDBStatusType.CALLING_ERROR)
    src = drawables[0]
    if not src.is_layer() or src.is_group():
        what = "a layer group" if src.is_layer() else "a mask or channel"
        raise Failure(f"HairCLIP edits a pixel layer, and the active item is {what}. Select the photo's layer.",
                      Gimp.PDBStatusType.CALLING_ERROR)
    return src


def read_pixels(drawable, babl: str, x: int = 0, y: int = 0, w: int | None = None, h: int | None = None) -> bytes:
    w = drawable.get_width() if w is None else w
    h = drawable.get_height() if h is None else h
    return drawable.get_buffer().get(Gegl.Rectangle.new(x, y, w, h), 1.0, babl, Gegl.AbyssPolicy.NONE)


def write_pixels(drawable, babl: str, data: bytes) -> None:
    w, h = drawable.get_width(), drawable.get_height()
    buffer = drawable.get_buffer()
    buffer.set(Gegl.Rectangle.new(0, 0, w, h), babl, data)
    buffer.flush()
    drawable.update(0, 0, w, h)


def reference(layer, role: str) -> Image | None:
    if layer is None:
        return None
    layout = gimp_layout("u8-non-linear")  # the server shrinks references to 1024 px; 8 bits are plenty
    pixels = read_pixels(layer, layout.babl)
    check_has_pixels(pixels, layout, f"{role} reference", layer.get_name())
    return to_wire(pixels, layer.get_width(), layer.get_height(), layout)


def selection_mask(image, src) -> Image | None:
    """The image's selection over the source layer's extent, as an 'A' mask; None when nothing is selected."""
    if Gimp.Selection.is_empty(image):
        return None
    _, ox, oy = src.get_offsets()
    w, h = src.get_width(), src.get_height()
    mask = read_pixels(image.get_selection(), "Y u8", ox, oy, w, h)
    return Image(w, h, mask, "A", "u8") if mask.strip(b"\0") else None


def run_job(settings: EditSettings, request) -> EditResult:
    """Send the edit and drive GIMP's progress bar from the server's progress stream until the result.

    When the user cancels the progress, GIMP kills this process; the heartbeats stop and the server's
    lease cancels the job, so nothing needs doing here.
    """
    Gimp.progress_init("HairCLIP: connecting")
    try:
        with Client(settings.endpoint, timeout=CONNECT_TIMEOUT, name="gimp") as client:
            job = client.submit(request)
            for event in job.events():
                if isinstance(event, Accepted) and event.position > 0:
                    Gimp.progress_set_text(f"HairCLIP: waiting ({event.position} ahead)")
                elif isinstance(event, Progress):
                    Gimp.progress_set_text("HairCLIP: " + STAGE_LABELS.get(event.stage, event.stage.replace("_", " ")))
                    Gimp.progress_update(event.fraction)
                elif isinstance(event, EditResult):
                    return event
    except ServerNotRunning as e:
        raise Failure(not_running_message(settings.endpoint, e.message)) from None
    finally:
        Gimp.progress_end()
    raise Failure("The server ended the edit without a result.")


def edit(image, drawables, config) -> Gimp.Layer:
    src = source_layer(image, drawables)
    layout = gimp_layout(image.get_precision().value_nick, image.get_base_type().value_nick)
    settings, hairstyle_ref, colour_ref = settings_from(config)
    w, h = src.get_width(), src.get_height()
    pixels = read_pixels(src, layout.babl)
    check_has_pixels(pixels, layout, "layer", src.get_name())
    request = build_request(
        settings, to_wire(pixels, w, h, layout),
        hairstyle_ref=reference(hairstyle_ref, "hairstyle") if settings.hairstyle_mode == "reference" else None,
        colour_ref=reference(colour_ref, "colour") if settings.colour_mode == "reference" else None,
        selection=selection_mask(image, src) if settings.faces == "selection" else None)
    result = run_job(settings, request)
    colour, alpha = split_alpha(from_wire(result.layer, layout), layout, alpha_from=pixels)
    name = layer_name(settings, hairstyle_ref.get_name() if hairstyle_ref else "",
                      colour_ref.get_name() if colour_ref else "")
    return add_result_layer(image, src, name, colour, layout.babl, alpha)


def add_result_layer(image, src, name: str, colour: bytes, babl: str, alpha: bytes) -> Gimp.Layer:
    """The edited layer, at the source's offsets, right above it; its mask holds the edit's alpha, and it is
    composited in perceptual (sRGB) space, as the backend composites.

    Pixels and mask are written before the layer joins the image, so the undo group holds one cheap step
    (the insertion) instead of copies of every tile.
    """
    w, h = src.get_width(), src.get_height()
    _, ox, oy = src.get_offsets()
    image.undo_group_start()
    try:
        layer = Gimp.Layer.new(image, name, w, h, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
        # GIMP 3 mixes Normal layers in linear light by default; the backend (and Krita) mix sRGB values, so
        # without this the soft mask edge looks different here than in `hairclip edit -o`.
        layer.set_composite_space(Gimp.LayerColorSpace.RGB_PERCEPTUAL)
        layer.set_offsets(ox, oy)
        write_pixels(layer, babl, colour)
        mask = layer.create_mask(Gimp.AddMaskType.WHITE)
        layer.add_mask(mask)
        write_pixels(mask, "Y u8", alpha)
        image.insert_layer(layer, src.get_parent(), image.get_item_position(src))
    finally:
        image.undo_group_end()
    return layer


if __name__ == "__main__":
    Gimp.main(HairClip.__gtype__, sys.argv)

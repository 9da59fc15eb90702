#!/usr/bin/env python3
"""HairCLIP for GIMP 3: Filters > HairCLIP... edits the hair in a layer through the local HairCLIP server.

The procedure is the API and the dialog a view of its arguments: scripts and other plug-ins call the same
procedure through the PDB, non-interactively. The result is a new layer right above the source, with the
edit's alpha as an editable layer mask, added as one undo step; the source layer is never written.
Only GIMP glue lives here: the image's pixels and layers are gimp_layers.py's, the dialog's extras
dialog_view.py's and preview_pane.py's; the request, the layer name and the pixel conversions come from
hairclip_shared, which the Krita plug-in shares.
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
gi.require_version("Gtk", "3.0")
from gi.repository import Babl, Gegl, Gimp, GimpUi, GLib, GObject  # noqa: E402

try:
    from dialog_view import DialogView  # beside this file
    from gimp_layers import add_result_layer, read_pixels, reference, selection_mask

    from hairclip_shared import Accepted, Client, EditResult, HairclipError, Progress, ServerNotRunning
    from hairclip_shared.editing import (
        ALIGNED_LABELS,
        ALIGNED_MODES,
        ALIGNED_RULE,
        COLOUR_MODES,
        FACE_MODES,
        HAIRSTYLE_MODES,
        WHOLE_HAIR_LABELS,
        WHOLE_HAIR_MODES,
        EditSettings,
        build_request,
        layer_name,
        not_running_message,
        presets,
        result_warning,
    )
    from hairclip_shared.pixels import check_has_pixels, from_wire, gimp_layout, split_alpha, to_wire
    from hairclip_shared.wording import (
        COLOUR_MODE_LABELS,
        FACE_LABELS,
        FIELD_HELP,
        FIELD_LABELS,
        HAIRSTYLE_MODE_LABELS,
        overall_fraction,
        stage_text,
    )
    _MISSING = None
except ImportError as e:  # the menu entry stays, and says what to install
    _MISSING = e

PROC = "plug-in-hairclip"
RW = GObject.ParamFlags.READWRITE
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


def mnemonics(labels: dict[str, str]) -> dict[str, str]:
    """GTK wants a keyboard mnemonic in every field label: each label's first letter no other label took."""
    used: set[str] = set()
    out = {}
    for key, text in labels.items():
        i = next((i for i, c in enumerate(text) if c.isalpha() and c.lower() not in used), None)
        if i is not None:
            used.add(text[i].lower())
        out[key] = text if i is None else text[:i] + "_" + text[i:]
    return out


def add_arguments(procedure: Gimp.Procedure) -> None:
    """The procedure's typed arguments: EditSettings field for field, with GIMP layers for the references."""
    d = EditSettings()
    hairstyles, colours = presets(None)
    label, help_ = mnemonics(FIELD_LABELS), FIELD_HELP  # the words the Krita dialog uses too
    procedure.add_choice_argument("hairstyle-mode", label["hairstyle_mode"], help_["hairstyle_mode"],
                                  _choice(HAIRSTYLE_MODES, HAIRSTYLE_MODE_LABELS), d.hairstyle_mode, RW)
    procedure.add_string_argument("hairstyle", label["hairstyle"],
                                  help_["hairstyle"] + "; trained ones: " + ", ".join(hairstyles), d.hairstyle, RW)
    procedure.add_layer_argument("hairstyle-ref", label["hairstyle_ref"], help_["hairstyle_ref"], True, RW)
    procedure.add_choice_argument("hairstyle-ref-aligned", label["hairstyle_ref_aligned"], ALIGNED_RULE,
                                  _choice(ALIGNED_MODES, ALIGNED_LABELS), d.hairstyle_ref_aligned, RW)
    procedure.add_choice_argument("colour-mode", label["colour_mode"], help_["colour_mode"],
                                  _choice(COLOUR_MODES, COLOUR_MODE_LABELS), d.colour_mode, RW)
    procedure.add_string_argument("colour", label["colour"],
                                  help_["colour"] + "; trained ones: " + ", ".join(colours), d.colour, RW)
    rgb = Gegl.Color.new(d.rgb)
    procedure.add_color_argument("rgb", label["rgb"], help_["rgb"], False, rgb, RW)
    procedure.add_layer_argument("colour-ref", label["colour_ref"], help_["colour_ref"], True, RW)
    procedure.add_choice_argument("colour-ref-aligned", label["colour_ref_aligned"], ALIGNED_RULE,
                                  _choice(ALIGNED_MODES, ALIGNED_LABELS), d.colour_ref_aligned, RW)
    procedure.add_double_argument("strength", label["strength"], help_["strength"], 0.0, 2.0, d.strength, RW)
    procedure.add_choice_argument("faces", label["faces"], help_["faces"], _choice(FACE_MODES, FACE_LABELS),
                                  d.faces, RW)
    procedure.add_string_argument("server", label["endpoint"], help_["endpoint"], d.endpoint, RW)
    # Last, so scripts that pass the arguments in order keep working.
    procedure.add_choice_argument("whole-hair", label["whole_hair"], help_["whole_hair"],
                                  _choice(WHOLE_HAIR_MODES, WHOLE_HAIR_LABELS), d.whole_hair, RW)
    procedure.add_layer_return_value("layer", "Layer", "The new hair layer", False, RW)


class HairClip(Gimp.PlugIn):
    """The GIMP plug-in: registers the Filters > HairCLIP... procedure, which edits the chosen layer."""

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
        previewed: dict = {}  # the dialog's previewed render, when it is exactly what OK asks for
        if run_mode == Gimp.RunMode.INTERACTIVE and not show_dialog(procedure, config, image, drawables, previewed):
            return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
        layer = edit(image, drawables, config, previewed.get("result"))
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


def show_dialog(procedure, config, image=None, drawables=(), previewed: dict | None = None) -> bool:
    """GIMP's dialog for the arguments, plus: only the chosen modes' fields, the trained presets as a list
    beside free text, strength as a slider, whether the server answers (with the command that starts it), and
    a preview of the edit that follows the slider (`previewed["result"]`: its render, when OK can use it)."""
    GimpUi.init("hairclip")
    dialog = GimpUi.ProcedureDialog.new(procedure, config, "HairCLIP")
    dialog.get_scale_entry("strength", 1.0)  # made before fill(), so fill() lays out the slider
    dialog.fill(None)
    view = DialogView(dialog, config, image, drawables, lambda: edit_request(image, drawables, config)[2:5])
    ok = dialog.run()
    if ok and view.pane is not None and previewed is not None:
        previewed["result"] = view.pane.result_for(settings_from(config)[0])
    view.close()
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
        hairstyle_ref_aligned=get("hairstyle-ref-aligned"), colour_ref_aligned=get("colour-ref-aligned"),
        whole_hair=get("whole-hair"))
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


def run_job(settings: EditSettings, request) -> EditResult:
    """Send the edit and drive GIMP's progress bar from the server's progress stream until the result.

    When the user cancels the progress, GIMP kills this process; the heartbeats stop and the server's
    lease cancels the job, so nothing needs doing here.
    """
    Gimp.progress_init("HairCLIP: " + stage_text("connecting"))
    try:
        with Client(settings.endpoint, timeout=CONNECT_TIMEOUT, name="gimp") as client:
            job = client.submit(request)
            for event in job.events():
                if isinstance(event, Accepted) and event.position > 0:
                    Gimp.progress_set_text("HairCLIP: " + stage_text("queued", event.position))
                elif isinstance(event, Progress):
                    Gimp.progress_set_text("HairCLIP: " + stage_text(event.stage))
                    Gimp.progress_update(overall_fraction(event.stage, event.fraction))
                elif isinstance(event, EditResult):
                    return event
    except ServerNotRunning as e:
        raise Failure(not_running_message(settings.endpoint, e.message)) from None
    finally:
        Gimp.progress_end()
    raise Failure("The server ended the edit without a result.")


def edit_request(image, drawables, config) -> tuple:
    """What an edit of the chosen layer sends: (src, layout, settings, request, source image, pixels, refs)."""
    src = source_layer(image, drawables)
    layout = gimp_layout(image.get_precision().value_nick, image.get_base_type().value_nick)
    settings, hairstyle_ref, colour_ref = settings_from(config)
    w, h = src.get_width(), src.get_height()
    pixels = read_pixels(src, layout.babl)
    check_has_pixels(pixels, layout, "layer", src.get_name())
    source = to_wire(pixels, w, h, layout)
    request = build_request(
        settings, source,
        hairstyle_ref=reference(hairstyle_ref, "hairstyle") if settings.hairstyle_mode == "reference" else None,
        colour_ref=reference(colour_ref, "colour") if settings.colour_mode == "reference" else None,
        selection=selection_mask(image, src) if settings.faces == "selection" else None)
    return src, layout, settings, request, source, pixels, (hairstyle_ref, colour_ref)


def edit(image, drawables, config, previewed: EditResult | None = None) -> Gimp.Layer:
    """Edit the layer (or take the dialog's previewed render of exactly this edit) and add the result layer."""
    src, layout, settings, request, _, pixels, (hairstyle_ref, colour_ref) = edit_request(image, drawables, config)
    w, h = src.get_width(), src.get_height()
    usable = previewed is not None and (previewed.layer.width, previewed.layer.height) == (w, h)
    result = previewed if usable else run_job(settings, request)
    colour, alpha = split_alpha(from_wire(result.layer, layout), layout, alpha_from=pixels)
    name = layer_name(settings, hairstyle_ref.get_name() if hairstyle_ref else "",
                      colour_ref.get_name() if colour_ref else "")
    old = result.hair_outside
    old_hair = old.tobytes() if old is not None and (old.width, old.height) == (w, h) else None
    layer, added = add_result_layer(image, src, name, colour, layout.babl, alpha, old_hair)
    warning = result_warning(result.meta, added)
    if warning:
        Gimp.message(warning)  # the dialog has closed by now: GIMP's message area or error console
    return layer


if __name__ == "__main__":
    Gimp.main(HairClip.__gtype__, sys.argv)

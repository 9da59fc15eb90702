#!/usr/bin/env python3
"""HairCLIP for GIMP 3: Filters > HairCLIP... edits the hair in a layer through the local HairCLIP server.

The procedure is the API and the dialog a view of its arguments: scripts and other plug-ins call the same
procedure through the PDB, non-interactively. The result is a new layer right above the source, with the
edit's alpha as an editable layer mask, added as one undo step; the source layer is never written.
Only GIMP glue lives here; the request, the layer name and the pixel conversions come from
hairclip_shared.editing, which the Krita plug-in shares.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
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
from gi.repository import Babl, Gegl, Gimp, GimpUi, GLib, GObject, Gtk  # noqa: E402

try:
    from hairclip_shared import Accepted, Client, EditResult, HairclipError, Image, Progress, ServerNotRunning
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
        check_has_pixels,
        from_wire,
        gimp_layout,
        layer_name,
        not_running_message,
        presets,
        result_warning,
        split_alpha,
        to_wire,
    )
    from hairclip_shared.wording import (
        COLOUR_MODE_LABELS,
        FACE_LABELS,
        FIELD_HELP,
        FIELD_LABELS,
        HAIRSTYLE_MODE_LABELS,
        OLD_HAIR_NAME,
        SERVER_LABEL,
        SERVER_STATES,
        active_fields,
        overall_fraction,
        stage_text,
    )
    _MISSING = None
except ImportError as e:  # the menu entry stays, and says what to install
    _MISSING = e

PROC = "plug-in-hairclip"
RW = GObject.ParamFlags.READWRITE
CONNECT_TIMEOUT = 5.0  # s; a running server answers within milliseconds, and heartbeats every second mid-job
PROBE_TIMEOUT = 2.0  # s; the dialog's "is the server there?" check, off the GTK thread
# The arguments that belong to one mode; the dialog hides those the chosen modes do not use.
MODE_FIELDS = ("hairstyle", "hairstyle-ref", "hairstyle-ref-aligned", "colour", "rgb", "colour-ref",
               "colour-ref-aligned")
DIALOG_STATE = "HAIRCLIP_DIALOG_STATE"  # a JSON file the dialog describes itself in (for tests, bug reports)


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
    view = DialogView(dialog, config, image, drawables)
    ok = dialog.run()
    if ok and view.pane is not None and previewed is not None:
        previewed["result"] = view.pane.result_for(settings_from(config)[0])
    view.close()
    dialog.destroy()
    return ok


class DialogView:
    """What GIMP's generated dialog lacks, on top of it; GTK calls only from GIMP's main (GTK) thread."""

    def __init__(self, dialog, config, image=None, drawables=()):
        self.dialog, self.config, self.image, self.drawables = dialog, config, image, drawables
        self.widgets = {name: dialog.get_widget(name, GObject.TYPE_NONE) for name in MODE_FIELDS}
        self.presets_count = {}
        hairstyles, colours = presets(None)
        for name, items in (("hairstyle", hairstyles), ("colour", colours)):
            self.presets_count[name] = add_preset_list(self.widgets[name], items)
        self.server_state, self.server_help = "connecting", ""
        self.server_line = Gtk.Label(xalign=0.0)
        self.server_line.set_line_wrap(True)
        self.server_line.set_selectable(True)
        dialog.get_content_area().pack_start(self.server_line, False, False, 6)
        self.server_line.show()
        self._probe_n = 0
        self._closed = False
        self._handlers = [config.connect(f"notify::{p}", self._follow_modes) for p in ("hairstyle-mode", "colour-mode")]
        self._handlers.append(config.connect("notify::server", self._server_changed))
        self._follow_modes()
        self.probe()
        self.pane = None
        try:  # GTK's image widgets; the preview is this dialog's only part that needs them
            from preview_pane import PreviewPane
        except ImportError:
            PreviewPane = None  # noqa: N806
        if PreviewPane is not None and image is not None:
            self.pane = PreviewPane(config, lambda: edit_request(image, drawables, config)[2:5])
            dialog.get_content_area().pack_start(self.pane.box, False, False, 6)
        self._state_file = os.environ.get(DIALOG_STATE)
        if self._state_file:
            GLib.timeout_add(300, self._write_state)

    def _follow_modes(self, *_) -> None:
        on = active_fields(self.config.get_property("hairstyle-mode"), self.config.get_property("colour-mode"))
        for name, widget in self.widgets.items():
            if widget is not None:
                widget.set_visible(name.replace("-", "_") in on)

    def _server_changed(self, *_) -> None:
        """Typing an address: ask once the typing rests, not at every key."""
        self._probe_n += 1
        n = self._probe_n
        GLib.timeout_add(500, lambda: n == self._probe_n and not self._closed and self.probe() and False)

    def probe(self) -> None:
        """Ask the server for `hello` off the GTK thread; the answer updates the connection line."""
        self._probe_n += 1
        n, endpoint = self._probe_n, self.config.get_property("server") or EditSettings().endpoint
        self._show_server("connecting", f"{endpoint}")

        def ask() -> None:
            try:
                with Client(endpoint, timeout=PROBE_TIMEOUT, name="gimp-dialog") as client:
                    info = client.info
                state, text = "connected", f"{info.server} on {info.device}" if info else endpoint
            except ServerNotRunning:
                state, text = "not_running", not_running_message(endpoint)
            except HairclipError as e:
                state, text = "failed", e.message
            except Exception as e:  # noqa: BLE001 - shown as is
                state, text = "failed", f"{type(e).__name__}: {e}"
            GLib.idle_add(lambda: n == self._probe_n and not self._closed and self._show_server(state, text))

        threading.Thread(target=ask, daemon=True).start()

    def _show_server(self, state: str, text: str) -> bool:
        self.server_state, self.server_help = state, text
        self.server_line.set_text(f"{SERVER_LABEL}: {SERVER_STATES.get(state, state)}. {text}")
        return False

    def _write_state(self) -> bool:
        """Describe the dialog (field visibility and position, the server line) for a test outside GIMP."""
        if self._closed:
            return False
        fields = {}
        for name in (*MODE_FIELDS, "hairstyle-mode", "colour-mode", "strength", "server"):
            w = self.dialog.get_widget(name, GObject.TYPE_NONE)
            alloc = w.get_allocation()
            xy = w.translate_coordinates(self.dialog, 0, 0) or (alloc.x, alloc.y)
            fields[name] = {"visible": w.get_visible() and w.get_mapped(), "type": type(w).__name__,
                            "x": xy[0], "y": xy[1], "w": alloc.width, "h": alloc.height}
        state = {"fields": fields, "server_state": self.server_state, "server_line": self.server_line.get_text(),
                 "presets": self.presets_count}
        if self.pane is not None:  # what the preview shows, and what the image holds meanwhile
            b = self.pane.button
            xy = b.translate_coordinates(self.dialog, 0, 0) or (0, 0)
            src = self.drawables[0]
            spin = self.dialog.get_widget("strength", GObject.TYPE_NONE).get_spin_button()
            sxy = spin.translate_coordinates(self.dialog, 0, 0) or (0, 0)
            state["preview"] = {**self.pane.describe(), "button": {"x": xy[0], "y": xy[1],
                                "w": b.get_allocation().width, "h": b.get_allocation().height},
                                "spin": {"x": sxy[0], "y": sxy[1], "w": spin.get_allocation().width,
                                         "h": spin.get_allocation().height},
                                "layers": len(self.image.get_layers()),
                                "source_sha1": hashlib.sha1(read_pixels(src, "R'G'B'A u8")).hexdigest()}
        tmp = self._state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, self._state_file)
        return True

    def close(self) -> None:
        self._closed = True
        if self.pane is not None:
            self.pane.close()
        for h in self._handlers:
            self.config.disconnect(h)


def add_preset_list(labeled_entry, items: list[str]) -> int:
    """The trained presets as a drop-down on the text field (an arrow in the entry), and as completions while
    typing; any other text stays allowed. Returns how many presets the list holds."""
    entry = labeled_entry.get_entry() if labeled_entry is not None else None
    if entry is None:
        return 0
    store = Gtk.ListStore(str)
    for item in items:
        store.append([item])
    completion = Gtk.EntryCompletion(model=store, minimum_key_length=0, popup_completion=True)
    completion.set_text_column(0)
    entry.set_completion(completion)
    entry.set_icon_from_icon_name(Gtk.EntryIconPosition.SECONDARY, "pan-down-symbolic")
    entry.set_icon_tooltip_text(Gtk.EntryIconPosition.SECONDARY, "Trained presets")
    menu = Gtk.Menu()
    for item in items:
        mi = Gtk.MenuItem(label=item)
        mi.connect("activate", lambda _mi, text=item: entry.set_text(text))
        menu.append(mi)
    menu.show_all()
    entry.connect("icon-press", lambda _e, _pos, event: menu.popup_at_pointer(event))
    entry._hairclip_menu = menu  # keep the menu alive as long as the entry
    return len(items)


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


def read_pixels(drawable, babl: str, x: int = 0, y: int = 0, w: int | None = None, h: int | None = None) -> bytes:
    w = drawable.get_width() if w is None else w
    h = drawable.get_height() if h is None else h
    return drawable.get_buffer().get(Gegl.Rectangle.new(x, y, w, h), 1.0, babl, Gegl.AbyssPolicy.NONE)


def write_pixels(drawable, babl: str, data: bytes, x: int = 0, y: int = 0, w: int | None = None,
                 h: int | None = None) -> None:
    w = drawable.get_width() if w is None else w
    h = drawable.get_height() if h is None else h
    buffer = drawable.get_buffer()
    buffer.set(Gegl.Rectangle.new(x, y, w, h), babl, data)
    buffer.flush()
    drawable.update(x, y, w, h)


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


def add_result_layer(image, src, name: str, colour: bytes, babl: str, alpha: bytes,
                     old_hair: bytes | None = None) -> tuple[Gimp.Layer, bool]:
    """The edited layer, at the source's offsets, right above it; its mask holds the edit's alpha, and it is
    composited in perceptual (sRGB) space, as the backend composites.

    Pixels and mask are written before the layer joins the image, so the undo group holds one cheap step
    (the insertion) instead of copies of every tile. `old_hair` (1 byte a pixel over the source) is the
    original's hair the edit left outside the face crop: it becomes a hidden channel OLD_HAIR_NAME (GIMP
    layers have one mask) for the user to turn into a selection and paint over. Returns the layer and
    whether that channel was added.
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
        # A new mask is the drawable being edited by default; the next brush stroke would land on it.
        layer.set_edit_mask(False)
        image.insert_layer(layer, src.get_parent(), image.get_item_position(src))
        added = old_hair is not None and add_old_hair_channel(image, old_hair, ox, oy, w, h)
    finally:
        image.undo_group_end()
    image.set_selected_layers([src])  # inserting selected the new layer; keep the source active, as Krita does
    return layer, added


def add_old_hair_channel(image, mask: bytes, ox: int, oy: int, w: int, h: int) -> bool:
    """The hair mask (over the layer at ox, oy) as a hidden channel of the image, clipped to the canvas.
    Channels are image-sized in GIMP; the part of the layer outside the canvas has no place in one."""
    iw, ih = image.get_width(), image.get_height()
    x0, y0, x1, y1 = max(ox, 0), max(oy, 0), min(ox + w, iw), min(oy + h, ih)
    if x1 <= x0 or y1 <= y0:
        return False
    rows = b"".join(mask[(y - oy) * w + x0 - ox:(y - oy) * w + x1 - ox] for y in range(y0, y1))
    if not rows.strip(b"\0"):
        return False
    channel = Gimp.Channel.new(image, OLD_HAIR_NAME, iw, ih, 50.0, Gegl.Color.new("#ff8000"))
    # An 8-bit image keeps its channels gamma-encoded (Y' u8), and Channel to Selection takes their values as
    # they are: the bytes go in unconverted. Deeper channels take "Y u8" exactly (v * 257, ...).
    own = Babl.format_get_encoding(channel.get_format())
    write_pixels(channel, own if own in ("Y u8", "Y' u8") else "Y u8", rows, x0, y0, x1 - x0, y1 - y0)
    channel.set_visible(False)  # it tints the canvas when shown; the user picks it (Channel to Selection)
    image.insert_channel(channel, None, 0)
    return True


if __name__ == "__main__":
    Gimp.main(HairClip.__gtype__, sys.argv)

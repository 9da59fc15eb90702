"""GIMP's side of the document: read and write drawables' pixels, and add the result layer in one undo step.

Split from the plug-in's entry point the way the Krita plug-in keeps kritadoc.py: this is the only code
that touches the image, and it never writes to the source layer.
"""

from __future__ import annotations

from gi.repository import Babl, Gegl, Gimp

from hairclip_shared import Image
from hairclip_shared.pixels import check_has_pixels, gimp_layout, to_wire
from hairclip_shared.wording import OLD_HAIR_NAME


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

"""``hairclip edit``: edit photos in-process, or on a running server with ``--server`` (no torch import then)."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hairclip import precision
from hairclip.errors import HairclipError
from hairclip.images import composite, load_image, read_photo, save_image
from hairclip.pipeline import DETECTORS
from hairclip.weights import add_checkpoint_options, checkpoint_files

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp"}


@dataclass
class Outcome:
    """What one edit produced, whichever way it ran."""

    layer: np.ndarray  # [H,W,4], the photo's dtype
    boxes: list[tuple[int, int, int, int]]  # x, y, w, h
    timings: dict[str, float]
    aligned: list[dict[str, np.ndarray]]  # per face: edited, inversion, aligned, mask (uint8 images)
    detectors: list[str] = field(default_factory=list)  # per face: which detector found it
    hair_outside_crop: float | None = None  # of the original hair, the fraction outside the face crops
    whole_hair: bool = False  # that hair was recoloured too


def _faces(value: str) -> str | int:
    if value in ("all", "largest"):
        return value
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("use all, largest or a face number (0 = leftmost)") from None
    if n < 0:
        raise argparse.ArgumentTypeError("face numbers start at 0")
    return n


def _rect(value: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("a selection is x,y,w,h in pixels") from None
    return x, y, w, h


def _inputs(paths: list[Path]) -> list[Path]:
    files = []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(p)
    return files


class InProcess:
    """Loads the models once; edits run here."""

    def __init__(self, args: argparse.Namespace):
        from hairclip.pipeline.editor import HairEditor
        from hairclip.pipeline.models import Models

        if args.random_tiny and checkpoint_files(args):
            raise HairclipError("--random-tiny builds its own networks; leave out --mapper, --e4e and --parsenet")
        if args.random_tiny:
            print("warning: random tiny networks: the result is noise (for tests and demos)", file=sys.stderr)
            models = Models.random_tiny(args.device, detector=args.detector, precision=args.precision)
        else:
            models = Models.load(args.device, args.weights_dir, download=args.download,
                                 detector=args.detector or "dlib", precision=args.precision,
                                 files=checkpoint_files(args))
        print(f"precision: {models.plan.describe()}", file=sys.stderr)
        self.editor = HairEditor(models)
        self.device = str(models.device)

    def run(self, photo: np.ndarray, args: argparse.Namespace, refs: dict[str, np.ndarray | None]) -> Outcome:
        from hairclip.pipeline.conditions import Conditions
        from hairclip.pipeline.editor import EditOptions
        from hairclip.pipeline.synthesize import to_uint8

        aligned = aligned_roles(args)
        cond = Conditions(hairstyle=args.hairstyle, colour=args.colour, rgb=args.rgb,
                          hairstyle_ref=refs["hairstyle"], colour_ref=refs["colour"],
                          hairstyle_ref_aligned="hairstyle_ref" in aligned, colour_ref_aligned="colour_ref" in aligned)
        opts = EditOptions(strength=args.strength, faces=args.faces, selection=args.selection,
                           aligned="source" in aligned, return_aligned=bool(args.save_aligned),
                           whole_hair=getattr(args, "whole_hair", None))
        result = self.editor.edit(photo, cond, opts)
        aligned = [{"edited": to_uint8(f.edited), "inversion": to_uint8(f.inversion),
                    "aligned": f.state.aligned.image1024,
                    "mask": (f.mask.clamp(0, 1) * 255).round().byte().cpu().numpy()}
                   for f in result.faces] if args.save_aligned else []
        boxes = [(x0, y0, x1 - x0, y1 - y0) for x0, y0, x1, y1 in result.boxes]
        return Outcome(result.layer, boxes, result.timings, aligned, [f.state.source for f in result.faces],
                       result.hair_outside_crop, result.whole_hair)


class OnServer:
    """Sends each edit to a running ``hairclip serve``; imports neither torch nor the pipeline."""

    def __init__(self, args: argparse.Namespace, address: str | None = None):
        from hairclip_shared.client import Client

        if args.precision != "auto":
            raise HairclipError("--precision applies to in-process edits; give it to `hairclip serve` instead")
        if checkpoint_files(args):
            raise HairclipError("--mapper, --e4e and --parsenet choose the server's files: give them to "
                                "`hairclip serve`, not to `hairclip edit --server`")
        self.client = Client(address or args.server[0], timeout=args.timeout)
        self.info = self.client.hello()
        self.device = self.info.device

    def run(self, photo: np.ndarray, args: argparse.Namespace, refs: dict[str, np.ndarray | None]) -> Outcome:
        from hairclip.images import array_to_image, image_to_array
        from hairclip_shared.protocol import EditRequest

        req = EditRequest(
            source=array_to_image(photo), hairstyle=args.hairstyle, colour=args.colour, rgb=args.rgb,
            hairstyle_ref=array_to_image(refs["hairstyle"]) if refs["hairstyle"] is not None else None,
            colour_ref=array_to_image(refs["colour"]) if refs["colour"] is not None else None,
            strength=args.strength, faces=args.faces, selection=args.selection,
            return_aligned=bool(args.save_aligned), preview=False, whole_hair=getattr(args, "whole_hair", None),
            aligned=tuple(r for r in aligned_roles(args) if r == "source" or refs[_REF_ROLES[r]] is not None))
        job = self.client.submit(req)
        result = job.result(timeout=args.job_timeout)
        layer = np.array(image_to_array(result.layer))
        aligned = []
        if args.save_aligned:  # four images per face, in the order the server's meta names
            order = result.meta.get("aligned_order", [])
            per_face = len(result.aligned) // max(len(result.faces), 1)
            for i in range(len(result.faces)):
                images = result.aligned[i * per_face:(i + 1) * per_face]
                aligned.append({name: np.array(image_to_array(im)) for name, im in zip(order, images, strict=False)})
        outside = result.meta.get("hair_outside_crop")  # absent from servers older than the field
        return Outcome(layer, [tuple(f.bbox) for f in result.faces], result.timings, aligned,
                       list(result.meta.get("detectors", [])), outside, bool(result.meta.get("whole_hair")))


_REF_ROLES = {"hairstyle_ref": "hairstyle", "colour_ref": "colour"}


def aligned_roles(args: argparse.Namespace) -> set[str]:
    """The protocol roles of the images marked aligned: ``--aligned`` marks the photo and every reference."""
    roles = set()
    if args.aligned or args.aligned_photo:
        roles.add("source")
    if args.aligned or args.aligned_hairstyle_ref:
        roles.add("hairstyle_ref")
    if args.aligned or args.aligned_colour_ref:
        roles.add("colour_ref")
    return roles


def _runner(args: argparse.Namespace, address: str | None) -> InProcess | OnServer:
    return OnServer(args, address) if address else InProcess(args)


def _cmd_edit(args: argparse.Namespace) -> int:
    inputs = _inputs(args.photos)
    if not inputs:
        raise HairclipError("no photos to edit")
    batch = len(inputs) > 1 or args.photos[0].is_dir()
    if batch and args.output.suffix:
        raise HairclipError("several photos need an output folder: -o DIR")
    if not any([args.hairstyle, args.colour, args.hairstyle_ref, args.colour_ref, args.rgb]):
        raise HairclipError("nothing to change: give --hairstyle, --colour, --rgb or a reference image")
    refs = {"hairstyle": load_image(args.hairstyle_ref) if args.hairstyle_ref else None,
            "colour": load_image(args.colour_ref) if args.colour_ref else None}
    if batch:  # sharded under torchrun, spread over --server's, resumable, reported: hairclip.batch
        from hairclip.batch import run_batch

        return run_batch(args, inputs, refs, _runner)
    path, out = inputs[0], args.output
    runner = _runner(args, args.server[0] if args.server else None)
    t0 = time.perf_counter()
    photo, info = read_photo(path)  # upright; its ICC profile and EXIF go onto the outputs
    outcome = runner.run(photo, args, refs)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(out, composite(photo, outcome.layer), info)
    if args.layer:
        save_image(args.layer, outcome.layer, info)
    if args.save_aligned:
        from hairclip.batch import write_aligned

        write_aligned(args.save_aligned, path.stem, outcome)
    found = outcome.detectors + [""] * (len(outcome.boxes) - len(outcome.detectors))
    where = ", ".join(f"{x},{y} {w}x{h}" + (f" by {d}" if d else "")
                      for (x, y, w, h), d in zip(outcome.boxes, found, strict=True))
    print(f"{path.name}: {len(outcome.boxes)} face(s) edited ({where}) in {time.perf_counter() - t0:.1f} s -> {out}")
    if note := hair_outside_note(outcome):
        print(f"{path.name}: {note}")
    return 0


def hair_outside_note(outcome: Outcome) -> str:
    """One line on the hair beyond the face crops: recoloured, or left as it was (and how to change that)."""
    share = outcome.hair_outside_crop
    if share is None or share < 0.005:
        return ""
    if outcome.whole_hair:
        return f"{share:.0%} of the hair lies outside the face crop(s); it was recoloured to match (--crop-only to not)"
    return (f"{share:.0%} of the hair lies outside the face crop(s) and keeps its old look; --whole-hair recolours "
            "it, or paint it over")


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "edit", help="edit the hair in photos",
        description="Edit the hair of the faces in a photo (or every photo of a folder) and write the result. "
                    "The output format follows the extension of -o.",
        epilog="examples:\n  hairclip edit me.jpg -o me_bob.png --hairstyle 'bob cut' --colour purple\n"
               "  hairclip edit photos/ -o out/ --hairstyle-ref star.jpg --server tcp://127.0.0.1:5570",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photos", nargs="+", type=Path, help="photos or folders of photos")
    p.add_argument("-o", "--output", type=Path, required=True, help="output file, or folder for several photos")
    p.add_argument("--hairstyle", help="hairstyle text, e.g. 'bob cut' (the prompt becomes 'bob cut hairstyle')")
    p.add_argument("--colour", "--color", dest="colour", help="colour text, e.g. 'purple' ('purple hair')")
    p.add_argument("--hairstyle-ref", type=Path, help="photo whose hairstyle to copy")
    p.add_argument("--colour-ref", "--color-ref", dest="colour_ref", type=Path, help="photo whose hair colour to copy")
    p.add_argument("--rgb", help="hair colour as #RRGGBB")
    p.add_argument("--strength", type=float, default=1.0,
                   help="0 = no change, 1 = the official edit (default), up to 2 for a stronger one")
    p.add_argument("--faces", type=_faces, default="all", help="all (default), largest, or N (0 = leftmost)")
    p.add_argument("--selection", type=_rect, help="edit only faces inside this rectangle: x,y,w,h")
    p.add_argument("--aligned", action="store_true",
                   help="the photo and the reference images are FFHQ-aligned face crops: no detection; a 1024 px "
                        "reference is then encoded exactly as HairCLIP does")
    p.add_argument("--aligned-photo", action="store_true", help="only the photo is an aligned face crop")
    p.add_argument("--aligned-hairstyle-ref", action="store_true",
                   help="only the hairstyle reference is an aligned face crop")
    p.add_argument("--aligned-colour-ref", "--aligned-color-ref", dest="aligned_colour_ref", action="store_true",
                   help="only the colour reference is an aligned face crop")
    whole = p.add_mutually_exclusive_group()
    whole.add_argument("--whole-hair", dest="whole_hair", action="store_true", default=None,
                       help="also recolour the hair beyond the face crop (long hair), by a Lab transfer to the "
                            "edited hair's colour; the default for colour-only edits")
    whole.add_argument("--crop-only", dest="whole_hair", action="store_false",
                       help="edit only inside the face crop, as before (the default when a hairstyle is given)")
    p.add_argument("--save-aligned", type=Path, metavar="DIR",
                   help="also write the aligned crop, inversion, edit and mask of each face here")
    p.add_argument("--layer", type=Path, help="also write the RGBA hair layer (file, or folder for several)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", default="auto", choices=precision.CHOICES, help=precision.HELP)
    p.add_argument("--weights-dir", type=Path, help="a folder with the official weight files")
    p.add_argument("--download", action="store_true", help="fetch missing weights first")
    add_checkpoint_options(p)
    p.add_argument("--server", metavar="ADDR", action="append",
                   help="edit on a running server, e.g. tcp://127.0.0.1:5570; repeat it to spread a folder "
                        "over several servers")
    p.add_argument("--force", action="store_true",
                   help="redo every photo of a folder, even those the report says are done with the same inputs")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the server to answer")
    p.add_argument("--job-timeout", type=float, default=600.0, help="seconds to wait for one edit on the server")
    p.add_argument("--detector", choices=DETECTORS, default=None,
                   help="how faces are found: dlib (default; the official FFHQ/e4e alignment; S3FD+FAN then tries "
                        "when dlib finds nothing, if their weights are present), fan (S3FD+FAN only), or centre "
                        "(one face in the middle; the default with --random-tiny)")
    p.add_argument("--random-tiny", action="store_true",
                   help="small random networks instead of the weights (no download): the result is noise, but "
                        "detection and alignment are real with --detector dlib; for tests and demos")
    p.set_defaults(func=_cmd_edit)

"""Long hair beyond the FFHQ crop, measured on a drawn portrait: does hair outside the crop reach the colour?

A 1600x2400 portrait (tests/portraits.py) with a face near the top and strand-textured hair to the bottom is
edited in the RGB mode (the target is exact even with random networks) with `Models.random_tiny` and
`KeyParser` (which finds the drawn hair; the random parser's masks are noise). Printed, crop-only against
whole-hair in the same run:
- the mean Lab distance between the hair's mean colour and the target, inside the face crop and outside it,
  before the edit and after each (goal: outside <= inside + 2 with whole hair);
- the seam: the mean Lab difference between vertically adjacent hair pixels across the crop's edge, against
  the same inside and outside the crop away from the edge (and the mean colour step across the hand-over);
- the pixels that changed where the layer's alpha is 0 (must be 0), and those outside the drawn hair that the
  crop-only edit leaves alone: how many, and how far from the hair;
- the median edit time of each mode (on a loaded shared machine the absolute figures are inflated).

    .venv/bin/python bench/long_hair.py [--size 1600x2400] [--repeat 3] [--picture PNG]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hairclip.color import masked_mean, rgb_to_lab  # noqa: E402
from hairclip.images import composite  # noqa: E402
from hairclip.pipeline import longhair  # noqa: E402
from hairclip.pipeline.conditions import Conditions  # noqa: E402
from hairclip.pipeline.editor import EditOptions, HairEditor  # noqa: E402
from hairclip.pipeline.faces import KnownFaces  # noqa: E402
from hairclip.pipeline.models import Models  # noqa: E402
from portraits import KeyParser, portrait  # noqa: E402

TARGET = (0x70, 0x30, 0xA0)


def lab(image: np.ndarray) -> torch.Tensor:
    return rgb_to_lab(torch.from_numpy(image.astype(np.float64) / 255).permute(2, 0, 1)[None])


def distance(image_lab: torch.Tensor, where: np.ndarray) -> float:
    mean = masked_mean(image_lab, torch.from_numpy(where.astype(np.float64))[None, None])
    target = rgb_to_lab(torch.tensor(TARGET, dtype=torch.float64).view(1, 3, 1, 1) / 255)
    return float((mean - target).flatten().norm())


def seam(image_lab: torch.Tensor, hair: np.ndarray, inside: np.ndarray, band: int) -> dict[str, float]:
    """Mean Lab step between vertically adjacent hair pixels: across the crop's edge, and away from it."""
    step = (image_lab[0, :, 1:] - image_lab[0, :, :-1]).norm(dim=0).numpy()
    pair = hair[1:] & hair[:-1]
    across = pair & (inside[1:] != inside[:-1])
    edge = np.where(inside, distance_transform_edt(inside), distance_transform_edt(~inside))  # px to the edge
    top = pair & (edge[1:] > 2 * band)
    strip_in = hair & inside & (edge > band) & (edge <= band + 24)  # just inside the hand-over band
    strip_out = hair & ~inside & (edge <= 24)  # just outside the crop
    return {"across the crop edge": float(step[across].mean()),
            "inside the crop, away from it": float(step[top & inside[1:]].mean()),
            "outside the crop, away from it": float(step[top & ~inside[1:]].mean()),
            "mean colour step over the hand-over": distance_between(image_lab, strip_in, strip_out)}


def distance_between(image_lab: torch.Tensor, a: np.ndarray, b: np.ndarray) -> float:
    ma = masked_mean(image_lab, torch.from_numpy(a.astype(np.float64))[None, None])
    mb = masked_mean(image_lab, torch.from_numpy(b.astype(np.float64))[None, None])
    return float((ma - mb).flatten().norm())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1600x2400")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--picture", type=Path, help="write photo | crop-only | whole-hair here (<= 1200 px wide)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    w, h = (int(v) for v in args.size.split("x"))
    side = 0.25 * w
    photo, hair, faces = portrait(w, h, [(w / 2, 0.17 * h, side, h - 0.02 * h)])
    models = Models.random_tiny("cpu", seed=0, detector=KnownFaces(faces))
    models.parser = KeyParser().to(models.device).eval()
    editor = HairEditor(models)
    cond = Conditions(rgb=TARGET)
    results, times = {}, {}
    for mode, whole in (("crop-only", False), ("whole-hair", True)):
        times[mode] = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            results[mode] = editor.edit(photo, cond, EditOptions(whole_hair=whole))
            times[mode].append(time.perf_counter() - t0)
    st = results["whole-hair"].faces[0].state
    x0, y0, x1, y1 = st.box
    inside = np.zeros(hair.shape, bool)
    inside[y0:y1, x0:x1] = longhair.square_weight(st.transform, st.box, torch.device("cpu"), seam=0).numpy() > 0
    band = round(longhair.SEAM_1024 * st.transform.photo_scale(1024))
    print(f"portrait {w}x{h}, face crop {x1 - x0}x{y1 - y0} px at {x0},{y0}; hair outside the crop: "
          f"{results['whole-hair'].hair_outside_crop:.1%} (drawn: {(hair & ~inside).sum() / hair.sum():.1%}); "
          f"hand-over band {band} px; target #{bytes(TARGET).hex()}")
    outs = {"before": photo, **{m: composite(photo, r.layer) for m, r in results.items()}}
    print("\nmean Lab distance of the hair's mean colour to the target")
    print(f"{'':12} {'inside crop':>12} {'outside crop':>13}")
    for name, image in outs.items():
        L = lab(image)
        print(f"{name:12} {distance(L, hair & inside):12.2f} {distance(L, hair & ~inside):13.2f}")
    print("\nseam: mean Lab step between vertically adjacent hair pixels")
    for name in ("crop-only", "whole-hair"):
        for k, v in seam(lab(outs[name]), hair, inside, band).items():
            print(f"{name:12} {k:40} {v:7.2f}")
    away = distance_transform_edt(~hair)  # px from the drawn hair
    crop_changed = (outs["crop-only"] != photo).any(-1)  # the crop's own edit, with its 1-2 px warp fringe
    for name in ("crop-only", "whole-hair"):
        changed = (outs[name] != photo).any(-1)
        unmasked = int((changed & (results[name].layer[..., 3] == 0)).sum())
        extra = changed & ~crop_changed & ~inside & ~hair
        far = float(away[extra].max()) if extra.any() else 0.0
        print(f"{name}: changed pixels where the layer's alpha is 0: {unmasked}; outside the drawn hair and beyond "
              f"the crop edit's own: {int(extra.sum())}, {int((extra & (away > 3)).sum())} of them over 3 px from "
              f"the hair (max {far:.1f} px)")
    med = {m: statistics.median(t) for m, t in times.items()}
    print(f"\nmedian edit time over {args.repeat}: crop-only {med['crop-only']:.2f} s, whole-hair "
          f"{med['whole-hair']:.2f} s (x{med['whole-hair'] / med['crop-only']:.2f}; random tiny networks, one "
          "thread, a shared machine)")
    if args.picture:
        from PIL import Image

        strip = np.concatenate([outs["before"], outs["crop-only"], outs["whole-hair"]], 1)
        im = Image.fromarray(strip)
        scale = min(1.0, 1200 / im.width)
        im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS).save(args.picture, optimize=True)
        print(f"picture: {args.picture}")


if __name__ == "__main__":
    main()

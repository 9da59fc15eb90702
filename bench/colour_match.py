"""How close an RGB colour edit gets to the asked colour: mean Lab distance of the hair, before and after.

Runs the real pipeline with small random networks on a synthetic test photo (no weights are needed): the
distance it reports is what the Lab matching guarantees whatever the mapper does; with the real weights the
mapper's own colour reference edit comes first and the match only closes what is left.

    python bench/colour_match.py
"""

from __future__ import annotations

import numpy as np
import torch

from hairclip.pipeline import parse
from hairclip.pipeline.conditions import Conditions, hair_lab_distance, image_tensor, match_hair_colour
from hairclip.pipeline.editor import HairEditor
from hairclip.pipeline.models import Models

TARGETS = {"purple": (150, 40, 200), "copper": (184, 115, 51), "platinum": (229, 228, 226), "black": (20, 20, 20)}


def main() -> None:
    editor = HairEditor(Models.random_tiny("cpu", seed=0))
    yy, xx = np.mgrid[0:512, 0:448]
    photo = np.stack([(xx // 2) % 256, (yy // 2) % 256, ((xx + yy) // 3) % 256], -1).astype(np.uint8)
    print(f"{'target':<10} {'rgb':<16} {'before':>8} {'after':>8}   (mean Lab distance of the hair to the target)")
    with torch.inference_mode():
        for name, rgb in TARGETS.items():
            face = editor.edit(photo, Conditions(rgb=rgb)).faces[0]
            original = image_tensor(face.state.aligned.image1024, editor.device)
            before = hair_lab_distance(original, face.state.hair_before[None, None].float(), rgb)
            hair = parse.hair(editor.models.parser, face.edited[None])[None].float()
            after = hair_lab_distance(match_hair_colour(face.edited[None], hair, rgb), hair, rgb)
            print(f"{name:<10} {str(rgb):<16} {before:8.2f} {after:8.2f}")


if __name__ == "__main__":
    main()

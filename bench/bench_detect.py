"""Face detection time: our DlibDetector against the official call (``detector(rgb, 1)``, then the 68-point
predictor on every box) on scikit-image's astronaut, as it is (512 px) and enlarged 3x and 6x, where we search
the photo shrunk to DETECT_SIDE. Prints medians and the ratio; run with ``python bench/bench_detect.py``."""

from __future__ import annotations

import time

import dlib
import numpy as np
import skimage.data
from timing import median_s  # bench/timing.py: the script's folder is on sys.path

from hairclip.pipeline.faces import DETECT_SIDE, DlibDetector, dlib_predictor_path


def main(repeat: int = 5) -> None:
    t0 = time.perf_counter()
    ours = DlibDetector()
    print(f"loading dlib's detector and 68-point predictor: {time.perf_counter() - t0:.2f} s")
    hog, predictor = dlib.get_frontal_face_detector(), dlib.shape_predictor(str(dlib_predictor_path()))

    def official(img):
        return [predictor(img, r) for r in hog(img, 1)]

    base = skimage.data.astronaut()
    print(f"{'photo':>12} {'official':>10} {'ours':>10} {'ratio':>7}  (median of {repeat}; ours searches at most "
          f"{DETECT_SIDE} px)")
    for k in (1, 3, 6):
        img = np.ascontiguousarray(np.kron(base, np.ones((k, k, 1), np.uint8)))
        ref = median_s(lambda img=img: official(img), 1 if k == 6 else repeat)
        mine = median_s(lambda img=img: ours.detect(img), repeat)
        print(f"{img.shape[1]:>5}x{img.shape[0]:<6} {ref:>9.2f}s {mine:>9.2f}s {ref / mine:>6.1f}x")


if __name__ == "__main__":
    main()

"""Training steps per second at full size: StyleGAN2 1024, CLIP ViT-B/32, IR-SE50 and the face parser, with
random weights (speed does not depend on their values) and the official edit sampling (references included).

    python bench/bench_train.py [--batch 1 4] [--steps 3] [--threads N] [--device cpu] [--amp off]

Each batch size runs in a fresh subprocess, so its peak memory is its own. One warm-up step, then the median
of ``--steps`` timed steps on the same batch. Prints one line per batch size and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backend"))


def run_case(batch: int, steps: int, device: str, amp: str, threads: int | None) -> dict:
    import resource

    import numpy as np
    import torch
    from PIL import Image

    from hairclip.nets.irse import Backbone
    from hairclip.nets.mapper import HairMapper, build_clip
    from hairclip.nets.parsenet import UNet
    from hairclip.nets.stylegan2 import Generator
    from hairclip.train import data as D
    from hairclip.train.trainer import Networks, TrainConfig, Trainer

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    nets = Networks(mapper=HairMapper(build_clip()), decoder=Generator(1024, 512, 8, channel_multiplier=2),
                    parser=UNet().eval(), facenet=Backbone(112, 50, "ir_se", drop_ratio=0.6).eval())
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        for name in ("hairstyle", "color"):
            (Path(tmp) / name).mkdir()
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8)).save(
                    Path(tmp) / name / f"{i}.jpg")
        sampler = D.EditSampler(hairstyle_references=D.list_images(Path(tmp) / "hairstyle"),
                                color_references=D.list_images(Path(tmp) / "color"))
        ds = D.LatentsDataset(torch.randn(64, 18, 512), sampler)
        config = TrainConfig(exp_dir=str(Path(tmp) / "run"), batch_size=batch, workers=0, amp=amp)
        trainer = Trainer(config, nets, ds, device=device, progress=False)
        # A batch that has every kind of condition: hairstyle text and image, colour text and image.
        samples = [ds[(0, i)] for i in range(64)]
        kinds = ["hairstyle_text", "hairstyle_image", "color_text", "color_image"]
        chosen = [next(s for s in samples if getattr(s.edit, k)) for k in kinds]
        chosen = (chosen * batch)[:batch] if batch < 4 else chosen + samples[:batch - 4]
        b = D.collate(chosen)
        sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
        trainer.train_step(b)  # warm-up: allocator, oneDNN/cuDNN kernels
        sync()
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            trainer.train_step(b)
            sync()
            times.append(time.perf_counter() - t)
    s = statistics.median(times)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB on Linux
    out = {"batch": batch, "s_per_step": s, "steps_per_s": 1 / s, "images_per_s": batch / s, "peak_rss_gib": peak,
           "device": str(trainer.device), "threads": torch.get_num_threads(), "amp": str(trainer.amp),
           "descriptions": b.descriptions}
    if trainer.device.type == "cuda":
        out["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="off", help="auto, bf16, fp16 or off")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--case", type=int, default=None, help=argparse.SUPPRESS)  # internal: run one case here
    args = ap.parse_args()
    if args.case is not None:
        print(json.dumps(run_case(args.case, args.steps, args.device, args.amp, args.threads)))
        return
    results = []
    for batch in args.batch:
        cmd = [sys.executable, __file__, "--case", str(batch), "--steps", str(args.steps), "--device", args.device,
               "--amp", args.amp] + (["--threads", str(args.threads)] if args.threads else [])
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            print(f"batch {batch}: failed\n{run.stderr[-2000:]}", file=sys.stderr)
            continue
        r = json.loads(run.stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"batch {batch}: {r['s_per_step']:.2f} s/step = {r['steps_per_s']:.4f} steps/s "
              f"({r['images_per_s']:.3f} images/s), peak RSS {r['peak_rss_gib']:.1f} GiB, {r['device']}, "
              f"{r['threads']} threads, amp {r['amp']}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()

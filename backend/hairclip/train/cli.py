"""``hairclip train`` and ``hairclip invert``. Nothing heavy is imported until a handler runs.

Multi-GPU: ``torchrun --nproc_per_node N -m hairclip train ...`` (``--batch-size`` is per process).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from hairclip.errors import HairclipError
from hairclip.train.config import TrainConfig

# Which official option each flag also answers to: every TrainConfig field is a flag, spelled with dashes
# (``--latents-train-path``) and, for commands copied from the official README, with underscores.
_HELP = {
    "exp_dir": "experiment folder: checkpoints/, logs/ (TensorBoard), opt.json",
    "latents_train_path": "W+ latents [N, 18, 512] (.pt, e.g. from `hairclip invert`); none: random faces",
    "latents_test_path": "validation latents; none: random faces (test_dataset_size 0: no validation)",
    "hairstyle_ref_img_train_path": "folder of hairstyle reference images (aligned 1024 px faces)",
    "color_ref_img_train_path": "folder of colour reference images",
    "color_ref_img_in_domain_path": "folder with one sub-folder per colour prompt ('purple hair/')",
    "hairstyle_description": "file of hairstyle prompts, one per line (default: the official 44)",
    "color_description": "comma-separated colour names (default: the official 12)",
    "batch_size": "samples per step and process",
    "optim_name": "ranger (official) or adam",
    "amp": "mixed precision: auto (bf16/fp16 on CUDA), bf16, fp16 or off",
    "checkpoint_path": "start from this hairclip.pt (fine-tuning) instead of a new mapper",
    "clip": "CLIP for a new mapper: store (from hairclip.pt in the weight store), openai (download), or a file",
    "max_steps": "optimiser steps to train for",
}


def _config_fields():
    return dataclasses.fields(TrainConfig)


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    for f in _config_fields():
        names = [f"--{f.name.replace('_', '-')}"] + ([f"--{f.name}"] if "_" in f.name else [])
        help_text = _HELP.get(f.name, "")
        if isinstance(f.default, bool):
            p.add_argument(*names, dest=f.name, action="store_true", default=argparse.SUPPRESS, help=help_text)
        else:
            kind = type(f.default)
            metavar = "PATH" if f.name.endswith(("_path", "_dir")) else {int: "N", float: "X"}.get(kind, "TEXT")
            p.add_argument(*names, dest=f.name, type=kind, default=argparse.SUPPRESS, metavar=metavar,
                           help=f"{help_text} (default: {f.default!r})".strip())


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a HairCLIP mapper (writes hairclip.pt-layout checkpoints)",
        description="Train HairCLIP's mapper with the official losses, probabilities and weights. "
                    "Multi-GPU: torchrun --nproc_per_node N -m hairclip train ...")
    _add_config_flags(p)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --exp-dir from its latest checkpoint (other flags override its options)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--weights-dir", type=Path, default=None, help="the weight store")
    p.add_argument("--no-download", action="store_true", help="fail instead of fetching missing weights")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    q = subparsers.add_parser(
        "invert", help="e4e-invert a folder of photos into training latents",
        description="Find, align and e4e-invert the face in each photo of FOLDER; writes an [N, 18, 512] tensor "
                    "and, beside it, a .txt with the source of each row.")
    q.add_argument("folder", type=Path)
    q.add_argument("-o", "--output", type=Path, required=True, help="the .pt file to write")
    q.add_argument("--aligned", action="store_true", help="the photos are FFHQ-aligned crops: no face detection")
    q.add_argument("--all-faces", action="store_true", help="every face of a photo, not only the largest")
    q.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    q.add_argument("--weights-dir", type=Path, default=None, help="the weight store")
    q.add_argument("--no-download", action="store_true", help="fail instead of fetching missing weights")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_invert)


# ---------------------------------------------------------------------------------------------- train


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The run's options: the saved ones of ``--resume`` (if any), overridden by the flags given."""
    from hairclip.train.config import TrainingError

    given = {f.name: getattr(args, f.name) for f in _config_fields() if hasattr(args, f.name)}
    if not given.get("exp_dir"):
        raise TrainingError("--exp-dir is required")
    exp = Path(given["exp_dir"])
    if args.resume:
        opt_file = exp / "opt.json"
        if not opt_file.is_file():
            raise TrainingError(f"{exp}: nothing to resume (no opt.json)")
        return TrainConfig.from_opts(json.loads(opt_file.read_text()) | given)
    if (exp / "checkpoints" / "latest_model.pt").exists():
        raise TrainingError(f"{exp} already holds a run; continue it with --resume or choose another --exp-dir")
    return TrainConfig(**given)


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from hairclip.device import pick_device
    from hairclip.train.trainer import Trainer, build_datasets, init_distributed, load_networks
    from hairclip.weights import WeightStore

    config = train_config(args)
    device = pick_device(args.device)
    dist = init_distributed(device)
    if device.type == "cuda" and dist.world_size > 1:
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    torch.manual_seed(config.seed)  # the same initial mapper on every rank (DDP broadcasts rank 0's anyway)
    store = WeightStore(args.weights_dir)
    if not dist.main:
        dist.barrier()  # rank 0 downloads whatever is missing first
    nets = load_networks(config, store, download=not args.no_download and dist.main)
    if dist.main:
        dist.barrier()
    train_set, val_set = build_datasets(config, nets.decoder)
    trainer = Trainer(config, nets, train_set, val_set, device=device, dist=dist, progress=not args.no_progress)
    if args.resume:
        trainer.resume()
    if dist.main:
        print(f"hairclip train: {len(train_set)} training latents, {len(val_set) if val_set else 0} validation; "
              f"step {trainer.step} of {config.max_steps}, batch {config.batch_size} x {dist.world_size} "
              f"on {device}", file=sys.stderr)
    metrics = trainer.train()
    if dist.main:
        print(f"hairclip train: done at step {trainer.step}; loss {metrics.get('loss', float('nan')):.4f}; "
              f"checkpoints in {trainer.checkpoint_dir}", file=sys.stderr)
    if dist.world_size > 1:
        torch.distributed.destroy_process_group()
    return 0


# ---------------------------------------------------------------------------------------------- invert


def invert_images(paths: Sequence[Path], inverter, detector=None, *, all_faces: bool = False,
                  progress: bool = True, root: Path | None = None):
    """W+ latents ``[N, 18, 512]`` of the faces in ``paths``, the source of each row, and the skipped files.

    ``detector`` None: each image is an aligned crop already (``aligned_input``); otherwise its largest face
    (or all) is aligned the e4e way (``align_face``).
    """
    import torch
    from tqdm import tqdm

    from hairclip.images import load_image
    from hairclip.pipeline.align import align_face, aligned_input, to_rgb8
    from hairclip.pipeline.faces import select_faces

    latents, names, skipped = [], [], []
    for path in tqdm(paths, unit="image", disable=not progress, dynamic_ncols=True):
        name = str(path.relative_to(root)) if root else str(path)
        try:
            photo = to_rgb8(load_image(path))  # upright, as `hairclip edit` reads it
        except (HairclipError, ValueError) as exc:
            skipped.append((name, f"unreadable ({exc})"))
            continue
        if detector is None:
            crops = [aligned_input(photo).image]
        else:
            faces = detector.detect(photo)
            try:
                chosen = select_faces(faces, "all" if all_faces else "largest")
            except HairclipError as exc:
                skipped.append((name, exc.message))
                continue
            crops = [align_face(photo, faces[i].landmarks, crop1024=False).image for i in chosen]
        for j, crop in enumerate(crops):
            latents.append(inverter(crop)[0].float().cpu())
            names.append(name if len(crops) == 1 else f"{name}#{j}")
    out = torch.stack(latents) if latents else torch.zeros(0, 18, 512)
    return out, names, skipped


def cmd_invert(args: argparse.Namespace) -> int:
    import torch

    from hairclip.checkpoints import load_e4e
    from hairclip.device import pick_device
    from hairclip.pipeline.invert import Inverter
    from hairclip.pipeline.models import make_detector
    from hairclip.train.data import list_images
    from hairclip.weights import WeightStore

    paths = list_images(args.folder) if args.folder.is_dir() else []
    if not paths:
        print(f"hairclip invert: no images in {args.folder}", file=sys.stderr)
        return 1
    device = pick_device(args.device)
    store = WeightStore(args.weights_dir)
    e4e = load_e4e(store.resolve("e4e_ffhq_encode.pt", download=not args.no_download))
    inverter = Inverter(e4e.encoder.to(device), e4e.latent_avg.to(device), cache_size=1)
    detector = None if args.aligned else make_detector("dlib", device, store)  # the official alignment
    latents, names, skipped = invert_images(paths, inverter, detector, all_faces=args.all_faces,
                                            progress=not args.no_progress, root=args.folder)
    for name, why in skipped:
        print(f"hairclip invert: skipped {name}: {why}", file=sys.stderr)
    if not len(latents):
        print("hairclip invert: no face was inverted; nothing written", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(latents, args.output)
    args.output.with_suffix(".txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    print(f"hairclip invert: {len(latents)} latents from {len(paths) - len(skipped)} of {len(paths)} images "
          f"-> {args.output}", file=sys.stderr)
    return 0

"""The training loop (``mapper/training/coach.py``), for batches above 1, mixed precision and DDP.

One step, as in the official coach: render the latents w with the frozen StyleGAN2 (stored noise), embed each
sample's conditions with the frozen CLIP inside the mapper (text prompts; hair-masked reference images),
``w_hat = w + 0.1 · mapper(w, ...)``, render w_hat, and minimise `HairCLIPLoss` over the sub-mappers only.

Differences from the official loop, each deliberate:

* ``global_step`` counts finished updates (the official logs step 0 after the first update);
* validation renders with the stored noise, as inference does (the official used random noise there), and
  draws the same edits at every validation, so its losses are comparable from one validation to the next;
* checkpoints are written in the exact ``hairclip.pt`` layout, with the optimiser and step in a separate
  ``latest_state.pt`` beside them, so a run resumes exactly where it stopped;
* CLIP is rounded once, at the start, to the fp16 values the checkpoint stores: the mapper is trained against
  the very CLIP it is saved with (a no-op for the published CLIP, which is fp16 already).

The networks, the process group and the datasets a run starts from are built in train/parts.py.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from hairclip.checkpoints import save_hairclip, strip_prefix
from hairclip.device import prepare
from hairclip.nets.mapper import EDIT_SCALE
from hairclip.precision import TRAINING
from hairclip.train import data as D
from hairclip.train.config import TrainConfig, TrainingError
from hairclip.train.losses import HairCLIPLoss, LossWeights, Step, hair_masks, summarize
from hairclip.train.parts import (  # noqa: F401  (train/cli.py and the tests import these from here)
    ConditionedOffsets,
    Distributed,
    Networks,
    amp_dtype,
    build_datasets,
    init_distributed,
    load_networks,
    round_clip_like_checkpoint,
)
from hairclip.train.ranger import Ranger

# ---------------------------------------------------------------------------------------------- trainer


@dataclass
class StepOutput:
    """One training step's metrics, and the images before and after the edit when asked for."""

    metrics: dict[str, float]
    x: torch.Tensor | None = None
    x_hat: torch.Tensor | None = None


class Trainer:
    """Owns the networks on one device, the optimiser, the logs and the checkpoints of one run (``exp_dir``)."""

    def __init__(self, config: TrainConfig, nets: Networks, train_set: D.LatentsDataset,
                 val_set: D.LatentsDataset | None = None, *, device: torch.device | str = "cpu",
                 dist: Distributed | None = None, progress: bool = True):
        self.config = config
        self.device = torch.device(device)
        self.dist = dist or Distributed()
        self.progress = progress
        self.train_set, self.val_set = train_set, val_set
        self.step = 0
        self.best_val_loss: float | None = None
        self.exp_dir = Path(config.exp_dir)
        self.checkpoint_dir = self.exp_dir / "checkpoints"
        self.log_dir = self.exp_dir / "logs"

        self.mapper, self.decoder = nets.mapper, nets.decoder
        self.parser, self.facenet = nets.parser, nets.facenet
        config.stylegan_size = self.decoder.size
        round_clip_like_checkpoint(self.mapper.clip_model)
        for frozen in (self.mapper.clip_model, self.decoder, self.parser, self.facenet):
            frozen.requires_grad_(False).eval().to(self.device)
        for net, role in ((self.decoder, "generator"), (self.parser, "parser"), (self.facenet, "facenet")):
            TRAINING.apply(net, role)
        self.mapper.to(self.device)
        self._train_mode()
        self.params = [p for n, p in self.mapper.named_parameters() if not n.startswith("clip_model.")]
        self.local_offsets = ConditionedOffsets(self.mapper)
        self.offsets: nn.Module = self.local_offsets
        if self.dist.world_size > 1:
            ids = None
            if self.device.type == "cuda":
                ids = [self.device.index if self.device.index is not None else torch.cuda.current_device()]
            self.offsets = nn.parallel.DistributedDataParallel(
                self.local_offsets, device_ids=ids, broadcast_buffers=False, find_unused_parameters=True)
        self.criterion = HairCLIPLoss(self.mapper.clip_model, self.facenet, LossWeights.from_options(config))
        self.optimizer = self._optimizer()
        self.amp = amp_dtype(self.device, config.amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self._writer = None
        self._history: dict[str, list[float]] = {}

    def _train_mode(self) -> None:
        self.mapper.train()
        self.mapper.clip_model.eval()  # frozen, whatever mode its parent is in

    def _optimizer(self) -> torch.optim.Optimizer:
        name = self.config.optim_name.lower()
        if name == "adam":
            return torch.optim.Adam(self.params, lr=self.config.learning_rate)
        if name == "ranger":
            return Ranger(self.params, lr=self.config.learning_rate)
        raise TrainingError(f"optim_name must be ranger or adam, not {self.config.optim_name!r}")

    def _autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    # ------------------------------------------------------------------------------------------ one step

    def render(self, w: torch.Tensor) -> torch.Tensor:
        image, _ = self.decoder([w], input_is_latent=True, randomize_noise=False, truncation=1)
        return image

    def _condition(self, tokens: torch.Tensor | None, has_text: torch.Tensor, image: torch.Tensor | None,
                   has_image: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """CLIP embeddings ``[B, D]`` (text if given, else the hair-masked image) and the image's hair mask."""
        emb = torch.zeros(b, self.mapper.clip_model.text_projection.shape[1], device=self.device)
        mask = None
        if has_text.any():
            idx = has_text.nonzero().squeeze(1).to(self.device)
            emb[idx] = self.mapper.encode_text(tokens[idx]).float()
        if has_image.any():
            idx = has_image.nonzero().squeeze(1).to(self.device)
            mask = image.new_zeros(image.shape[0], 1, *image.shape[2:])
            mask[idx] = hair_masks(self.parser, image[idx], self.config.parse_size).to(mask.dtype)
            emb[idx] = self.mapper.encode_image(image[idx] * mask[idx]).float()
        return emb, mask

    def forward(self, batch: D.Batch) -> tuple[torch.Tensor, dict, Step]:
        """The loss of one batch (already on the device), as ``Coach.train``'s body up to ``calc_loss``."""
        b = len(batch)
        w = batch.w
        with torch.no_grad(), self._autocast():
            x = self.render(w)
            hs, _ = self._condition(batch.hairstyle_tokens, batch.has_hairstyle_text, batch.hairstyle_image,
                                    batch.has_hairstyle_image, b)
            col, col_mask = self._condition(batch.color_tokens, batch.has_color_text, batch.color_image,
                                            batch.has_color_image, b)
        has_hs = (batch.has_hairstyle_text | batch.has_hairstyle_image).cpu()
        has_col = (batch.has_color_text | batch.has_color_image).cpu()
        # Validation runs on the main rank only, so it must not enter DDP's (collective) forward.
        offsets = self.offsets if torch.is_grad_enabled() else self.local_offsets
        w_hat = w + EDIT_SCALE * offsets(w, hs, has_hs, col, has_col)
        with self._autocast():
            x_hat = self.render(w_hat)
        size = self.config.parse_size
        s = Step(w=w, w_hat=w_hat, x=x, x_hat=x_hat, hair_x=hair_masks(self.parser, x, size),
                 hair_x_hat=hair_masks(self.parser, x_hat, size),
                 has_hairstyle_text=batch.has_hairstyle_text.cpu(), has_hairstyle_image=batch.has_hairstyle_image.cpu(),
                 has_color_text=batch.has_color_text.cpu(), has_color_image=batch.has_color_image.cpu(),
                 hairstyle_text=hs, hairstyle_reference=hs, color_text=col, color_image=batch.color_image,
                 color_image_hair=col_mask)
        with self._autocast():
            loss, terms = self.criterion(s)
        return loss, terms, s

    def train_step(self, batch: D.Batch) -> StepOutput:
        prepare(self.device)  # subnormal floats make CPU steps several times slower
        batch = batch.to(self.device)
        # Zeroed rather than dropped: a sub-mapper unused in this batch keeps its momentum going, as in the
        # official (torch 1.x) loop, and as DDP's unused-parameter handling does on every rank.
        self.optimizer.zero_grad(set_to_none=False)
        loss, terms, s = self.forward(batch)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        return StepOutput(summarize(loss, terms), x=s.x.detach(), x_hat=s.x_hat.detach())

    # ------------------------------------------------------------------------------------------ the loop

    def loader(self, start_step: int) -> DataLoader:
        c = self.config
        batches = D.StepBatches(len(self.train_set), c.batch_size, world_size=self.dist.world_size,
                                rank=self.dist.rank, seed=c.seed, start_step=start_step)
        return DataLoader(self.train_set, batch_sampler=batches, collate_fn=D.collate, num_workers=c.workers,
                          pin_memory=self.device.type == "cuda", persistent_workers=False)

    def train(self) -> dict[str, float]:
        """Train until ``max_steps``; returns the last step's metrics. Ctrl-C saves ``latest_model.pt`` first."""
        from tqdm import tqdm

        c = self.config
        self._prepare_dirs()
        metrics: dict[str, float] = {}
        bar = tqdm(total=c.max_steps, initial=self.step, disable=not (self.progress and self.dist.main),
                   unit="step", dynamic_ncols=True)
        batches: Iterator[D.Batch] = iter(self.loader(self.step))
        try:
            while self.step < c.max_steps:
                batch = next(batches)
                out = self.train_step(batch)
                metrics = out.metrics
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}")
                if self.dist.main:
                    self._accumulate(metrics)
                    if self.step % c.board_interval == 0 or self.step == 1:
                        self.log_metrics(self._drain(), "train")
                    if self.step % c.image_interval == 0 or self.step == 1:
                        self.save_grid(self.log_dir / "images_train" / f"{self.step:06d}.jpg", batch, out.x,
                                       out.x_hat)
                last = self.step == c.max_steps
                if self.step % c.val_interval == 0 or last:
                    val = self.validate() if self.dist.main else None
                    if val and (self.best_val_loss is None or val["loss"] < self.best_val_loss):
                        self.best_val_loss = val["loss"]
                        self.save("best_model.pt", val)
                if self.dist.main and (self.step % c.save_interval == 0 or last):
                    self.save("latest_model.pt", metrics)
                self.dist.barrier()
        except KeyboardInterrupt:
            if self.dist.main and self.step > 0:
                self.save("latest_model.pt", metrics)
            raise
        finally:
            bar.close()
            if self._writer:  # False when TensorBoard is missing
                self._writer.flush()
        return metrics

    @torch.no_grad()
    def validate(self) -> dict[str, float] | None:
        """Mean losses over the validation set (at most ``val_batches`` batches), logged as ``test/*``."""
        if self.val_set is None or len(self.val_set) == 0:
            return None
        c = self.config
        self.mapper.eval()
        loader = DataLoader(self.val_set, batch_sampler=D.validation_batches(len(self.val_set), c.test_batch_size,
                                                                             c.val_batches),
                            collate_fn=D.collate, num_workers=c.test_workers)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        total, n = 0.0, 0
        for i, batch in enumerate(loader):
            batch = batch.to(self.device)
            loss, terms, s = self.forward(batch)
            total, n = total + float(loss) * len(batch), n + len(batch)
            for name, (values, rows) in terms.items():
                sums[name] = sums.get(name, 0.0) + float(values[rows].sum())
                counts[name] = counts.get(name, 0) + int(rows.sum())
            if i < c.val_image_batches:
                self.save_grid(self.log_dir / "images_val" / f"{self.step:06d}-{i:03d}.jpg", batch, s.x, s.x_hat,
                               tensorboard=f"val/{i}" if i == 0 else None)
        self._train_mode()
        metrics = {k: sums[k] / counts[k] for k in sums} | {"loss": total / max(n, 1)}
        self.log_metrics(metrics, "test")
        return metrics

    # ------------------------------------------------------------------------------------------ logs

    def _prepare_dirs(self) -> None:
        if self.dist.main:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self.exp_dir / "opt.json").write_text(json.dumps(self.config.to_opts(), indent=4, sort_keys=True))

    @property
    def writer(self):
        """TensorBoard's writer (needs the ``tensorboard`` package: the ``[train]`` extra); None without it."""
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn("TensorBoard logs are off because TensorBoard is not installed; the metrics still go "
                              f"to {self.log_dir / 'metrics.jsonl'}. Turn them on with: pip install "
                              "'hairclip-studio[train]' (in a checkout: bash tools/setup.sh dev,train)", stacklevel=2)
                self._writer = False
            else:
                self._writer = SummaryWriter(log_dir=str(self.log_dir))
        return self._writer or None

    def _accumulate(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self._history.setdefault(k, []).append(v)

    def _drain(self) -> dict[str, float]:
        """Each metric averaged over the steps since the last log (over those steps where it occurred)."""
        out = {k: float(np.mean(v)) for k, v in self._history.items() if v}
        self._history = {}
        return out

    def log_metrics(self, metrics: dict[str, float], prefix: str) -> None:
        """TensorBoard scalars ``prefix/name`` and a line of ``logs/metrics.jsonl``."""
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(f"{prefix}/{k}", v, self.step)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": self.step, "split": prefix, "time": time.time(), **metrics}) + "\n")

    def save_grid(self, path: Path, batch: D.Batch, x: torch.Tensor, x_hat: torch.Tensor,
                  tensorboard: str | None = None) -> None:
        """One row per sample: original, edit, then the hairstyle and colour references where the batch has any."""
        size = self.config.image_log_size
        columns = [x, x_hat] + [t for t in (batch.hairstyle_image, batch.color_image) if t is not None]
        tiles = torch.cat([F.adaptive_avg_pool2d(t.detach().float(), size).cpu() for t in columns], dim=3)
        grid = torch.cat(list(tiles), dim=1)  # rows stacked vertically
        pixels = ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=90)
        if tensorboard and self.writer is not None:
            self.writer.add_image(tensorboard, pixels, self.step, dataformats="HWC")
            self.writer.add_text(tensorboard + "/descriptions", " | ".join(batch.descriptions), self.step)

    # ------------------------------------------------------------------------------------------ checkpoints

    def save(self, name: str, metrics: dict[str, float] | None = None) -> Path:
        """``checkpoints/<name>`` in the hairclip.pt layout; for ``latest_model.pt`` also the resume state."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path = self.checkpoint_dir / name
        save_hairclip(path, self.mapper, self.decoder, self.config.to_opts())
        if name == "latest_model.pt":
            state = {"step": self.step, "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                     "best_val_loss": self.best_val_loss}
            tmp = self.checkpoint_dir / "latest_state.pt.tmp"
            torch.save(state, tmp)
            tmp.replace(self.checkpoint_dir / "latest_state.pt")
        with open(self.checkpoint_dir / "timestamp.txt", "a", encoding="utf-8") as f:
            label = "**Best**: " if name == "best_model.pt" else ""
            f.write(f"{label}Step - {self.step}, {name}\n{metrics or {}}\n")
        return path

    def resume(self) -> int:
        """Continue from ``checkpoints/latest_model.pt`` and ``latest_state.pt``: the mapper, the optimiser, the
        step and the best validation loss. Returns the step."""
        ckpt, state_file = self.checkpoint_dir / "latest_model.pt", self.checkpoint_dir / "latest_state.pt"
        if not (ckpt.is_file() and state_file.is_file()):
            raise TrainingError(f"{self.checkpoint_dir}: no latest_model.pt and latest_state.pt to resume from")
        data = torch.load(ckpt, map_location="cpu", weights_only=True)
        self.mapper.load_state_dict(strip_prefix(data["state_dict"], "mapper"), strict=True)
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.best_val_loss = int(state["step"]), state["best_val_loss"]
        return self.step

"""Training: edit sampling, batches, Ranger, the loop, checkpoints, resume, logs, DDP and `hairclip invert`.

The networks are small random configurations of the real code. The mapper is fixed at 18 W+ layers; the
decoder is a 4 px StyleGAN2 (same code, n_latent 2, so only the first two layers reach the image: enough to
train on, and a checkpoint in the hairclip.pt layout with ``stylegan_size`` 4 loads strictly).
"""

import copy
import functools
import importlib.util
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hairclip.checkpoints import load_hairclip
from hairclip.nets.e4e import Encoder4Editing
from hairclip.nets.irse import Backbone
from hairclip.nets.mapper import COLOURS, HAIRSTYLE_PROMPTS, TINY_CLIP, HairMapper, build_clip, tokenize
from hairclip.nets.parsenet import UNet
from hairclip.nets.stylegan2 import Generator
from hairclip.pipeline.faces import Face, KnownFaces
from hairclip.pipeline.invert import Inverter
from hairclip.train import data as D
from hairclip.train.cli import invert_images
from hairclip.train.ranger import Ranger
from hairclip.train.trainer import ConditionedOffsets, Distributed, Networks, TrainConfig, Trainer

SIZE = 4  # decoder resolution in these tests


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_networks(seed: int = 0) -> Networks:
    """A fresh copy of the same small random networks each call."""
    return copy.deepcopy(_tiny_networks(seed))


@functools.cache
def _tiny_networks(seed: int) -> Networks:
    torch.manual_seed(seed)
    parser = UNet(feature_scale=16).eval()
    with torch.no_grad():
        parser.final.bias[13] += 0.3  # some hair in the masks of these noise images
    return Networks(mapper=HairMapper(build_clip(config=TINY_CLIP)), decoder=Generator(SIZE, 512, 8),
                    parser=parser, facenet=Backbone(112, 50, "ir_se", units=(1, 1, 1, 1), width_div=4).eval())


def tiny_config(tmp_path: Path, **kw) -> TrainConfig:
    base = dict(exp_dir=str(tmp_path / "run"), batch_size=2, workers=0, test_workers=0, parse_size=32,
                image_interval=1000, board_interval=1, val_interval=1000, save_interval=1000, max_steps=2,
                test_dataset_size=0, image_log_size=8)
    return TrainConfig(**(base | kw))


def reference_folders(tmp_path: Path) -> dict[str, str]:
    rng = np.random.default_rng(0)
    folders = {"hairstyle_ref_img_train_path": tmp_path / "hs", "color_ref_img_train_path": tmp_path / "col",
               "color_ref_img_in_domain_path": tmp_path / "in"}
    for name in ("hs", "col", "in/purple hair", "in/red hair"):
        (tmp_path / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / name / f"{i:05d}.jpg")
    return {k: str(v) for k, v in folders.items()}


def dataset(n: int = 8, seed: int = 0, **refs) -> D.LatentsDataset:
    sampler = D.EditSampler(hairstyle_references=D.list_images(refs.get("hairstyle_ref_img_train_path")),
                            color_references=D.list_images(refs.get("color_ref_img_train_path")),
                            color_in_domain=D.in_domain_references(refs.get("color_ref_img_in_domain_path"), COLOURS))
    g = torch.Generator().manual_seed(seed)
    return D.LatentsDataset(torch.randn(n, 18, 512, generator=g), sampler, image_size=SIZE)


def mapper_state(mapper: HairMapper) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in mapper.state_dict().items() if not k.startswith("clip_model.")}


# ---------------------------------------------------------------------------------------------- data


def test_defaults_are_the_official_44_hairstyles_and_12_colours(tmp_path):
    assert D.read_hairstyles() == list(HAIRSTYLE_PROMPTS) and len(HAIRSTYLE_PROMPTS) == 44
    assert D.parse_colors() == list(COLOURS) and len(COLOURS) == 12
    (tmp_path / "styles.txt").write_text("afro hairstyle\nmullet\n\n")
    assert D.read_hairstyles(tmp_path / "styles.txt") == ["afro hairstyle", "mullet hairstyle"]
    assert D.parse_colors("purple, red ,teal") == ["purple", "red", "teal"]


def test_edits_are_drawn_with_the_official_probabilities():
    refs = [Path(f"r{i}.jpg") for i in range(3)]
    sampler = D.EditSampler(hairstyle_references=refs, color_references=refs,
                            color_in_domain={c: refs for c in COLOURS})
    rng = np.random.default_rng(0)
    edits = [sampler(rng) for _ in range(20000)]
    hs = np.array([bool(e.hairstyle_text or e.hairstyle_image) for e in edits])
    col = np.array([bool(e.color_text or e.color_image) for e in edits])
    freq = lambda m: float(np.mean(m))  # noqa: E731
    assert freq(hs & ~col) == pytest.approx(0.5, abs=0.015)
    assert freq(~hs & col) == pytest.approx(0.2, abs=0.015)
    assert freq(hs & col) == pytest.approx(0.27, abs=0.015)
    assert freq(~hs & ~col) == pytest.approx(0.03, abs=0.005)
    hs_edits = [e for e in edits if e.hairstyle_text or e.hairstyle_image]
    assert freq([e.hairstyle_text is not None for e in hs_edits]) == pytest.approx(0.5, abs=0.015)
    col_edits = [e for e in edits if e.color_text or e.color_image]
    sources = [e.color_source or "text" for e in col_edits]
    for source, p in (("text", 0.5), (D.COLOR_IN_DOMAIN, 0.25), (D.COLOR_OUT_DOMAIN, 0.25)):
        assert freq([s == source for s in sources]) == pytest.approx(p, abs=0.015)
    assert {e.hairstyle_text for e in hs_edits if e.hairstyle_text} == set(HAIRSTYLE_PROMPTS)
    assert {e.color_text for e in col_edits if e.color_text} == {f"{c} hair" for c in COLOURS}


def test_missing_reference_folders_leave_text_and_the_official_descriptions():
    rng = np.random.default_rng(1)
    edits = [D.EditSampler()(rng) for _ in range(300)]
    assert all(e.hairstyle_image is None and e.color_image is None for e in edits)
    assert D.Edit(hairstyle_text="afro hairstyle").description == "afro hairstyle"
    assert D.Edit(hairstyle_image=Path("a.jpg"), color_text="purple hair").description == \
        "hairstyle_out_domain_ref-purple hair"
    assert D.Edit(color_image=Path("a.jpg"), color_source=D.COLOR_IN_DOMAIN).description == "color_in_domain_ref"
    assert D.Edit().description == "no_editing"
    with pytest.raises(ValueError, match="more than 1"):
        D.SamplingProbabilities(hairstyle_manipulation_prob=0.6, color_manipulation_prob=0.5)


def test_samples_depend_only_on_seed_epoch_and_index_and_collate_with_flags(tmp_path):
    ds = dataset(**reference_folders(tmp_path))
    assert ds[(3, 5)].edit == ds[(3, 5)].edit
    assert [ds[(0, i)].edit for i in range(8)] != [ds[(1, i)].edit for i in range(8)]
    batch = D.collate([ds[(e, i)] for e in range(4) for i in range(8)])
    assert batch.w.shape == (32, 18, 512)
    for name in ("hairstyle_text", "hairstyle_image", "color_text", "color_image"):
        assert getattr(batch, f"has_{name}").any(), name
    assert torch.equal(batch.hairstyle_tokens[batch.has_hairstyle_text][:, 0], torch.full(
        (int(batch.has_hairstyle_text.sum()),), 49406))  # CLIP's start token
    assert batch.hairstyle_image.shape == (32, 3, SIZE, SIZE)
    assert batch.hairstyle_image[~batch.has_hairstyle_image].abs().max() == 0
    img = batch.color_image[batch.has_color_image]
    assert img.min() >= -1 and img.max() <= 1 and img.abs().max() > 0.2
    i = int(batch.has_hairstyle_text.nonzero()[0])
    assert torch.equal(batch.hairstyle_tokens[i], tokenize(batch.edits[i].hairstyle_text)[0])


def test_ranks_together_see_the_single_process_batches_and_resume_continues_the_sequence():
    single = D.StepBatches(10, 4, seed=3)
    ranks = [D.StepBatches(10, 2, world_size=2, rank=r, seed=3) for r in (0, 1)]
    steps = 7  # over three epochs of 2 steps each (the last 2 latents of an epoch are dropped)
    a = [b for _, b in zip(range(steps), single, strict=False)]
    r0 = [b for _, b in zip(range(steps), ranks[0], strict=False)]
    r1 = [b for _, b in zip(range(steps), ranks[1], strict=False)]
    assert [x + y for x, y in zip(r0, r1, strict=True)] == a
    assert [b[0][0] for b in a] == [0, 0, 1, 1, 2, 2, 3]
    assert len({i for _, i in a[0] + a[1]}) == 8
    resumed = D.StepBatches(10, 4, seed=3, start_step=3)
    assert [b for _, b in zip(range(4), resumed, strict=False)] == a[3:]


# ---------------------------------------------------------------------------------------------- Ranger


def test_ranger_follows_radam_lookahead_and_gradient_centralisation():
    torch.manual_seed(0)
    w0 = torch.randn(3, 2)
    grads = [torch.randn(3, 2) for _ in range(13)]
    p = w0.clone().requires_grad_(True)
    opt = Ranger([p], lr=0.1)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    # the same steps written out: GC, Adam moments, RAdam rectification (SGD while rho_t <= 5), Lookahead k=6
    b1, b2, lr, eps = 0.95, 0.999, 0.1, 1e-5
    fast, slow = w0.double(), w0.double()
    m, v = torch.zeros_like(fast), torch.zeros_like(fast)
    rho_inf = 2 / (1 - b2) - 1
    for t, g in enumerate(grads, start=1):
        g = g.double() - g.double().mean(1, keepdim=True)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho > 5:
            r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            fast = fast - lr * r * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (v.sqrt() + eps)
        else:
            fast = fast - lr / (1 - b1**t) * m
        if t % 6 == 0:
            slow = slow + 0.5 * (fast - slow)
            fast = slow
    torch.testing.assert_close(p.detach().double(), fast, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------- the loop


def test_mixed_batches_get_the_offset_each_sample_would_get_alone():
    nets = tiny_networks()
    mapper = nets.mapper.eval()
    w, hs, col = torch.randn(4, 18, 512), torch.randn(4, 512), torch.randn(4, 512)
    has_hs, has_col = torch.tensor([True, False, True, False]), torch.tensor([True, True, False, False])
    with torch.no_grad():
        got = ConditionedOffsets(mapper)(w, hs, has_hs, col, has_col)
        for i in range(4):
            alone = mapper.edit_offset(w[i:i + 1], hs[i:i + 1] if has_hs[i] else None,
                                       col[i:i + 1] if has_col[i] else None)
            torch.testing.assert_close(got[i:i + 1], alone, rtol=1e-5, atol=1e-6)


def test_twenty_steps_on_a_fixed_batch_lower_the_total_loss(tmp_path):
    ds = dataset(**reference_folders(tmp_path))
    trainer = Trainer(tiny_config(tmp_path), tiny_networks(), ds, progress=False)
    batch = D.collate([ds[(0, 0)], ds[(0, 3)]])
    with torch.no_grad():
        before = float(trainer.forward(batch)[0])
    for _ in range(20):
        trainer.train_step(batch)
    with torch.no_grad():
        after = float(trainer.forward(batch)[0])
    assert trainer.step == 20
    assert after < before - 1e-3, (before, after)


def test_checkpoint_loads_strictly_for_inference_and_gives_the_same_outputs_and_logs(tmp_path):
    refs = reference_folders(tmp_path)
    config = tiny_config(tmp_path, max_steps=2, image_interval=1, val_interval=2, **refs)
    trainer = Trainer(config, tiny_networks(), dataset(**refs), dataset(n=2, seed=5, **refs), progress=False)
    trainer.train()
    ckpt = Path(config.exp_dir) / "checkpoints"
    assert {p.name for p in ckpt.iterdir()} >= {"latest_model.pt", "best_model.pt", "latest_state.pt", "timestamp.txt"}
    data = torch.load(ckpt / "latest_model.pt", weights_only=True)
    assert set(data) == {"state_dict", "opts"} and data["opts"]["stylegan_size"] == SIZE
    loaded = load_hairclip(ckpt / "latest_model.pt")  # strict keys and shapes, as `hairclip edit` loads it
    mapper = trainer.mapper.eval()
    w = torch.randn(2, 18, 512)
    tokens = tokenize(["afro hairstyle", "bob cut hairstyle"])
    with torch.no_grad():
        ours = mapper.edit_offset(w, mapper.encode_text(tokens), None)
        theirs = loaded.mapper.edit_offset(w, loaded.mapper.encode_text(tokens), None)
        assert torch.equal(ours, theirs)
        assert torch.equal(trainer.render(w + 0.1 * ours), loaded.decoder([w + 0.1 * theirs], input_is_latent=True,
                                                                          randomize_noise=False)[0])
    # logs: TensorBoard scalars (with the [train] extra), metrics.jsonl, image grids
    if importlib.util.find_spec("tensorboard") is not None:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(Path(config.exp_dir) / "logs"))
        events.Reload()
        assert {"train/loss", "test/loss", "train/loss_id"} <= set(events.Tags()["scalars"])
        assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    lines = [json.loads(s) for s in (Path(config.exp_dir) / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in lines] == [(1, "train"), (2, "train"), (2, "test")]
    assert (Path(config.exp_dir) / "logs" / "images_train" / "000002.jpg").is_file()
    assert (Path(config.exp_dir) / "logs" / "images_val" / "000002-000.jpg").is_file()


def test_training_without_tensorboard_finishes_and_says_once_how_to_turn_logs_on(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` now fails, as when not installed
    refs = reference_folders(tmp_path)
    config = tiny_config(tmp_path, max_steps=2, image_interval=1, val_interval=2, **refs)
    trainer = Trainer(config, tiny_networks(), dataset(**refs), dataset(n=2, seed=5, **refs), progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert trainer.train() and trainer.step == 2
    said = [str(w.message) for w in caught if "TensorBoard" in str(w.message)]
    assert len(said) == 1 and "logs are off" in said[0] and "pip install 'hairclip-studio[train]'" in said[0]
    assert (Path(config.exp_dir) / "checkpoints" / "latest_model.pt").is_file()
    lines = (Path(config.exp_dir) / "logs" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["step"] for s in lines] == [1, 2, 2]
    assert not list((Path(config.exp_dir) / "logs").glob("events.out.tfevents.*"))


def test_resume_continues_from_the_saved_step_exactly(tmp_path):
    straight = Trainer(tiny_config(tmp_path / "a", max_steps=4), tiny_networks(), dataset(), progress=False)
    straight.train()
    first = Trainer(tiny_config(tmp_path / "b", max_steps=2), tiny_networks(), dataset(), progress=False)
    first.train()
    second = Trainer(tiny_config(tmp_path / "b", max_steps=4), tiny_networks(), dataset(), progress=False)
    assert second.resume() == 2
    assert second.train() and second.step == 4
    want, got = mapper_state(straight.mapper), mapper_state(second.mapper)
    assert all(torch.equal(want[k], got[k]) for k in want)


def test_mixed_precision_step_runs_in_bfloat16(tmp_path):
    ds = dataset()
    trainer = Trainer(tiny_config(tmp_path, amp="bf16"), tiny_networks(), ds, progress=False)
    out = trainer.train_step(D.collate([ds[(0, 0)], ds[(0, 1)]]))
    assert trainer.amp == torch.bfloat16 and math.isfinite(out.metrics["loss"])
    assert all(p.dtype == torch.float32 for p in trainer.params)


# ---------------------------------------------------------------------------------------------- CLI and DDP

_CLI = """
import sys
sys.path.insert(0, {tests!r})
import torch
from hairclip.train import trainer
from test_train import tiny_networks
trainer.load_networks = lambda config, store=None, download=True: tiny_networks()
from hairclip.cli import main
torch.set_num_threads(1)
raise SystemExit(main(sys.argv[1:]))
"""


def test_torchrun_ddp_on_two_processes_matches_one_process_with_the_global_batch(tmp_path, monkeypatch):
    """gloo on the CPU: two processes with batch 1 each train the same mapper as one process with batch 2."""
    latents = tmp_path / "latents.pt"
    torch.save(torch.randn(6, 18, 512, generator=torch.Generator().manual_seed(0)), latents)
    common = ["train", "--latents-train-path", str(latents), "--test-dataset-size", "0", "--max-steps", "2",
              "--workers", "0", "--parse-size", "32", "--no-progress", "--device", "cpu"]
    script = tmp_path / "cli.py"
    script.write_text(_CLI.format(tests=str(Path(__file__).parent)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), *common, "--exp-dir", str(tmp_path / "ddp"), "--batch-size", "1"],
                         env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]

    from hairclip.cli import main
    from hairclip.train import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "load_networks", lambda config, store=None, download=True: tiny_networks())
    assert main([*common, "--exp-dir", str(tmp_path / "one"), "--batch-size", "2"]) == 0
    ddp = load_hairclip(tmp_path / "ddp" / "checkpoints" / "latest_model.pt")
    one = load_hairclip(tmp_path / "one" / "checkpoints" / "latest_model.pt")
    a, b = mapper_state(ddp.mapper), mapper_state(one.mapper)
    assert any(not torch.equal(a[k], mapper_state(tiny_networks().mapper)[k]) for k in a)  # it did train
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert ddp.opts["batch_size"] == 1 and one.opts["batch_size"] == 2
    # the same command refuses to overwrite a run, and --resume continues it
    assert main([*common, "--exp-dir", str(tmp_path / "one"), "--batch-size", "2"]) == 1
    assert main([*common, "--exp-dir", str(tmp_path / "one"), "--max-steps", "3", "--resume"]) == 0
    state = torch.load(tmp_path / "one" / "checkpoints" / "latest_state.pt", weights_only=True)
    assert state["step"] == 3


def test_distributed_reads_torchruns_environment(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert Distributed.from_env() == Distributed(1, 4, 1) and not Distributed.from_env().main


# ---------------------------------------------------------------------------------------------- invert


def face_points(eye_centre, eye_dist):
    """68 landmark points: only the eyes (36-47) and mouth corners (48, 54) matter to the alignment."""
    cx, cy = eye_centre
    lm = np.tile([cx, cy + eye_dist / 2], (68, 1)).astype(float)
    for first, ex in ((36, cx - eye_dist / 2), (42, cx + eye_dist / 2)):
        t = np.linspace(0, 2 * np.pi, 6, endpoint=False)
        lm[first:first + 6] = np.stack([ex + 0.25 * eye_dist * np.cos(t), cy + 0.1 * eye_dist * np.sin(t)], 1)
    lm[48], lm[54] = (cx - 0.45 * eye_dist, cy + 1.1 * eye_dist), (cx + 0.45 * eye_dist, cy + 1.1 * eye_dist)
    return lm


def test_invert_folder_aligns_and_inverts_each_photo(tmp_path):
    torch.manual_seed(0)
    encoder = Encoder4Editing(50, "ir_se", 1024, units=(1, 1, 1, 1), width_div=4, style_dim=512).eval()
    inverter = Inverter(encoder, torch.randn(18, 512), cache_size=1)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(tmp_path / f"p{i}.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    paths = D.list_images(tmp_path)
    face = Face(face_points((200, 130), 60), (140, 80, 260, 230))
    latents, names, skipped = invert_images(paths, inverter, KnownFaces([face]), progress=False, root=tmp_path)
    assert latents.shape == (2, 18, 512) and names == ["p0.png", "p1.png"]
    assert [n for n, _ in skipped] == ["broken.jpg"]
    assert not torch.equal(latents[0], latents[1])
    # no face: skipped with the detector's reason; --aligned: the whole image is the face
    latents, names, skipped = invert_images(paths[1:], inverter, KnownFaces([]), progress=False, root=tmp_path)
    assert len(latents) == 0 and "no face" in skipped[0][1]
    aligned, names, _ = invert_images(paths[1:2], inverter, None, progress=False, root=tmp_path)
    assert aligned.shape == (1, 18, 512) and names == ["p0.png"]


def test_the_command_line_defaults_are_the_loss_and_sampling_defaults():
    """TrainConfig (torch-free, for the CLI) repeats the official defaults; they must not drift apart."""
    import dataclasses

    from hairclip.train.losses import LossWeights

    config = TrainConfig()
    for cls in (LossWeights, D.SamplingProbabilities):
        for f in dataclasses.fields(cls):
            assert getattr(config, f.name) == f.default, f.name

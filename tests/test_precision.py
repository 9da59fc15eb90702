"""The precision plan: CLIP converted as the official code converts it, the GPU plan run on the CPU end to end
(in process and through a real `hairclip serve`), within 2 levels of the fp32 plan, and the benchmarks
reporting the dtypes the pipeline runs."""

from __future__ import annotations

import copy
import json
import select
import subprocess
import sys

import numpy as np
import pytest
import torch
from clip.model import convert_weights

from hairclip.bench import _run_one, layer_difference, run_gpu_check, run_pipeline
from hairclip.cli import main
from hairclip.images import array_to_image, image_to_array, save_image
from hairclip.nets.mapper import tokenize
from hairclip.pipeline.conditions import Conditions
from hairclip.pipeline.editor import HairEditor
from hairclip.pipeline.models import Models
from hairclip.precision import PLANS, plan_for
from hairclip_shared.client import Client
from hairclip_shared.protocol import EditRequest

GPU_PLAN = "gpu plan (CLIP fp16 weights, LayerNorm fp32; generator, e4e, parser fp32)"


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 0.6 + seed * 20, yy * 0.5, (xx + yy) * 0.3], -1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


PHOTO, REFERENCE = _photo(300, 260, 0), _photo(280, 280, 1)
EDITS = {  # the whole edit: text, reference images, RGB
    "text": dict(hairstyle="afro", colour="purple"),
    "reference": dict(hairstyle_ref=REFERENCE, colour_ref=REFERENCE),
    "rgb": dict(hairstyle="bob cut", rgb="#1ec83c"),
}


@pytest.fixture(scope="module")
def fp32_layers() -> dict[str, np.ndarray]:
    editor = HairEditor(Models.random_tiny("cpu", precision="fp32"))
    return {name: editor.edit(PHOTO, Conditions(**kw)).layer for name, kw in EDITS.items()}


def assert_within_two_levels(a: np.ndarray, b: np.ndarray, what: str) -> None:
    d = layer_difference(a, b)
    assert d["max"] <= 2 and d["mean"] <= 0.5, (what, d)


def test_gpu_plan_converts_clip_exactly_as_the_official_convert_weights():
    fp32 = Models.random_tiny("cpu", precision="fp32").mapper.clip_model
    official = copy.deepcopy(fp32)
    convert_weights(official)
    ours = Models.random_tiny("cpu", precision="gpu").mapper.clip_model
    expected, got = official.state_dict(), ours.state_dict()
    assert expected.keys() == got.keys()
    for key, tensor in expected.items():
        assert got[key].dtype == tensor.dtype, key
        assert torch.equal(got[key], tensor), key
    halved = {k for k, t in got.items() if t.dtype == torch.float16}
    assert "text_projection" in halved and "visual.proj" in halved and "visual.conv1.weight" in halved
    block = "transformer.resblocks.0.attn."
    assert f"{block}in_proj_weight" in halved and f"{block}out_proj.bias" in halved
    kept = {k for k, t in got.items() if t.dtype == torch.float32}
    assert {"ln_final.weight", "visual.ln_pre.bias", "token_embedding.weight", "positional_embedding",
            "logit_scale", "visual.class_embedding"} <= kept


def test_the_plan_encodes_where_casting_all_of_clip_fails():
    models = Models.random_tiny("cpu", precision="fp32")
    tokens = tokenize(["afro hairstyle"])
    reference = models.mapper.encode_text(tokens)
    whole = copy.deepcopy(models.mapper)
    whole.clip_model.to(torch.float16)  # what Models.to did on GPUs before the plan: LayerNorms too
    with pytest.raises(RuntimeError, match="dtype"):
        whole.encode_text(tokens)
    PLANS["gpu"].apply_clip(models.mapper.clip_model)
    emb = models.mapper.encode_text(tokens)
    assert emb.dtype == torch.float32
    assert torch.allclose(emb, reference, atol=2e-2, rtol=2e-2)


def test_auto_picks_the_device_kinds_plan_and_gpu_can_be_forced_anywhere():
    assert plan_for("cpu") is PLANS["fp32"]
    assert plan_for("cuda") is PLANS["gpu"] and plan_for("cuda:1") is PLANS["gpu"] and plan_for("mps") is PLANS["gpu"]
    assert plan_for("cpu", "gpu") is PLANS["gpu"] and plan_for("cuda", "fp32") is PLANS["fp32"]
    assert PLANS["gpu"].describe() == GPU_PLAN
    with pytest.raises(ValueError, match="auto, fp32, gpu"):
        plan_for("cpu", "fp8")


def test_models_hold_their_plans_dtypes_and_move_between_plans():
    for name, plan in PLANS.items():
        models = Models.random_tiny("cpu", precision=name)
        assert models.plan is plan and models.dtypes() == plan.dtypes(), name
    models.to(models.device, PLANS["fp32"])
    assert set(models.dtypes().values()) == {"fp32"}


def test_gpu_plan_on_the_cpu_edits_within_two_levels_of_fp32_in_process(fp32_layers):
    editor = HairEditor(Models.random_tiny("cpu", precision="gpu"))
    for name, kw in EDITS.items():
        assert_within_two_levels(editor.edit(PHOTO, Conditions(**kw)).layer, fp32_layers[name], name)


def test_gpu_plan_on_the_cpu_through_hairclip_serve_within_two_levels_of_fp32(fp32_layers, tmp_path):
    cmd = [sys.executable, "-m", "hairclip", "serve", "--random-tiny", "--device", "cpu", "--precision", "gpu",
           "--bind", "tcp://127.0.0.1:0"]
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 240)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("listening on "), (line, (tmp_path / "server.log").read_text())
        with Client(line.split()[-1], timeout=10) as client:
            assert client.info.device == f"cpu; precision: {GPU_PLAN}"
            for name, kw in EDITS.items():
                wire = {"hairstyle": kw.get("hairstyle"), "colour": kw.get("colour"), "rgb": kw.get("rgb"),
                        **{k: array_to_image(v) for k, v in kw.items() if k.endswith("_ref")}}
                result = client.submit(EditRequest(source=array_to_image(PHOTO), **wire)).result(timeout=300)
                assert_within_two_levels(np.array(image_to_array(result.layer)), fp32_layers[name], name)
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
        log.close()


def test_cli_edit_prints_the_plan_it_ran(tmp_path, capsys):
    src = tmp_path / "photo.png"
    save_image(src, PHOTO)
    assert main(["edit", str(src), "-o", str(tmp_path / "out.png"), "--color", "red", "--random-tiny",
                 "--device", "cpu", "--precision", "gpu"]) == 0
    assert f"precision: {GPU_PLAN}\n" in capsys.readouterr().err
    assert main(["edit", str(src), "-o", str(tmp_path / "o.png"), "--color", "red", "--server", "tcp://127.0.0.1:9",
                 "--precision", "gpu"]) == 1
    assert "give it to `hairclip serve`" in capsys.readouterr().err


def test_gpu_check_smoke_mode_reports_every_field(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    assert run_gpu_check("cpu", "gpu", tiny=True, size=256, repeat=1, warmup=0, json_path=str(out)) == 0
    report = json.loads(out.read_text())
    assert report["dtypes"] == PLANS["gpu"].dtypes() and report["precision"] == GPU_PLAN
    assert report["full_edit_ms"] > 0 and report["rerender_ms"] > 0 and report["reference_ops_ratio"] > 0
    assert {"invert", "conditions", "mapper", "synthesize", "parse", "composite"} <= report["stages_ms"].keys()
    assert report["peak_gpu_mb"] is None  # not CUDA
    assert report["diff_vs_cpu_fp32"]["max"] <= 2 and report["diff_vs_cpu_fp32"]["mean"] <= 0.5
    printed = capsys.readouterr().out
    for label in ("warm full edit", "strength re-render", "peak GPU memory", "vs CPU fp32", "reference ops"):
        assert label in printed


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_gpu_check_without_cuda_fails_in_one_sentence(capsys):
    assert main(["bench", "gpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("hairclip bench gpu: no CUDA device is available here") and err.count("\n") == 0


def test_bench_models_reports_the_dtypes_the_pipeline_runs():
    row = _run_one("mapper+text", "cpu", repeat=1, warmup=0, precision="gpu")
    dtypes = PLANS["gpu"].dtypes()
    assert row["plan"] == "gpu" and row["dtype"] == f"CLIP {dtypes['clip']}, mapper {dtypes['mapper']}"


def test_bench_pipeline_prints_the_dtypes_the_pipeline_ran(capsys):
    assert run_pipeline("cpu", repeat=1, size=256, precision="gpu", tiny=True) == 0
    printed = capsys.readouterr().out
    dtypes = PLANS["gpu"].dtypes()
    assert f"precision: {GPU_PLAN}" in printed
    assert "dtypes ran: " + ", ".join(f"{k} {v}" for k, v in dtypes.items()) in printed

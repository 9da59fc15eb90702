"""The official checkpoint files load exactly as published, and anything else is refused with a clear message.

Full-size files are written in the official layouts from the reference key lists. Each tensor is a
broadcast view of one element, so a 1.2 GB layout costs a few kilobytes on disk.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from hairclip.checkpoints import (
    CheckpointError,
    load_e4e,
    load_hairclip,
    load_irse50,
    load_parsenet,
    load_stylegan,
    save_hairclip,
)
from hairclip.nets.mapper import TINY_CLIP, HairMapper, build_clip
from hairclip.nets.stylegan2 import Generator

KEYS = Path(__file__).parent / "data" / "keys"
DTYPES = {"torch.float32": torch.float32, "torch.float16": torch.float16, "torch.int64": torch.int64,
          "float32": torch.float32, "float16": torch.float16, "int64": torch.int64}


def layout(name: str) -> list[tuple[str, list[int], torch.dtype]]:
    data = json.loads((KEYS / name).read_text())
    if isinstance(data, dict):  # the e4e description lists the whole checkpoint's keys
        data = data["checkpoint"]["state_dict"]["keys"]
    return [(k, shape, DTYPES[dtype]) for k, shape, dtype in data]


def tiny_state(entries) -> dict[str, torch.Tensor]:
    """Tensors of the right shape and dtype that share a single element of storage."""
    return {k: torch.full((), 0.01, dtype=dt).expand(shape) for k, shape, dt in entries}


def test_published_hairclip_layout_loads_strictly(tmp_path):
    path = tmp_path / "hairclip.pt"
    torch.save({"state_dict": tiny_state(layout("keys_hairclip_pt_state_dict.json")),
                "opts": {"stylegan_size": 1024}}, path)
    weights = load_hairclip(path)
    assert weights.decoder.n_latent == 18
    assert all(p.dtype == torch.float32 for p in weights.mapper.parameters())  # fp16 in the file


def test_published_e4e_layout_loads_strictly(tmp_path):
    path = tmp_path / "e4e_ffhq_encode.pt"
    state = tiny_state(layout("keys_e4e_encoder.json"))
    assert sum(k.startswith("encoder.") for k in state) == 621
    torch.save({"state_dict": state, "latent_avg": torch.zeros(18, 512),
                "opts": {"stylegan_size": 1024, "encoder_type": "Encoder4Editing"}}, path)
    weights = load_e4e(path)
    assert weights.latent_avg.shape == (18, 512)
    assert sum(1 for _ in weights.encoder.state_dict()) == 621


@pytest.mark.parametrize("keys, loader, wrap", [
    ("keys_parsenet_unet.json", load_parsenet, None),
    ("keys_irse50.json", load_irse50, None),
    ("keys_generator_1024.json", load_stylegan, "g_ema"),
])
def test_bare_and_g_ema_layouts_load_strictly(tmp_path, keys, loader, wrap):
    state = tiny_state(layout(keys))
    path = tmp_path / "weights.pt"
    torch.save({wrap: state} if wrap else state, path)
    module = loader(path)
    assert set(module.state_dict()) == set(state)


def test_wrong_key_names_the_file_and_the_keys(tmp_path):
    state = tiny_state(layout("keys_parsenet_unet.json"))
    state["conv1.conv1.0.weight_renamed"] = state.pop("conv1.conv1.0.weight")
    path = tmp_path / "parsenet.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_parsenet(path)
    msg = str(err.value)
    assert "parsenet.pth" in msg
    assert "missing keys (1): conv1.conv1.0.weight" in msg
    assert "unexpected keys (1): conv1.conv1.0.weight_renamed" in msg


def test_wrong_shape_is_reported(tmp_path):
    state = tiny_state(layout("keys_e4e_encoder.json"))
    state["encoder.latlayer1.weight"] = torch.zeros(512, 128, 1, 1)
    path = tmp_path / "e4e_ffhq_encode.pt"
    torch.save({"state_dict": state, "latent_avg": torch.zeros(18, 512), "opts": {}}, path)
    with pytest.raises(CheckpointError, match=r"e4e_ffhq_encode.pt.*\n.*shape mismatches \(1\): "
                                              r"latlayer1.weight \(file \[512, 128, 1, 1\], model \[512, 256"):
        load_e4e(path)


def test_stray_prefix_is_reported(tmp_path):
    state = tiny_state(layout("keys_hairclip_pt_state_dict.json"))
    state["discriminator.weight"] = torch.zeros(1)
    path = tmp_path / "hairclip.pt"
    torch.save({"state_dict": state, "opts": {}}, path)
    with pytest.raises(CheckpointError, match="hairclip.pt: unexpected keys outside mapper, decoder"):
        load_hairclip(path)


def test_unreadable_and_missing_files_are_named(tmp_path):
    bad = tmp_path / "hairclip.pt"
    bad.write_bytes(b"<html>quota exceeded</html>")
    with pytest.raises(CheckpointError, match="hairclip.pt: cannot be read"):
        load_hairclip(bad)
    with pytest.raises(CheckpointError, match="no such file"):
        load_parsenet(tmp_path / "parsenet.pth")


def test_pickled_objects_are_never_unpickled(tmp_path):
    path = tmp_path / "e4e_ffhq_encode.pt"
    torch.save({"state_dict": {}, "opts": argparse.Namespace(stylegan_size=1024)}, path)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_e4e(path)


def tiny_hairclip() -> tuple[HairMapper, Generator]:
    torch.manual_seed(1)
    clip_model = build_clip(config=TINY_CLIP)
    return HairMapper(clip_model).eval(), Generator(32, 512, 8, channel_multiplier=2).eval()


def test_saved_checkpoint_has_the_published_layout_and_reloads(tmp_path):
    mapper, decoder = tiny_hairclip()
    path = tmp_path / "trained.pt"
    opts = {"stylegan_size": 32}
    save_hairclip(path, mapper, decoder, opts)
    data = torch.load(path, weights_only=True)
    state = data["state_dict"]
    assert list(state)[: len(mapper.state_dict())] == ["mapper." + k for k in mapper.state_dict()]
    # CLIP's matrices in fp16 and its embeddings and norms in fp32, as in the published file
    assert state["mapper.clip_model.text_projection"].dtype == torch.float16
    assert state["mapper.clip_model.transformer.resblocks.0.attn.in_proj_weight"].dtype == torch.float16
    assert state["mapper.clip_model.positional_embedding"].dtype == torch.float32
    assert state["mapper.clip_model.ln_final.weight"].dtype == torch.float32
    assert state["mapper.course_mapping.modulation_module_list.0.fc.weight"].dtype == torch.float32
    assert data["opts"] == opts

    reloaded = load_hairclip(path)
    w = torch.randn(2, 18, 512)
    style, color = torch.randn(2, 512), torch.randn(2, 512)
    with torch.no_grad():
        assert torch.equal(reloaded.mapper.edit_offset(w, style, color), mapper.edit_offset(w, style, color))
        w_dec = torch.randn(1, decoder.n_latent, 512)
        image, _ = decoder([w_dec], input_is_latent=True, randomize_noise=False)
        image2, _ = reloaded.decoder([w_dec], input_is_latent=True, randomize_noise=False)
        assert torch.equal(image, image2)

"""Your own checkpoint files: ``--mapper``, ``--e4e``, ``--parsenet`` for ``edit`` and ``serve``.

Small random networks are written in the official layouts (``hairclip.pt`` as ``hairclip train`` writes it,
``e4e_ffhq_encode.pt``, a bare ``parsenet.pth``), in an otherwise empty weight store: no detector files, no
manifest match. Aligned edits must run from those three files alone, in-process and through ``hairclip serve``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from hairclip.checkpoints import load_e4e, load_hairclip, load_parsenet, save_hairclip
from hairclip.cli import main
from hairclip.errors import HairclipError
from hairclip.images import load_image, save_image
from hairclip.pipeline.conditions import Conditions
from hairclip.pipeline.editor import EditOptions, HairEditor
from hairclip.pipeline.faces import NoFaceFound
from hairclip.pipeline.models import Models, make_detector
from hairclip.weights import WeightsCorrupt, WeightsMissing, WeightStore
from test_aligned_references import official_reference_embedding, reference_image

ROOT = Path(__file__).resolve().parents[1]


def write_official_layouts(folder: Path, seed: int = 0) -> dict[str, Path]:
    """The random tiny networks, saved in the three official layouts."""
    m = Models.random_tiny("cpu", seed=seed)
    paths = {"mapper": folder / "my_mapper.pt", "e4e": folder / "my_e4e.pt", "parsenet": folder / "my_parsenet.pth"}
    save_hairclip(paths["mapper"], m.mapper, m.decoder, {"stylegan_size": 1024, "exp_dir": "runs/tiny"})
    state = {"encoder." + k: v for k, v in m.encoder.state_dict().items()}
    state |= {"decoder." + k: v for k, v in m.decoder.state_dict().items()}
    torch.save({"state_dict": state, "latent_avg": m.latent_avg, "opts": {"stylegan_size": 1024}}, paths["e4e"])
    torch.save(m.parser.state_dict(), paths["parsenet"])
    return paths


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return write_official_layouts(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("empty_store")


@pytest.fixture(scope="module")
def models(files, empty_store) -> Models:
    return Models.load("cpu", empty_store, files={"hairclip.pt": files["mapper"], "e4e_ffhq_encode.pt": files["e4e"],
                                                  "parsenet.pth": files["parsenet"]})


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flags(files: dict[str, Path]) -> list[str]:
    return ["--mapper", str(files["mapper"]), "--e4e", str(files["e4e"]), "--parsenet", str(files["parsenet"])]


def test_small_networks_in_the_official_layouts_reload_with_their_own_sizes(files):
    m = Models.random_tiny("cpu", seed=0)
    e4e, parser, hc = load_e4e(files["e4e"]), load_parsenet(files["parsenet"]), load_hairclip(files["mapper"])
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        assert torch.equal(e4e.encoder(x), m.encoder(x))
        assert torch.equal(parser(x), m.parser(x))
        w = torch.randn(1, 18, 512)
        assert torch.equal(hc.decoder([w], input_is_latent=True, randomize_noise=False)[0],
                           m.decoder([w], input_is_latent=True, randomize_noise=False)[0])
    assert torch.equal(e4e.latent_avg, m.latent_avg) and hc.opts["exp_dir"] == "runs/tiny"


def test_explicit_files_load_without_the_manifest_or_the_detector_files(models, files, empty_store):
    assert list(empty_store.iterdir()) == []  # nothing resolved from (or downloaded into) the store
    assert models.weights == {
        "hairclip.pt": {"path": str(files["mapper"].resolve()), "sha256": sha256(files["mapper"])},
        "e4e_ffhq_encode.pt": {"path": str(files["e4e"].resolve()), "sha256": sha256(files["e4e"])},
        "parsenet.pth": {"path": str(files["parsenet"].resolve()), "sha256": sha256(files["parsenet"])},
    }
    assert not models.detector.loaded


def test_an_aligned_reference_on_loaded_files_follows_the_official_recipe(models):
    editor = HairEditor(models)
    photo, ref = reference_image(seed=11), reference_image(seed=12)
    state = editor.edit(photo, Conditions(hairstyle_ref=ref, hairstyle_ref_aligned=True),
                        EditOptions(aligned=True)).faces[0].state
    official = official_reference_embedding(models, PILImage.fromarray(ref)).float()
    assert torch.equal(state.offset, models.mapper.edit_offset(state.w, official, None))
    assert not models.detector.loaded


def test_only_a_photo_that_needs_detection_builds_the_detector(models, empty_store):
    editor = HairEditor(models)
    assert not models.detector.loaded
    with pytest.raises(NoFaceFound):  # dlib, from its packages: no weight file needed, and no face in noise
        editor.edit(reference_image(seed=13), Conditions(hairstyle="afro"))
    assert models.detector.loaded
    fan = make_detector("fan", "cpu", WeightStore(empty_store))  # S3FD + FAN do need their files
    with pytest.raises(WeightsMissing, match="s3fd"):
        fan.detect(reference_image(seed=13))


def test_files_not_named_come_from_the_store_under_the_manifest_rule(files, tmp_path, monkeypatch):
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(files["e4e"], store / "e4e_ffhq_encode.pt")
    shutil.copy(files["parsenet"], store / "parsenet.pth")
    entry = {"purpose": "test", "urls": ["https://example.invalid/x"], "needed_for": ["edit"]}
    manifest = tmp_path / "weights.json"
    manifest.write_text(json.dumps({"weights": [
        {**entry, "name": "hairclip.pt", "sha256": "0" * 64},  # the named file is never compared with this
        {**entry, "name": "e4e_ffhq_encode.pt", "sha256": sha256(files["e4e"])},
        {**entry, "name": "parsenet.pth", "sha256": sha256(files["parsenet"])}]}))
    monkeypatch.setattr("hairclip.weights.MANIFEST_PATH", manifest)
    models = Models.load("cpu", store, files={"hairclip.pt": files["mapper"]})
    assert models.weights["hairclip.pt"]["sha256"] == sha256(files["mapper"])
    assert models.weights["e4e_ffhq_encode.pt"] == {"path": str(store / "e4e_ffhq_encode.pt"),
                                                    "sha256": sha256(files["e4e"])}
    (store / "parsenet.pth").write_bytes((store / "parsenet.pth").read_bytes() + b"\0")  # no longer the manifest's
    with pytest.raises(WeightsCorrupt, match="parsenet.pth is corrupt"):
        Models.load("cpu", store, files={"hairclip.pt": files["mapper"]})


def test_a_missing_explicit_file_is_named(files, empty_store):
    with pytest.raises(HairclipError, match="nowhere.pt: no such file"):
        Models.load("cpu", empty_store, files={"hairclip.pt": empty_store / "nowhere.pt"})


def test_cli_aligned_edit_from_explicit_files_with_no_detector_files(files, empty_store, tmp_path):
    photo, ref = tmp_path / "photo.png", tmp_path / "ref.png"
    save_image(photo, reference_image(seed=14))
    save_image(ref, reference_image(seed=15))
    out, debug = tmp_path / "out.png", tmp_path / "debug"
    common = ["--aligned", "--device", "cpu", "--weights-dir", str(empty_store), *flags(files)]
    assert main(["edit", str(photo), "-o", str(out), "--hairstyle", "afro", "--save-aligned", str(debug),
                 *common]) == 0
    assert load_image(out).shape == (1024, 1024, 3)
    assert np.array_equal(load_image(debug / "photo_face0_aligned.png"), load_image(photo))
    assert main(["edit", str(photo), "-o", str(tmp_path / "ref_out.png"), "--hairstyle-ref", str(ref),
                 *common]) == 0
    assert list(empty_store.iterdir()) == []


def test_checkpoint_files_do_not_mix_with_random_tiny_or_a_remote_server(files, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    save_image(photo, reference_image(256, seed=16))
    assert main(["edit", str(photo), "-o", str(tmp_path / "o.png"), "--hairstyle", "afro", "--random-tiny",
                 *flags(files)]) == 1
    assert "--random-tiny builds its own networks" in capsys.readouterr().err
    assert main(["edit", str(photo), "-o", str(tmp_path / "o.png"), "--hairstyle", "afro",
                 "--server", "tcp://127.0.0.1:1", *flags(files)]) == 1
    assert "give them to `hairclip serve`" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_with_explicit_files_reports_them_and_aligned_edits_match_in_process(files, empty_store, tmp_path):
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    # The server computes with as many threads as this process, so that the sums, and the bytes, are the same.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "backend"), str(ROOT / "shared")]),
           "OMP_NUM_THREADS": str(torch.get_num_threads())}
    server = subprocess.Popen(
        [sys.executable, "-m", "hairclip", "serve", "--bind", endpoint, "--device", "cpu", "--no-download",
         "--weights-dir", str(empty_store), *flags(files)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        log = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = server.stdout.readline()
            if not line:
                break
            log.append(line)
            if line.startswith("listening on"):
                break
        assert log and log[-1].startswith("listening on"), "".join(log)
        status = subprocess.run([sys.executable, "-m", "hairclip", "status", "--connect", endpoint, "--timeout", "30"],
                                capture_output=True, text=True, env=env, timeout=120)
        assert status.returncode == 0, status.stderr
        for key in ("mapper", "e4e", "parsenet"):
            assert re.search(rf"{re.escape(str(files[key].resolve()))} \(sha256 {sha256(files[key])}\)", status.stdout)

        photo, ref = tmp_path / "photo.png", tmp_path / "ref.png"
        save_image(photo, reference_image(seed=17))
        save_image(ref, reference_image(seed=18))
        edit = ["--hairstyle-ref", str(ref), "--color", "purple", "--aligned"]
        local, remote = tmp_path / "local.png", tmp_path / "remote.png"
        assert main(["edit", str(photo), "-o", str(local), *edit, "--device", "cpu",
                     "--weights-dir", str(empty_store), *flags(files), "--save-aligned", str(tmp_path / "a")]) == 0
        assert main(["edit", str(photo), "-o", str(remote), *edit, "--server", endpoint, "--timeout", "30",
                     "--save-aligned", str(tmp_path / "b")]) == 0
        assert np.array_equal(load_image(local), load_image(remote))
        for name in ("photo_face0_edited.png", "photo_face0_mask.png", "photo_face0_aligned.png"):
            assert np.array_equal(load_image(tmp_path / "a" / name), load_image(tmp_path / "b" / name)), name
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert list(empty_store.iterdir()) == []

"""`hairclip edit` from the command line: outputs, batches, and errors that leave nothing half-written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hairclip.cli import build_parser, main
from hairclip.images import load_image, save_image


@pytest.fixture
def photo_file(tmp_path):
    yy, xx = np.mgrid[0:300, 0:280]
    photo = np.stack([xx % 256, yy % 256, (2 * xx + yy) % 256], -1).astype(np.uint8)
    path = tmp_path / "me.png"
    save_image(path, photo)
    return path


TINY = ["--random-tiny", "--device", "cpu"]


def test_edit_writes_the_photo_and_the_layer(photo_file, tmp_path, capsys):
    out, layer = tmp_path / "out.jpg", tmp_path / "layer.png"
    assert main(["edit", str(photo_file), "-o", str(out), "--layer", str(layer), "--hairstyle", "bob cut",
                 "--strength", "0.8", *TINY]) == 0
    assert load_image(out).shape == (300, 280, 3)  # JPEG: the extension decides
    assert load_image(layer).shape == (300, 280, 4)
    assert "1 face(s) edited" in capsys.readouterr().out


def test_a_folder_goes_to_a_folder(photo_file, tmp_path):
    save_image(tmp_path / "second.png", load_image(photo_file)[::-1].copy())
    (tmp_path / "notes.txt").write_text("not a photo")
    out = tmp_path / "out"
    assert main(["edit", str(tmp_path), "-o", str(out), "--color", "red", *TINY]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["hairclip-report.jsonl", "me_hairclip.png", "second_hairclip.png"]


def test_errors_are_sentences_and_leave_no_output(tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG but not really")
    out = tmp_path / "out.png"
    assert main(["edit", str(bad), "-o", str(out), "--hairstyle", "afro", *TINY]) == 1
    assert "cannot be decoded as an image" in capsys.readouterr().err
    assert not out.exists()
    blank = tmp_path / "blank.png"
    save_image(blank, np.zeros((40, 40, 3), np.uint8))  # too small for the centred test face
    assert main(["edit", str(blank), "-o", str(out), "--hairstyle", "afro", *TINY]) == 1
    assert "at least 128 px is needed" in capsys.readouterr().err
    assert not out.exists()


def test_color_spellings_are_aliases_of_the_colour_options(tmp_path):
    base = ["edit", "me.png", "-o", str(tmp_path / "o.png")]
    for spelling in ("colour", "color"):
        args = build_parser().parse_args([*base, f"--{spelling}", "red", f"--{spelling}-ref", "r.png",
                                          f"--aligned-{spelling}-ref"])
        assert (args.colour, args.colour_ref, args.aligned_colour_ref) == ("red", Path("r.png"), True)


def test_nothing_to_change_and_unknown_options(photo_file, tmp_path, capsys):
    assert main(["edit", str(photo_file), "-o", str(tmp_path / "o.png")]) == 1
    assert "nothing to change" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["edit", str(photo_file), "-o", str(tmp_path / "o.png"), "--hairstlye", "afro"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --hairstlye" in capsys.readouterr().err


def test_python_dash_m_is_the_same_command():
    out = subprocess.run([sys.executable, "-m", "hairclip", "edit", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--hairstyle-ref" in out.stdout


def test_a_command_module_that_fails_to_import_fails_the_command(monkeypatch):
    from hairclip import cli

    monkeypatch.setattr(cli, "_COMMAND_MODULES", (*cli._COMMAND_MODULES, "hairclip.no_such_commands"))
    with pytest.raises(ModuleNotFoundError, match="hairclip.no_such_commands"):
        cli.build_parser()


def test_every_command_is_registered():
    from hairclip.cli import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert {"edit", "serve", "status", "keys", "weights", "bench", "install-plugin", "train", "invert"} <= commands

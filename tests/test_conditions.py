"""The condition rules (hairclip_shared.conditions) are the same for the backend and the Krita scripting API."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from hairclip.pipeline.conditions import Conditions, ConflictingConditions
from hairclip_shared.conditions import condition_conflict
from hairclip_shared.editing import FACE_MODES
from hairclip_shared.protocol import BadRequest

ROOT = Path(__file__).resolve().parents[1]


def _krita_scripting():
    sys.path.insert(0, str(ROOT / "tests" / "mock_krita"))
    pkg = ROOT / "plugin_krita" / "hairclip"
    if "hairclip_krita" not in sys.modules:  # the name test_krita_plugin.py loads it under, too
        spec = importlib.util.spec_from_file_location("hairclip_krita", pkg / "__init__.py",
                                                      submodule_search_locations=[str(pkg)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["hairclip_krita"] = module
        spec.loader.exec_module(module)
    return importlib.import_module("hairclip_krita.scripting")


def test_one_condition_per_branch():
    assert condition_conflict(True, False, True, False, False) is None
    assert condition_conflict(False, True, False, False, True) is None
    assert condition_conflict(False, False, False, False, False) is None  # nothing at all is not a conflict
    assert condition_conflict(True, True, False, False, False).endswith("not both.")
    for colours in ((True, True, False), (True, False, True), (False, True, True), (True, True, True)):
        assert "only one of them" in condition_conflict(False, False, *colours)


def test_the_backend_refuses_with_the_shared_sentence():
    ref = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ConflictingConditions) as e:
        Conditions(hairstyle="afro", hairstyle_ref=ref)
    assert e.value.message == condition_conflict(True, True, False, False, False)
    with pytest.raises(ConflictingConditions) as e:
        Conditions(colour_ref=ref, rgb=(1, 2, 3))
    assert e.value.message == condition_conflict(False, False, False, True, True)


def test_krita_scripting_refuses_with_the_shared_sentence_and_the_shared_face_modes():
    scripting = _krita_scripting()
    args = dict(hairstyle=None, colour=None, rgb=None, hairstyle_ref=None, colour_ref=None, strength=1.0,
                faces="all", endpoint="tcp://127.0.0.1:1")
    with pytest.raises(BadRequest) as e:
        scripting._settings(**(args | dict(hairstyle="afro", hairstyle_ref="layer-id")))
    assert e.value.message == condition_conflict(True, True, False, False, False, reference="reference layer")
    with pytest.raises(BadRequest) as e:
        scripting._settings(**(args | dict(colour="red", rgb="#102030")))
    assert "reference layer" in e.value.message and "only one of them" in e.value.message
    with pytest.raises(BadRequest, match="faces must be 'all' or 'selection'"):
        scripting._settings(**(args | dict(faces="largest")))
    for faces in FACE_MODES:
        assert scripting._settings(**(args | dict(hairstyle="afro", faces=faces))).faces == faces

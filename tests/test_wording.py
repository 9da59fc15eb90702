"""The shared vocabulary both dialogs show (hairclip_shared.wording)."""

from __future__ import annotations

from hairclip_shared.editing import COLOUR_MODES, FACE_MODES, HAIRSTYLE_MODES, EditSettings
from hairclip_shared.wording import (
    COLOUR_MODE_LABELS,
    FACE_LABELS,
    HAIRSTYLE_MODE_LABELS,
    NEED_CHANGE,
    NEED_COLOUR_REF,
    NEED_HAIRSTYLE_REF,
    STAGES,
    active_fields,
    missing_input,
    overall_fraction,
    stage_text,
)


def test_every_mode_has_a_label_and_no_two_share_one():
    assert list(HAIRSTYLE_MODE_LABELS) == list(HAIRSTYLE_MODES)
    assert list(COLOUR_MODE_LABELS) == list(COLOUR_MODES)
    assert list(FACE_LABELS) == list(FACE_MODES)
    labels = [*HAIRSTYLE_MODE_LABELS.values(), *COLOUR_MODE_LABELS.values()]
    assert len(set(labels)) == len(labels)


def test_every_pipeline_stage_reads_as_words():
    for stage in ("queued", "faces", "conditions", "invert", "synthesize", "parse", "composite", "receiving"):
        text = stage_text(stage)
        assert text[0].isupper() and "_" not in text and text.lower() != stage
    assert stage_text("queued", 2) == "Waiting for the server (2 edits ahead)"
    assert stage_text("new_stage") == "New stage"  # a newer server's stage still reads


def test_the_bar_only_moves_forward_and_is_never_full_before_the_layer_is_in():
    values = [overall_fraction(name, f) for name, _, _ in STAGES for f in (0.0, 0.5, 1.0)]
    assert values == sorted(values) and values[0] == 0.0
    assert overall_fraction("receiving", 1.0) < 1.0 and overall_fraction("inserting", 1.0) < 1.0


def test_only_the_fields_of_the_chosen_modes_apply():
    assert active_fields("text", "text") >= {"hairstyle", "colour"}
    assert not active_fields("text", "text") & {"hairstyle_ref", "rgb", "colour_ref", "colour_ref_aligned"}
    assert active_fields("reference", "rgb") >= {"hairstyle_ref", "hairstyle_ref_aligned", "rgb"}
    assert not active_fields("none", "none") & {"hairstyle", "colour", "rgb", "hairstyle_ref", "colour_ref"}


def test_missing_input_names_what_to_choose_before_apply():
    assert missing_input(EditSettings()) == ""
    assert missing_input(EditSettings(hairstyle_mode="none", colour_mode="none")) == NEED_CHANGE
    assert missing_input(EditSettings(hairstyle_mode="reference")) == NEED_HAIRSTYLE_REF
    assert missing_input(EditSettings(hairstyle_mode="reference", hairstyle_ref="7"), hairstyle_ref_ok=False) \
        == NEED_HAIRSTYLE_REF  # a layer since deleted
    assert missing_input(EditSettings(colour_mode="reference", colour_ref="3")) == ""
    assert missing_input(EditSettings(colour_mode="reference")) == NEED_COLOUR_REF

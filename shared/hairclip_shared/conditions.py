"""Which hair conditions go together, said once for the backend's `Conditions` and the Krita scripting API.

At most one condition per branch: the hairstyle as text or from a reference, the colour as text, as RGB or
from a reference. Pure Python with no imports, so the plug-ins' embedded Pythons can use it as they are.
"""

from __future__ import annotations


def condition_conflict(hairstyle: bool, hairstyle_ref: bool, colour: bool, colour_ref: bool, rgb: bool,
                       reference: str = "reference image") -> str | None:
    """The sentence that refuses two conditions for one branch, or None when they go together.

    Each flag says whether that condition is given; `reference` names what a reference is to the caller
    (the Krita plug-in's are layers).
    """
    if hairstyle and hairstyle_ref:
        return f"Give a hairstyle as text or as a {reference}, not both."
    if colour + colour_ref + rgb > 1:
        return f"Give a hair colour as text, as a {reference} or as RGB: only one of them."
    return None

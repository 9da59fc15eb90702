"""A second server for the e2e tests' long-hair checks, run inside the test process.

`hairclip serve --random-tiny` parses hair as noise, so whether hair runs past the crop would be chance. This
server runs the same pipeline and the same tiny networks, with tests/portraits.py's KeyParser and the drawn
portrait's known face: the photo's hair below the crop is the hair that was drawn. It records each request
and result, so a test can tell what the plug-in sent and compare what the editor holds with what was sent.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for portraits.py

SIZE = (260, 520)  # a face square of about 128 px, hair to the bottom
HEADS = [(130, 110, 95, 510)]


class Recorder:
    """The engine, with every edit request and result kept for the test."""

    def __init__(self, engine):
        self.engine, self.requests, self.results = engine, [], []

    def edit(self, request, ctx):
        self.requests.append(request)
        result = self.engine.edit(request, ctx)
        self.results.append(result)
        return result

    def __getattr__(self, name):  # info, rerender, render_ahead: as the engine has them
        return getattr(self.engine, name)


@contextmanager
def long_hair_server(photo_path: Path) -> Iterator[tuple[str, Recorder]]:
    """Write the long-hair portrait to ``photo_path`` (PNG) and serve edits of it: (endpoint, recorder)."""
    from PIL import Image

    from hairclip.engine import PipelineEngine
    from hairclip.pipeline.faces import KnownFaces
    from hairclip.pipeline.models import Models
    from hairclip.server import Server
    from portraits import KeyParser, portrait

    photo, _, faces = portrait(*SIZE, HEADS)
    Image.fromarray(photo).save(photo_path)
    models = Models.random_tiny("cpu", seed=0)
    models.parser = KeyParser().to(models.device).eval()
    models.detector = KnownFaces(faces)
    recorder = Recorder(PipelineEngine(models))
    with Server(recorder, "tcp://127.0.0.1:0") as server:
        yield server.endpoint, recorder

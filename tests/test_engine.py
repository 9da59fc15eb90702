"""The server with the real pipeline engine (small random networks) and `hairclip edit --server`."""

from __future__ import annotations

import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from hairclip.cli import main
from hairclip.engine import PipelineEngine
from hairclip.images import array_to_image, image_to_array, load_image, save_image
from hairclip.pipeline.models import Models
from hairclip.server import Server
from hairclip_shared.client import Client
from hairclip_shared.protocol import (
    BadImage,
    Cancelled,
    EditRequest,
    EditResult,
    Image,
    JobFailed,
    NotReady,
    Progress,
)


@pytest.fixture(scope="module")
def engine() -> PipelineEngine:
    return PipelineEngine(Models.random_tiny("cpu", seed=0))


@pytest.fixture(scope="module")
def server(engine):
    with Server(engine, "tcp://127.0.0.1:0") as srv:
        yield srv


@pytest.fixture
def photo() -> np.ndarray:
    yy, xx = np.mgrid[0:300, 0:260]
    return np.stack([xx % 256, yy % 256, (xx * yy) % 256], -1).astype(np.uint8)


def test_hello_reports_the_engine(server):
    with Client(server.endpoint) as client:
        info = client.hello()
    assert info.device == "cpu; precision: fp32 plan (CLIP fp32; generator, e4e, parser fp32)"
    assert "bob cut" in info.hairstyles and "purple" in info.colours
    assert info.models["detector"] == "centre"  # random tiny networks keep the centred stand-in face


def test_serve_detector_option_reaches_hello_without_loading_it():
    import argparse

    from hairclip.engine import make_engine

    args = argparse.Namespace(random_tiny=True, device="cpu", detector="dlib", preload=False)
    engine = make_engine(args)
    assert engine.info().models["detector"] == "dlib" and not engine.models.detector.loaded


def test_edit_streams_progress_then_a_bgra_layer(server, photo):
    with Client(server.endpoint) as client:
        job = client.submit(EditRequest(source=array_to_image(photo), hairstyle="bob cut",
                                        out_channels="BGRA"))
        events = list(job.events(timeout=120))
    stages = [e.stage for e in events if isinstance(e, Progress)]
    assert "invert" in stages and "synthesize" in stages
    result = events[-1]
    assert isinstance(result, EditResult)
    assert result.layer.channels == "BGRA" and (result.layer.width, result.layer.height) == (260, 300)
    layer = image_to_array(result.layer)  # back in RGBA order
    outside = layer[..., 3] == 0
    assert np.array_equal(layer[..., :3][outside], photo[outside])
    assert result.faces_edited == 1 and result.meta["detectors"] == ["centre"]


def test_strength_rerender_skips_inversion_and_encoding(server, engine, photo):
    with Client(server.endpoint) as client:
        first = client.submit(EditRequest(source=array_to_image(photo), colour="red"))
        first.result(timeout=120)
        inversions = engine.editor.inverter.cache.misses + engine.editor.inverter.cache.hits
        encodes = engine.editor.conditions.text_cache.misses + engine.editor.conditions.text_cache.hits
        again = client.rerender(first, 0.5).result(timeout=120)
    assert engine.editor.inverter.cache.misses + engine.editor.inverter.cache.hits == inversions
    assert engine.editor.conditions.text_cache.misses + engine.editor.conditions.text_cache.hits == encodes
    assert again.meta["strength"] == 0.5


def test_engine_errors_reach_the_client_with_their_code(server, photo):
    with Client(server.endpoint) as client:
        job = client.submit(EditRequest(source=array_to_image(photo), hairstyle="x " * 95))
        with pytest.raises(JobFailed) as err:
            job.result(timeout=120)
    assert err.value.code == "prompt_too_long"


def test_cli_edit_on_a_server_matches_in_process(server, photo, tmp_path):
    src = tmp_path / "photo.png"
    save_image(src, photo)
    local, remote = tmp_path / "local.png", tmp_path / "remote.png"
    common = ["--hairstyle", "afro", "--random-tiny", "--device", "cpu"]
    assert main(["edit", str(src), "-o", str(local), *common, "--save-aligned", str(tmp_path / "a")]) == 0
    assert main(["edit", str(src), "-o", str(remote), "--hairstyle", "afro", "--server", server.endpoint,
                 "--save-aligned", str(tmp_path / "b")]) == 0
    assert np.array_equal(load_image(local), load_image(remote))
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["photo_face0_aligned.png", "photo_face0_edited.png", "photo_face0_inversion.png",
                     "photo_face0_mask.png"]
    for name in names:
        assert np.array_equal(load_image(tmp_path / "a" / name), load_image(tmp_path / "b" / name)), name


def test_cli_server_path_never_imports_torch(server, photo, tmp_path):
    src = tmp_path / "photo.png"
    save_image(src, photo)
    code = ("import sys\nfrom hairclip.cli import main\n"
            f"rc = main(['edit', {str(src)!r}, '-o', {str(tmp_path / 'out.png')!r}, '--color', 'red', "
            f"'--server', {server.endpoint!r}])\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nsys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert Path(tmp_path / "out.png").is_file()


def test_cancel_in_the_middle_of_a_real_edit(server, photo):
    with Client(server.endpoint) as client:
        job = client.submit(EditRequest(source=array_to_image(photo), hairstyle="mohawk"))
        for event in job.events(timeout=120):
            if isinstance(event, Progress):  # the pipeline has started: stop it between two stages
                job.cancel()
                break
        with pytest.raises(Cancelled):
            job.result(timeout=120)
        again = EditRequest(source=array_to_image(photo), colour="blond")
        assert client.submit(again).result(timeout=120)  # serving on


def test_eight_clients_five_jobs_each_all_come_back_to_their_sender(server):
    def run(n: int) -> list[tuple[int, int]]:
        h, w = 260 + 2 * n, 280 + n  # each client's own photo size, so a misrouted result shows
        yy, xx = np.mgrid[0:h, 0:w]
        sizes = []
        with Client(server.endpoint) as client:  # one job at a time per client: 8 waiting fill the queue
            for k in range(5):
                source = array_to_image(np.stack([(xx + k) % 256, yy % 256, xx % 256], -1).astype(np.uint8))
                result = client.submit(EditRequest(source=source, colour="red")).result(timeout=300)
                sizes.append((result.layer.width, result.layer.height))
        return sizes

    with ThreadPoolExecutor(8) as pool:
        sizes = list(pool.map(run, range(8)))
    assert sizes == [[(280 + n, 260 + 2 * n)] * 5 for n in range(8)]


def test_cli_aligned_edit_with_aligned_references_on_a_server_matches_in_process(server, tmp_path):
    rng = np.random.default_rng(7)
    src, style, colour = tmp_path / "photo.png", tmp_path / "style.png", tmp_path / "colour.png"
    for path in (src, style, colour):
        save_image(path, rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8))
    refs = ["--hairstyle-ref", str(style), "--color-ref", str(colour), "--aligned"]
    local, remote = tmp_path / "local.png", tmp_path / "remote.png"
    assert main(["edit", str(src), "-o", str(local), *refs, "--random-tiny", "--device", "cpu",
                 "--save-aligned", str(tmp_path / "a")]) == 0
    assert main(["edit", str(src), "-o", str(remote), *refs, "--server", server.endpoint,
                 "--save-aligned", str(tmp_path / "b")]) == 0
    assert np.array_equal(load_image(local), load_image(remote))
    assert np.array_equal(load_image(tmp_path / "b" / "photo_face0_aligned.png"), load_image(src))  # not re-aligned
    for name in ("photo_face0_edited.png", "photo_face0_mask.png"):
        assert np.array_equal(load_image(tmp_path / "a" / name), load_image(tmp_path / "b" / name)), name


def _float_layer(bad: float, h: int = 64, w: int = 48, channels: int = 4) -> np.ndarray:
    """An f32 layer of ordinary values with one bad sample in the middle, and one all-bad row."""
    a = np.random.default_rng(1).random((h, w, channels), dtype=np.float32)
    a[h // 2, w // 2, 1] = bad
    a[-1] = bad
    return a


@pytest.mark.parametrize("role,layer", [("source", "photo"), ("hairstyle_ref", "hairstyle reference"),
                                        ("colour_ref", "colour reference")])
def test_nan_or_inf_f32_layer_is_refused_as_bad_image_naming_the_layer(server, photo, role, layer):
    good = array_to_image(photo.astype(np.float32) / 255)
    with Client(server.endpoint) as client:
        for bad in (np.nan, np.inf, -np.inf):
            images = {"source": good, "hairstyle_ref": None, "colour_ref": None}
            bad_layer = _float_layer(bad)  # built by hand: array_to_image() would refuse it on this side already
            images[role] = Image(bad_layer.shape[1], bad_layer.shape[0], bad_layer.tobytes(), "RGBA", "f32")
            kw = {"hairstyle": None if images["hairstyle_ref"] else "afro",
                  "colour": None if images["colour_ref"] else "red"}
            job = client.submit(EditRequest(**images, **kw))
            with pytest.raises(BadImage) as err:
                job.result(timeout=60)
            assert err.value.code == "bad_image" and f"The {layer} layer" in err.value.message
            assert "NaN or infinite" in err.value.message
        done = client.submit(EditRequest(source=good, colour="red")).result(timeout=120)  # still serving
    layer_out = image_to_array(done.layer)
    assert layer_out.dtype == np.float32 and np.isfinite(layer_out).all()


class _WatchedEngine(PipelineEngine):
    """The real pipeline engine, noting where in the code each cancelled edit stopped."""

    def __init__(self, models: Models):
        super().__init__(models)
        self.stopped_in: list[list[tuple[str, str]]] = []

    def edit(self, request, ctx):
        try:
            return super().edit(request, ctx)
        except Cancelled as e:
            self.stopped_in.append([(Path(f.filename).name, f.name) for f in traceback.extract_tb(e.__traceback__)])
            raise


def test_a_cancel_during_composite_of_a_4096_photo_lands_inside_composite_promptly(engine):
    photo = np.random.default_rng(3).integers(0, 256, (4096, 4096, 3), dtype=np.uint8)
    watched = _WatchedEngine(engine.models)
    with Server(watched, "tcp://127.0.0.1:0") as srv, Client(srv.endpoint, timeout=30) as client:
        job = client.submit(EditRequest(source=array_to_image(photo), hairstyle="afro", preview=False))
        for event in job.events(timeout=300):  # 0.5: the faces are warped, the 4096 px layer is being laid
            assert not isinstance(event, EditResult), "the edit finished before the cancel could be sent"
            if isinstance(event, Progress) and event.stage == "composite" and event.fraction >= 0.5:
                t0 = time.perf_counter()
                job.cancel()
                break
        with pytest.raises(Cancelled):
            job.result(timeout=60)
        latency = time.perf_counter() - t0
        assert client.submit(EditRequest(source=array_to_image(photo[:300, :260]), colour="red")).result(timeout=120)
    frames = watched.stopped_in[0]
    inside = [name for file, name in frames if file == "composite.py"]
    assert inside and inside[0] in ("compose_layer", "compose_one", "compose_face"), frames  # laying the layer
    print(f"cancel latency during composite at 4096 px: {latency:.3f} s; stopped in {inside[-1]}")
    # The target is 0.3 s (bench/bench_cancel.py measures it); this bound allows for a loaded test machine
    # and still fails without cancellation points, where the cancel waits for the whole composite (seconds).
    assert latency < 1.5


def test_warm_new_text_edit_runs_no_inversion_nor_original_parse_and_matches_a_cold_one(
        server, engine, photo, monkeypatch):
    from hairclip.pipeline import parse

    calls = {"invert": 0, "parse": 0}
    inverter, hair = engine.editor.inverter, parse.hair

    def counted_invert(aligned):
        calls["invert"] += 1
        return inverter(aligned)

    def counted_parse(parser, image):
        calls["parse"] += 1
        return hair(parser, image)

    monkeypatch.setattr(engine.editor, "inverter", counted_invert)
    monkeypatch.setattr(parse, "hair", counted_parse)
    photo = photo[::-1].copy()  # a photo no other test has sent: the first edit is cold
    with Client(server.endpoint) as client:
        client.submit(EditRequest(source=array_to_image(photo), hairstyle="bob cut")).result(timeout=120)
        assert calls == {"invert": 1, "parse": 1}
        warm = client.submit(EditRequest(source=array_to_image(photo), hairstyle="afro hairstyle", strength=0.7))
        warm = warm.result(timeout=120)
        assert calls == {"invert": 1, "parse": 1}  # the new text reused the inversion and the original's hair
        engine.editor.photo_cache.clear()
        inverter.cache.clear()
        cold = client.submit(EditRequest(source=array_to_image(photo), hairstyle="afro hairstyle", strength=0.7))
        cold = cold.result(timeout=120)
    assert calls == {"invert": 2, "parse": 2}
    assert np.array_equal(image_to_array(warm.layer), image_to_array(cold.layer))
    assert (image_to_array(warm.layer)[..., 3] > 0).any()


def test_a_new_edit_streams_a_256_px_first_picture_before_the_final_layer(server, photo):
    big = np.tile(photo, (2, 3, 1))  # 600 x 780: the first picture is reduced to 512 px on the long side
    with Client(server.endpoint) as client:
        events = list(client.submit(EditRequest(source=array_to_image(big), hairstyle="bob cut")).events(timeout=120))
        quiet = list(client.submit(EditRequest(source=array_to_image(big), hairstyle="bob cut",
                                               preview=False)).events(timeout=120))
    firsts = [n for n, e in enumerate(events) if isinstance(e, Progress) and e.stage == "first_picture"
              and e.preview is not None]
    final = [n for n, e in enumerate(events) if isinstance(e, EditResult)]
    assert firsts and final == [len(events) - 1] and firsts[0] < final[0]
    picture = image_to_array(events[firsts[0]].preview)
    assert picture.shape == (394, 512, 3) and picture.dtype == np.uint8
    stages = [e.stage for e in events[firsts[0] + 1:] if isinstance(e, Progress)]
    assert "synthesize" in stages  # the full-size render comes after the first picture, in the same job
    assert not any(isinstance(e, Progress) and e.preview is not None for e in quiet)
    assert np.array_equal(image_to_array(quiet[-1].layer), image_to_array(events[-1].layer))  # same final layer


def test_the_final_render_goes_on_from_the_first_pictures_synthesis(server, photo, monkeypatch):
    from hairclip.nets.stylegan2 import Generator

    calls, partial = [], Generator.partial

    def recorded(self, *args, **kwargs):
        start = kwargs.get("start") if "start" in kwargs else (args[5] if len(args) > 5 else None)
        out = partial(self, *args, **kwargs)
        calls.append((start.res if start is not None else 4, out.res))  # from which resolution, to which
        return out

    monkeypatch.setattr(Generator, "partial", recorded)
    with Client(server.endpoint) as client:
        client.submit(EditRequest(source=array_to_image(photo), hairstyle="bob cut")).result(timeout=120)
    # the job's two: the 1024 render did not redo the 256 px that the first picture made (renders ahead may follow)
    assert calls[:2] == [(4, 256), (256, 1024)]


def test_bench_interactive_tiny_reports_every_figure_with_its_ratio_to_the_plain_path(capsys):
    from hairclip.bench import run_interactive

    med = run_interactive("cpu", 1, 256, tiny=True)
    out = capsys.readouterr().out
    assert set(med) == {"first", "final", "rerender", "slider", "warm_first", "warm_final", "plain", "official"}
    assert all(v > 0 for v in med.values()) and med["first"] < med["final"] and med["warm_first"] < med["warm_final"]
    assert med["slider"] < med["rerender"]  # served from the render made ahead
    assert "through a loopback server" in out and out.count("x plain") == 7 and out.count("x official") == 7


def _wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the server"
        time.sleep(0.05)


def test_idle_server_renders_slider_strengths_ahead_and_serves_them_exactly(engine, photo):
    ahead = PipelineEngine(engine.models)
    with Server(ahead, "tcp://127.0.0.1:0") as srv, Client(srv.endpoint) as client:
        job = client.submit(EditRequest(source=array_to_image(photo), hairstyle="bob cut", preview=False))
        first = job.result(timeout=120)
        _wait_for(lambda: ahead.ahead_stats["rendered"] >= 2)  # 0.9 and 1.1 come first: the nearest
        quick = client.rerender(job, 0.9).result(timeout=120)
        assert ahead.ahead_stats["used"] == 1
        photo_kept, previous = ahead._jobs[job.id][:2]
    assert first.meta["strength"] == 1.0
    exact = ahead.editor.rerender(photo_kept, previous, 0.9)
    assert np.array_equal(image_to_array(quick.layer), exact.layer)


def test_a_look_at_the_renders_ahead_is_answered_at_once_and_never_stops_them(engine, photo, monkeypatch):
    """A slider's ``ready_only`` look: NotReady while the render ahead runs (which goes on), then that render."""
    import threading

    ahead = PipelineEngine(engine.models)
    real_rerender, gate, started = ahead.editor.rerender, threading.Event(), []

    def held_when_ahead(photo, previous, strength, progress):
        if progress.__name__ == "stop_if_asked":  # a render ahead: held at a cancellation point until let go
            started.append(strength)
            while not gate.wait(0.01):
                progress("synthesize", 0.0)
        return real_rerender(photo, previous, strength, progress)

    monkeypatch.setattr(ahead.editor, "rerender", held_when_ahead)
    with Server(ahead, "tcp://127.0.0.1:0") as srv, Client(srv.endpoint) as client:
        job = client.submit(EditRequest(source=array_to_image(photo), hairstyle="bob cut", preview=False))
        job.result(timeout=120)
        _wait_for(lambda: started == [0.9])
        t0 = time.monotonic()
        with pytest.raises(NotReady):
            client.rerender(job, 0.9, ready_only=True).result(timeout=5)
        assert time.monotonic() - t0 < 2.0  # answered by the socket thread while the worker is busy
        assert ahead.ahead_stats["interrupted"] == 0 and started == [0.9]  # the render ahead went on
        gate.set()
        _wait_for(lambda: ahead.ahead_stats["rendered"] >= 1)
        look = client.rerender(job, 0.9, ready_only=True).result(timeout=5)
        again = client.rerender(look.job, 0.9).result(timeout=120)  # a look's job is a base like any other
        photo_kept, previous = ahead._jobs[job.id][:2]
    exact = real_rerender(photo_kept, previous, 0.9)
    assert np.array_equal(image_to_array(look.layer), exact.layer)
    assert np.array_equal(image_to_array(again.layer), exact.layer)


def test_a_look_at_a_strength_far_from_the_last_one_moves_the_renders_ahead_there(engine, photo):
    ahead = PipelineEngine(engine.models)
    with Server(ahead, "tcp://127.0.0.1:0") as srv, Client(srv.endpoint) as client:
        job = client.submit(EditRequest(source=array_to_image(photo), hairstyle="bob cut", preview=False))
        job.result(timeout=120)
        with pytest.raises(NotReady):
            client.rerender(job, 0.35, ready_only=True).result(timeout=5)
        assert [s for _, s in ahead._plan][:3] == [0.35, 0.3, 0.4]  # where the slider is, nearest first
        _wait_for(lambda: (job.id, 0.35) in ahead._ahead)
        look = client.rerender(job, 0.35, ready_only=True).result(timeout=5)
    assert look.meta["strength"] == 0.35 and ahead.ahead_stats["used"] == 1


def test_a_long_slider_session_keeps_the_edit_it_re_renders(photo):
    """More re-renders than the engine keeps jobs: the edit they all re-render stays cached."""
    keeper = PipelineEngine(Models.random_tiny("cpu", seed=0), keep_jobs=3)
    with Server(keeper, "tcp://127.0.0.1:0") as srv, Client(srv.endpoint) as client:
        job = client.submit(EditRequest(source=array_to_image(photo), colour="red", preview=False))
        job.result(timeout=120)
        strengths = [0.3, 0.4, 0.5, 0.6, 0.7]
        layers = [client.rerender(job, s).result(timeout=120).layer for s in strengths]
        assert len(keeper._jobs) == 3 and job.id in keeper._jobs
    assert len({im.tobytes() for im in layers}) == len(strengths)


def test_renders_ahead_give_way_to_a_new_job_at_once(engine, photo, monkeypatch):
    ahead = PipelineEngine(engine.models)
    real_rerender = ahead.editor.rerender
    started = []

    def endless_when_ahead(photo, previous, strength, progress):
        if progress.__name__ != "stop_if_asked":  # a client's re-render
            return real_rerender(photo, previous, strength, progress)
        started.append(strength)
        while True:  # a render ahead that would never end on its own: only giving way stops it
            progress("synthesize", 0.0)
            time.sleep(0.01)

    monkeypatch.setattr(ahead.editor, "rerender", endless_when_ahead)
    with Server(ahead, "tcp://127.0.0.1:0") as srv, Client(srv.endpoint) as client:
        client.submit(EditRequest(source=array_to_image(photo), hairstyle="bob cut", preview=False)).result(timeout=120)
        _wait_for(lambda: started)
        events = list(client.submit(EditRequest(source=array_to_image(photo), colour="red")).events(timeout=120))
        assert isinstance(events[-1], EditResult)  # it ran: the endless render ahead gave way
        assert ahead.ahead_stats["interrupted"] >= 1 and ahead.ahead_stats["rendered"] == 0
        assert not any(isinstance(e, Progress) and e.job != events[-1].job for e in events)  # nothing leaked

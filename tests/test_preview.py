"""hairclip_shared.pictures and .preview: the pictures and the slider/history state both plug-ins' live previews use."""

from __future__ import annotations

import numpy as np
import pytest

from hairclip_shared.pictures import crossfade, over, shrink, to_rgba8
from hairclip_shared.preview import History, RenderSession, StrengthPreview
from hairclip_shared.protocol import BadRequest, Cancelled, EditResult, Image, NotReady

rng = np.random.default_rng(0)


def rgba(w, h, alpha=None) -> Image:
    px = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    if alpha is not None:
        px[..., 3] = alpha
    return Image(w, h, px.tobytes(), "RGBA", "u8")


def arr(im: Image) -> np.ndarray:
    return np.frombuffer(im.tobytes(), np.uint8).reshape(im.height, im.width, -1)


def test_shrink_takes_every_nth_pixel_so_the_longer_side_fits():
    im = rgba(2048, 1000)
    small = shrink(im, 256)
    assert (small.width, small.height) == (256, 125)
    np.testing.assert_array_equal(arr(small), arr(im)[::8, ::8])
    assert shrink(im, 4096) is im


def test_shrink_handles_pixels_no_memoryview_format_fits():
    px = rng.random((30, 41, 4), dtype=np.float32)  # 16-byte pixels
    im = Image(41, 30, px.tobytes(), "RGBA", "f32")
    small = shrink(im, 10)
    got = np.frombuffer(small.tobytes(), np.float32).reshape(small.height, small.width, 4)
    np.testing.assert_array_equal(got, px[::5, ::5])
    rgb = Image(9, 9, rng.integers(0, 256, (9, 9, 3), dtype=np.uint8).tobytes(), "RGB", "u8")
    np.testing.assert_array_equal(arr(shrink(rgb, 3)), arr(rgb)[::3, ::3])


@pytest.mark.parametrize("channels,depth", [("BGRA", "u8"), ("BGRA", "u16"), ("RGBA", "f32"), ("RGB", "u8")])
def test_to_rgba8_reorders_channels_and_reduces_depth(channels, depth):
    ref = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    if "A" not in channels:
        ref[..., 3] = 255
    order = ["RGBA".index(c) for c in channels]
    data = ref[..., order]
    if depth == "u16":
        data = data.astype(np.uint16) * 256 + 100  # the high byte is the value
    elif depth == "f32":
        data = data.astype(np.float32) / 255
    got = to_rgba8(Image(7, 5, np.ascontiguousarray(data).tobytes(), channels, depth))
    assert (got.channels, got.depth) == ("RGBA", "u8")
    np.testing.assert_array_equal(arr(got), ref)


def test_over_lays_the_edit_on_the_source_by_its_alpha_and_keeps_the_source_alpha():
    alpha = np.zeros((20, 30), np.uint8)
    alpha[5:15, 5:25] = 255
    alpha[8:12, 3:27] = rng.integers(1, 255, (4, 24))  # a soft band
    base, layer = rgba(30, 20), rgba(30, 20, alpha)
    got = arr(over(base, layer)).astype(np.int64)
    b, t = arr(base).astype(np.int64), arr(layer).astype(np.int64)
    a = alpha[..., None].astype(np.int64)
    want = (b[..., :3] * (255 - a) + t[..., :3] * a + 127) // 255
    np.testing.assert_array_equal(got[..., :3], want)
    np.testing.assert_array_equal(got[..., 3], b[..., 3])


def test_crossfade_mixes_two_pictures_by_weight_and_rounds():
    a, b = rgba(64, 48), rgba(64, 48)
    for w in (0.0, 0.25, 0.5, 0.9, 1.0):
        got = arr(crossfade(a, b, w)).astype(np.int64)
        wb = round(w * 256)
        want = (arr(a).astype(np.int64) * (256 - wb) + arr(b).astype(np.int64) * wb + 128) // 256
        np.testing.assert_array_equal(got, want)
    white = Image(2, 1, b"\xff" * 8, "RGBA", "u8")
    assert crossfade(white, white, 0.37).tobytes() == b"\xff" * 8  # no carry from one byte into the next
    with pytest.raises(ValueError):
        crossfade(a, rgba(8, 8), 0.5)


def pic(value: int) -> Image:
    return Image(2, 2, bytes([value]) * 16, "RGBA", "u8")


def test_dragging_between_two_grid_renders_crossfades_them_and_asks_for_nothing_more():
    p = StrengthPreview(1.0)
    p.add(0.9, pic(90))
    p.add(1.0, pic(100))
    p.move(0.93)
    assert p.wanted() == []
    f = p.frame()
    assert f.kind == "crossfade" and f.parts == ((0.9, pytest.approx(0.7)), (1.0, pytest.approx(0.3)))
    assert f.image.tobytes()[0] == 93
    assert p.frame() is f  # redrawing the same position mixes nothing again
    p.move(0.95)
    assert p.frame().image.tobytes()[0] == 95


def test_dragging_asks_for_the_missing_grid_neighbours_and_shows_the_nearest_meanwhile():
    p = StrengthPreview(1.0)
    p.add(1.0, pic(100))
    p.move(1.27)
    assert p.wanted() == [1.2, 1.3]
    f = p.frame()
    assert f.kind == "nearest" and f.parts == ((1.0, 1.0),)


def test_release_asks_for_the_exact_strength_and_the_exact_render_replaces_the_crossfade():
    p = StrengthPreview(1.0)
    for s in (0.9, 1.0):
        p.add(s, pic(round(s * 100)))
    p.release(0.93)
    assert p.wanted() == [0.93]
    assert p.frame().kind == "crossfade"
    p.add(0.93, pic(7))
    assert p.wanted() == [] and p.frame().kind == "exact" and p.frame().image.tobytes()[0] == 7


def test_first_picture_is_shown_until_a_render_arrives():
    p = StrengthPreview(1.0)
    assert p.frame().kind == "none"
    p.first = pic(1)
    assert p.frame().kind == "first"
    p.add(1.0, pic(2))
    assert p.frame().kind == "exact"


class FakeJob:
    def __init__(self, strength):
        self.strength, self.events, self.cancelled = strength, [], False

    def poll(self):
        out, self.events = self.events, []
        return out

    def cancel(self):
        self.cancelled = True
        self.events.append(Cancelled("cancelled"))


def layer(value: int, w=16, h=8) -> EditResult:
    px = np.full((h, w, 4), value, np.uint8)
    px[..., 3] = 255
    return EditResult(Image(w, h, px.tobytes(), "BGRA", "u8"))


def test_render_session_fetches_neighbours_cancels_abandoned_asks_and_keeps_results_for_apply():
    asked: list[FakeJob] = []

    def rerender(s):
        asked.append(FakeJob(s))
        return asked[-1]

    src = Image(16, 8, bytes(16 * 8 * 4), "BGRA", "u8")
    sess = RenderSession(rerender, src, layer(100), 1.0, side=8)
    assert sess.frame().kind == "exact" and sess.result_at(1.0) is not None
    sess.move(1.45)
    assert [j.strength for j in asked] == [1.4, 1.5]
    sess.move(0.55)  # far away: the old asks go, the new neighbours are asked for
    assert asked[0].cancelled and asked[1].cancelled
    assert [j.strength for j in asked[2:]] == [0.5, 0.6]
    asked[2].events.append(layer(50))
    asked[3].events.append(layer(60))
    assert sess.poll()
    f = sess.frame()
    assert f.kind == "crossfade" and f.image.width == 8
    sess.release(0.55)
    assert asked[-1].strength == 0.55
    asked[-1].events.append(layer(55))
    sess.poll()
    assert sess.frame().kind == "exact" and sess.result_at(0.55).layer.tobytes()[0] == 55
    assert not sess.busy and sess.error == ""


def test_render_session_on_a_forgotten_edit_stops_asking_and_says_why():
    jobs = []

    def rerender(s):
        jobs.append(FakeJob(s))
        return jobs[-1]

    sess = RenderSession(rerender, Image(4, 4, bytes(64), "BGRA", "u8"), layer(1, 4, 4), 1.0)
    sess.release(0.5)
    jobs[0].events.append(BadRequest("not cached", "unknown_job"))
    sess.poll()
    assert sess.stale and "no longer holds" in sess.error and len(jobs) == 1
    sess.release(0.7)
    assert len(jobs) == 1 and sess.frame().kind == "nearest"


class Server:
    """What a session sees of a server: looks answered from the renders made ahead, and queued jobs."""

    def __init__(self, ahead=()):
        self.ahead = set(ahead)
        self.looks: list[float] = []
        self.jobs: list[FakeJob] = []

    def ready(self, s):
        self.looks.append(s)
        job = FakeJob(s)
        job.events.append(layer(round(s * 100)) if s in self.ahead else NotReady("not yet"))
        return job

    def rerender(self, s):
        self.jobs.append(FakeJob(s))
        return self.jobs[-1]


def looking_session(server, clock):
    return RenderSession(server.rerender, Image(16, 8, bytes(16 * 8 * 4), "BGRA", "u8"), layer(100), 1.0, side=8,
                         ready=server.ready, clock=lambda: clock[0])


def test_the_first_drag_finds_the_renders_the_server_made_ahead_without_queueing_a_job():
    server, clock = Server(ahead={0.9, 1.1}), [0.0]
    sess = looking_session(server, clock)
    assert sess.looks == {} and sess.pending  # nothing asked before the first poll: the edit has just come
    sess.poll()
    assert server.looks == [0.9, 1.1, 0.8, 1.2] and server.jobs == []  # nearest first, within two steps
    sess.poll()  # 0.9 and 1.1 were ready; 0.8 and 1.2 are not, and are looked at again after a wait
    assert set(sess.view.pictures) == {1.0, 0.9, 1.1} and len(server.looks) == 4
    sess.move(1.05)  # the first drag: both grid neighbours are already here
    f = sess.frame()
    assert f.kind == "crossfade" and [s for s, _ in f.parts] == [1.0, 1.1] and server.jobs == []
    clock[0] += 0.3
    server.ahead |= {1.2}
    sess.poll()  # the look goes out ...
    sess.poll()  # ... and its answer comes in
    assert 1.2 in sess.view.pictures and server.jobs == []


def test_a_drag_only_looks_and_the_release_queues_the_exact_render():
    server, clock = Server(), [0.0]
    sess = looking_session(server, clock)
    sess.move(0.55)
    assert server.jobs == [] and set(server.looks[:2]) == {0.5, 0.6}  # the look moves the server's plan here
    assert sess.frame().kind == "nearest"
    sess.release(0.55)
    assert [j.strength for j in server.jobs] == [0.55]
    server.jobs[0].events.append(layer(55))
    sess.poll()
    assert sess.frame().kind == "exact" and not sess.busy


def test_looks_wait_longer_each_time_and_stop_a_while_after_the_slider_rests():
    server, clock = Server(), [0.0]
    sess = looking_session(server, clock)
    times = []
    while clock[0] < 80:
        before = server.looks.count(0.9)
        sess.poll()
        if server.looks.count(0.9) > before:
            times.append(clock[0])
        clock[0] = round(clock[0] + 0.05, 2)
    gaps = [round(b - a - 0.05, 2) for a, b in zip(times, times[1:], strict=False)]  # a "not yet" is read a tick on
    assert gaps[:4] == [0.25, 0.5, 1.0, 2.0] and set(gaps[4:]) == {2.0}
    assert times[-1] <= 60 and not sess.pending  # LOOK_FOR_S after the last move: the plug-in's timer may stop
    n = len(server.looks)
    sess.move(0.95)  # a move starts the looks again
    assert sess.pending and len(server.looks) > n


def test_an_older_server_without_looks_gets_plain_jobs_as_before():
    server, clock = Server(), [0.0]

    def old_ready(s):
        job = FakeJob(s)
        job.events.append(BadRequest("unknown field 'ready_only'", "unknown_field"))
        return job

    sess = RenderSession(server.rerender, Image(16, 8, bytes(16 * 8 * 4), "BGRA", "u8"), layer(100), 1.0,
                         side=8, ready=old_ready, clock=lambda: clock[0])
    sess.poll()  # the looks go out ...
    sess.poll()  # ... and are refused
    assert sess.looking_for() == [] and sess.error == ""
    sess.move(1.45)
    assert [j.strength for j in server.jobs] == [1.4, 1.5]


def test_history_keeps_the_newest_first_within_its_limit_and_drops_on_request():
    h = History(limit=2)
    a = h.add("bob cut, purple", 1.0, pic(1))
    b = h.add("afro", 0.5, pic(2))
    c = h.add("afro, blond", 1.2, pic(3))
    assert [e.id for e in h.entries] == [c.id, b.id] and h.get(a.id) is None
    assert h.drop(b.id) is b and len(h) == 1 and h.drop(b.id) is None

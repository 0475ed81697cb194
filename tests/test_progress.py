"""The one progress abstraction (core/progress.py): counts, nested loops, cancel, callbacks, tqdm."""

from __future__ import annotations

import pytest
import torch

from vdot_nodes.core.errors import VDOTCancelled
from vdot_nodes.core.progress import CallbackProgress, Progress, SamplerStep, TqdmProgress, as_progress
from vdot_nodes.core.sampling import SeededNoise, sample


class Recorder(Progress):
    def __init__(self, total=None):
        super().__init__(total)
        self.shown, self.notes, self.totals = [], [], []

    def set_total(self, total):
        self.totals.append(total)
        super().set_total(total)

    def _show(self):
        self.shown.append((self.done, self.total))

    def note(self, text):
        self.notes.append(text)


def test_parts_share_one_bar_over_nested_loops():
    outer = Recorder()
    for i in range(3):
        part = outer.part(i, 3)
        part.set_total(4)
        for _ in range(4):
            part.update(1)
        part.note(f"window {i}")
    assert outer.totals == [12]  # set once: later windows give the same total
    assert [d for d, t in outer.shown if t == 12] == list(range(13))
    assert outer.notes == ["window 0", "window 1", "window 2"]


def test_callback_form_and_calling_a_progress_as_a_callback():
    seen = []
    p = as_progress(lambda d, t: seen.append((d, t)))
    assert isinstance(p, CallbackProgress)
    p.set_total(3)
    p.update(1)
    p.update(2)
    assert seen == [(1, 3), (3, 3)]
    rec = Recorder()
    rec(2, 5)  # a Progress passed where a progress(done, total) callback is expected
    rec(1, 5)  # never backwards
    assert (rec.done, rec.total) == (2, 5)


def test_cancel_from_callback_or_progress_and_status_view_does_not_count():
    with pytest.raises(VDOTCancelled):
        as_progress(None, lambda: True).check_cancel()
    as_progress(None, lambda: False).check_cancel()
    outer = Recorder(10)
    combined = as_progress(outer, lambda: True)  # a Progress plus a cancel callback: both honoured
    combined.update(2)
    assert outer.done == 2
    with pytest.raises(VDOTCancelled):
        combined.check_cancel()
    side = outer.status()
    side.update(5)
    side.note("VAE decode chunk 1")
    assert outer.done == 2 and outer.notes == ["VAE decode chunk 1"]


def test_sampler_counts_steps_and_stops_on_a_cancelling_progress():
    class StopAfter(Recorder):
        def check_cancel(self):
            if self.done == 2:
                raise VDOTCancelled("stop")

    shape = (4, 1, 2, 2)
    p = Recorder()
    sample(lambda x, t: -x, SeededNoise([0]), shape, "teacher_euler", progress=p)
    assert p.totals == [p.total] and p.done == p.total
    stop = StopAfter()
    with pytest.raises(VDOTCancelled):
        sample(lambda x, t: -x, SeededNoise([0]), shape, "teacher_euler", progress=stop)
    assert stop.done == 2
    # The Progress form and the callback form walk the same steps to the same latents.
    calls = []
    a = sample(lambda x, t: -x * 0.5, SeededNoise([3]), shape, progress=Recorder())
    b = sample(lambda x, t: -x * 0.5, SeededNoise([3]), shape, progress=lambda d, t: calls.append(d))
    assert torch.equal(a, b) and calls == list(range(1, len(calls) + 1))


class PreviewRecorder(Recorder):
    def __init__(self):
        super().__init__()
        self.previews = []

    def preview(self, result):
        self.previews.append((self.done, result))


def test_sampler_previews_each_step_through_progress_before_counting_it():
    """The sampler's per-step previews take the one progress path: ``preview(SamplerStep)`` once per step,
    before that step is counted, holding the step's input and its x0-prediction x - sigma * v."""
    p = PreviewRecorder()
    out = sample(lambda x, t: -x * 0.5, SeededNoise([3]), (4, 1, 2, 2), "renoise", progress=p)
    steps = [r.step for _, r in p.previews]
    assert steps == list(range(p.total)) and [done for done, _ in p.previews] == steps
    assert all(isinstance(r, SamplerStep) and r.x0.shape == r.x.shape == (1, 4, 1, 2, 2) for _, r in p.previews)
    assert torch.equal(p.previews[-1][1].x0, out)  # renoise: the last step's x0 is the result
    first = p.previews[0][1]
    assert not torch.equal(first.x0, first.x)


def test_previews_through_maps_previews_and_passes_the_rest_on():
    inner = PreviewRecorder()
    mapped = inner.previews_through(lambda r: r * 10)
    mapped.set_total(2)
    mapped.update(1)
    mapped.note("chunk")
    mapped.preview(3)
    assert inner.totals == [2] and inner.done == 1 and inner.notes == ["chunk"] and inner.previews == [(1, 30)]


def test_pipeline_previews_steps_without_the_reference_frames(tiny_pipeline):
    from vdot_nodes.core.vcu import build_r2v_vcu

    p = PreviewRecorder()
    vcu = build_r2v_vcu(torch.rand(1, 16, 16, 3), num_frames=5, height=16, width=16, prompt="a ball")
    latents = tiny_pipeline.generate(vcu, preset="renoise", progress=p, return_latents=True)
    assert len(p.previews) == 4 and [r.step for _, r in p.previews] == [0, 1, 2, 3]
    assert all(r.x0.shape == r.x.shape == latents.shape for _, r in p.previews)  # 2 latent frames, not 3


def test_tqdm_progress_counts_and_notes():
    import io

    out = io.StringIO()
    with TqdmProgress(4, "test", file=out) as p:
        p.update(1)
        p.update_to(3)
        p.note("VAE encode chunk 2")
        p.set_total(6)
        assert (p.done, p.bar.n, p.bar.total) == (3, 3, 6)
    assert "VAE encode chunk 2" in out.getvalue() and "3/6" in out.getvalue()

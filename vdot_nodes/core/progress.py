"""One progress abstraction for every long loop: sampler steps, VAE chunks, long-video windows,
conversion bytes, training steps.

A loop receives a :class:`Progress` and calls ``set_total(n)`` once it knows its length,
``update(k)`` after each unit of work and ``check_cancel()`` before each one (it raises; a loop never
polls a flag itself). ``note(text)`` shows a status line (e.g. "VAE decode chunk 3") and
``preview(result)`` an intermediate result (the sampler's :class:`SamplerStep` after each step, which
a front end may turn into a picture); both are optional and silent by default. Previews take this one
path: there is no separate per-step callback.

The base class is silent and never cancelled. Front ends adapt it:

* :class:`TqdmProgress` — a tqdm bar (the ``vdot`` CLI, ``vdot convert`` / ``preprocess``, training);
* ``vdot_nodes.nodes.comfy.ComfyProgress`` — ComfyUI's ProgressBar and interrupt (``core`` never
  imports ComfyUI: the node layer owns that adapter);
* :class:`CallbackProgress` — the plain ``progress(done, total)`` / ``cancel() -> bool`` callbacks that
  the public functions have always accepted (:func:`as_progress` turns either form into a Progress).

Nested loops (windows of a long video, each sampled in steps) share one bar through :meth:`Progress.part`;
:meth:`Progress.previews_through` maps what a loop previews on its way to the front end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import VDOTCancelled

ProgressFn = Callable[[int, int], None]  # progress(done, total)
CancelFn = Callable[[], bool]  # cancel() -> True to stop (it may also raise its own interrupt)


def check_cancel(cancel: CancelFn | None) -> None:
    """Raise :class:`VDOTCancelled` when ``cancel()`` says so."""
    if cancel is not None and cancel():
        raise VDOTCancelled("generation interrupted by the user")


@dataclass(frozen=True)
class SamplerStep:
    """What a sampler previews after step ``step`` (0-based): that step's input ``x`` and its x0-prediction
    ``x0`` (latents ``[B, 16, f, h, w]``)."""

    step: int
    x: Any
    x0: Any


class Progress:
    """Counts units of work towards a total; silent and never cancelled (subclasses show and stop)."""

    def __init__(self, total: int | None = None):
        self.total = None if total is None else int(total)
        self.done = 0

    # -- what loops call
    def set_total(self, total: int) -> None:
        self.total = int(total)
        self._show()

    def update(self, n: int = 1) -> None:
        self.done += int(n)
        self._show()

    def check_cancel(self) -> None:
        """Raise (:class:`VDOTCancelled` or the front end's own interrupt) when the user asked to stop."""

    def note(self, text: str) -> None:
        """A status line beside the count (which phase, which chunk)."""

    def preview(self, result: Any) -> None:
        """An intermediate result for front ends that show one: the sampler's :class:`SamplerStep` after each
        step, before its count is updated (so the front end can show it with that count)."""

    # -- derived
    def update_to(self, done: int) -> None:
        """Advance to an absolute count (never backwards)."""
        if done > self.done:
            self.update(done - self.done)

    def __call__(self, done: int, total: int) -> None:
        """The callback form ``progress(done, total)``: a Progress goes wherever a callback is expected."""
        if total != self.total:
            self.set_total(total)
        self.update_to(done)

    def part(self, index: int, count: int) -> Progress:
        """The ``index``-th of ``count`` equal sub-loops: its ``set_total(n)`` makes this total ``n·count``
        and its count lands at ``index·n + done`` here (one bar over all windows of a long video)."""
        return _Part(self, index, count)

    def previews_through(self, fn: Callable[[Any], Any]) -> Progress:
        """This Progress with every preview passed through ``fn`` first (the pipeline drops the reference
        frames from a step's latents); counts, notes and cancel are this Progress's own."""
        return _MappedPreviews(self, fn)

    def status(self) -> Progress:
        """A view for a side loop (VAE chunks during sampling): cancel, notes and previews reach this
        Progress, its counts do not."""
        return _Status(self)

    def close(self) -> None:
        """Release the display (a tqdm bar); counting after close is allowed and silent."""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _show(self) -> None:
        """Subclasses render ``done`` / ``total`` here."""


class CallbackProgress(Progress):
    """The callback form: ``progress(done, total)`` after each update, ``cancel()`` polled by check_cancel."""

    def __init__(self, progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                 note: Callable[[str], None] | None = None, total: int | None = None):
        super().__init__(total)
        self._progress, self._cancel, self._note = progress, cancel, note

    def update(self, n: int = 1) -> None:
        self.done += int(n)
        if self._progress is not None:
            self._progress(self.done, self.total if self.total is not None else self.done)

    def check_cancel(self) -> None:
        check_cancel(self._cancel)

    def note(self, text: str) -> None:
        if self._note is not None:
            self._note(text)


class TqdmProgress(Progress):
    """A tqdm bar (stderr); ``note`` goes to its postfix. ``cancel`` (optional) as in :class:`CallbackProgress`;
    further keyword arguments go to ``tqdm`` (``unit``, ``unit_scale``, ``disable``, ``initial``, ...)."""

    def __init__(self, total: int | None = None, desc: str | None = None, *, cancel: CancelFn | None = None,
                 **tqdm_kwargs):
        from tqdm import tqdm

        super().__init__(total)
        tqdm_kwargs.setdefault("unit", "step")
        self.done = int(tqdm_kwargs.get("initial", 0))
        self.bar = tqdm(total=total, desc=desc, **tqdm_kwargs)
        self._cancel = cancel

    def set_total(self, total: int) -> None:
        self.total = self.bar.total = int(total)
        self.bar.refresh()

    def update(self, n: int = 1) -> None:
        self.done += int(n)
        self.bar.update(int(n))

    def check_cancel(self) -> None:
        check_cancel(self._cancel)

    def note(self, text: str) -> None:
        # Drawn now unless the bar drew within its refresh interval (notes may come every few ms).
        self.bar.set_postfix_str(text, refresh=False)
        if time.time() - getattr(self.bar, "last_print_t", 0) >= getattr(self.bar, "mininterval", 0.1):
            self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def as_progress(progress: Progress | ProgressFn | None = None, cancel: CancelFn | None = None) -> Progress:
    """A :class:`Progress` from either form a public function accepts: a Progress (returned as is, with
    ``cancel`` also honoured when given), a ``progress(done, total)`` callback, or nothing."""
    if isinstance(progress, Progress):
        if cancel is None:
            return progress
        return _AlsoCancel(progress, cancel)
    return CallbackProgress(progress, cancel)


class _Forward(Progress):
    """A view that passes everything on to ``inner`` (subclasses change one thing)."""

    def __init__(self, inner: Progress):
        super().__init__(inner.total)
        self.inner = inner

    def set_total(self, total: int) -> None:
        self.total = int(total)
        self.inner.set_total(total)

    def update(self, n: int = 1) -> None:
        self.done += int(n)
        self.inner.update(n)

    def check_cancel(self) -> None:
        self.inner.check_cancel()

    def note(self, text: str) -> None:
        self.inner.note(text)

    def preview(self, result: Any) -> None:
        self.inner.preview(result)


class _Status(_Forward):
    """A view that forwards cancel, notes and previews to ``inner`` and keeps its counts to itself."""

    def __init__(self, inner: Progress):
        super().__init__(inner)
        self.total = None  # its own count, not the inner one's

    set_total = Progress.set_total
    update = Progress.update


class _Part(_Status):
    """Part ``index`` of ``count`` equal parts of the inner count (nested loops on one bar)."""

    def __init__(self, inner: Progress, index: int, count: int):
        super().__init__(inner)
        self.index, self.count = int(index), int(count)

    def set_total(self, total: int) -> None:
        super().set_total(total)
        if self.inner.total != total * self.count:
            self.inner.set_total(total * self.count)

    def _show(self) -> None:
        if self.total is not None:
            self.inner.update_to(self.index * self.total + self.done)


class _AlsoCancel(_Forward):
    """A Progress plus an extra cancel callback; counts, notes and previews go to the Progress."""

    def __init__(self, inner: Progress, cancel: CancelFn):
        super().__init__(inner)
        self._cancel = cancel

    def check_cancel(self) -> None:
        check_cancel(self._cancel)
        self.inner.check_cancel()


class _MappedPreviews(_Forward):
    """A Progress whose previews pass through ``fn`` (:meth:`Progress.previews_through`)."""

    def __init__(self, inner: Progress, fn: Callable[[Any], Any]):
        super().__init__(inner)
        self._fn = fn

    def preview(self, result: Any) -> None:
        self.inner.preview(self._fn(result))


__all__ = ["CancelFn", "CallbackProgress", "Progress", "ProgressFn", "SamplerStep", "TqdmProgress", "as_progress",
           "check_cancel"]

"""One error type for everything a user can get wrong.

Every message names the input, says what was wrong and how to fix it, so a ComfyUI user or a
CLI user sees one readable line instead of a stack trace from deep inside torch.
"""

from __future__ import annotations


class VDOTInputError(ValueError):
    """Bad user input: ``<input>: <problem>. Fix: <how>``."""

    def __init__(self, input_name: str, problem: str, fix: str):
        self.input_name = input_name
        self.problem = problem
        self.fix = fix
        super().__init__(f"{input_name}: {problem}. Fix: {fix}")


class VDOTCancelled(RuntimeError):
    """Raised between sampler steps when the user interrupts generation."""

"""One error type for everything a user can get wrong.

Every message names the input, says what was wrong and how to fix it, so a ComfyUI user or a
CLI user sees one readable line instead of a stack trace from deep inside torch.
"""

from __future__ import annotations

import sys


class VDOTInputError(ValueError):
    """Bad user input: ``<input>: <problem>. Fix: <how>``."""

    def __init__(self, input_name: str, problem: str, fix: str):
        self.input_name = input_name
        self.problem = problem
        self.fix = fix
        super().__init__(f"{input_name}: {problem}. Fix: {fix}")


class VDOTCancelled(RuntimeError):
    """Raised between sampler steps when the user interrupts generation."""


class UsageError(Exception):
    """A bad command line (unknown flag, missing argument): reported as one line, exit status 2."""


def one_line_parser_class():
    """An ``argparse.ArgumentParser`` whose errors raise :class:`UsageError` instead of printing the usage."""
    import argparse

    class OneLineParser(argparse.ArgumentParser):
        def error(self, message):
            raise UsageError(message)

    return OneLineParser


def run_subcommand(prog: str, parser, argv, run, interrupted: str = "interrupted") -> int:
    """Parse ``argv`` and call ``run(args)``, mapping errors to exit statuses the one way every ``vdot``
    subcommand does: bad input → one line and 2, interrupt → one line and 130, ``--help`` → 0."""
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"{prog}: error: {exc} (see {prog} --help)", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    try:
        return run(args)
    except VDOTInputError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except (VDOTCancelled, KeyboardInterrupt):
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130

"""One error type for everything a user can get wrong.

Every message names the input, says what was wrong and how to fix it, so a ComfyUI user or a
CLI user sees one readable line instead of a stack trace from deep inside torch.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping


class VDOTInputError(ValueError):
    """Bad user input: ``<input>: <problem>. Fix: <how>``."""

    def __init__(self, input_name: str, problem: str, fix: str):
        self.input_name = input_name
        self.problem = problem
        self.fix = fix
        super().__init__(f"{input_name}: {problem}. Fix: {fix}")


class VDOTMissingInput(VDOTInputError):
    """A needed input was not given. ``options``: the semantic inputs any one of which would do (inpaint:
    mask or box); a front end rewrites the fix to say how to give them there (:func:`renamed_input`)."""

    def __init__(self, input_name: str, problem: str, fix: str, options: tuple[str, ...] | None = None):
        super().__init__(input_name, problem, fix)
        self.options = tuple(options or (input_name,))


def renamed_input(exc: VDOTInputError, names: Mapping[str, str],
                  how_to_give: Mapping[str, str] | None = None) -> VDOTInputError:
    """``exc`` (naming a semantic input, e.g. ``references[0]``, ``expand.top``) in a front end's terms.

    ``names`` maps semantic names to the front end's (``"references": "--ref"``); an exact entry wins,
    else the name's base is mapped and its ``[i]`` / ``.field`` tail kept. For a
    :class:`VDOTMissingInput` whose options all have an entry in ``how_to_give`` (a phrase: ``"pass --ref
    IMG [IMG ...]"``), the fix becomes those phrases joined by "or". Returns a new error, or ``exc`` when
    nothing changes.
    """
    name = exc.input_name
    base = re.match(r"[A-Za-z_]*", name).group(0)
    new_name = names[name] if name in names else (names[base] + name[len(base):] if base in names else name)
    fix = exc.fix
    options = getattr(exc, "options", ())
    if how_to_give and options and all(o in how_to_give for o in options):
        fix = " or ".join(how_to_give[o] for o in options)
    if (new_name, fix) == (name, exc.fix):
        return exc
    return VDOTInputError(new_name, exc.problem, fix)


class VDOTCancelled(RuntimeError):
    """Raised between sampler steps when the user interrupts generation."""


class UsageError(Exception):
    """A bad command line (unknown flag, missing argument): reported as one line, exit status 2.
    ``prog``: the (sub)command whose ``--help`` explains it."""

    def __init__(self, message: str, prog: str | None = None):
        super().__init__(message)
        self.prog = prog


def one_line_parser_class():
    """An ``argparse.ArgumentParser`` whose errors raise :class:`UsageError` instead of printing the usage."""
    import argparse

    class OneLineParser(argparse.ArgumentParser):
        def error(self, message):
            raise UsageError(message, self.prog)

    return OneLineParser


def run_subcommand(prog: str, parser, argv, run, interrupted: str = "interrupted") -> int:
    """Parse ``argv`` and call ``run(args)``, mapping errors to exit statuses the one way every ``vdot``
    subcommand does: bad input → one line and 2, interrupt → one line and 130, ``--help`` → 0."""
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"{prog}: error: {exc}. Fix: see {exc.prog or prog} --help", file=sys.stderr)
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

"""One error type for everything a user can get wrong.

Every message names the input, says what was wrong and how to fix it, so a ComfyUI user or a
CLI user sees one readable line instead of a stack trace from deep inside torch.

Core never knows its callers: it names each input by what it is (``ram_budget``, ``references[0]``,
``expand.top``), also where a message mentions another input (:func:`input_ref`). Each front end keeps
one table from those semantic names to its own spelling (the CLI's ``--ram-budget``, a node's socket,
a manifest field) and renames an error with it — :func:`renamed_input`, or :func:`inputs_named` around
the calls, or ``run_subcommand(..., names=...)`` when a command prints it — the one way to do so.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator, Mapping

_REF = "\x00"  # brackets a semantic input name in a message: never part of a path or command-line argument
_REF_PATTERN = re.compile(f"{_REF}([^{_REF}]+){_REF}")


def input_ref(name: str) -> str:
    """``name`` (a semantic input) where a problem or fix mentions it: ``f"use {input_ref('precision')}
    fp8_e4m3fn"`` reads "use precision fp8_e4m3fn" as is and "use --precision fp8_e4m3fn" once the CLI
    renames the error."""
    return f"{_REF}{name}{_REF}"


def _front_end_name(name: str, names: Mapping[str, str]) -> str:
    """``name`` in a front end's spelling: an exact entry of ``names`` wins, else the name's base is mapped
    and its ``[i]`` / ``.field`` / `` words`` tail kept; a name without an entry stays as it is."""
    if name in names:
        return names[name]
    base = re.match(r"[A-Za-z_]*", name).group(0)
    return names[base] + name[len(base):] if base and base in names else name


def _spelled(text: str, names: Mapping[str, str]) -> str:
    return _REF_PATTERN.sub(lambda m: _front_end_name(m.group(1), names), text)


class VDOTInputError(ValueError):
    """Bad user input: ``<input>: <problem>. Fix: <how>``. ``problem`` and ``fix`` may mention other inputs
    with :func:`input_ref`; ``.problem`` / ``.fix`` read them by their semantic names until a front end
    renames the error."""

    def __init__(self, input_name: str, problem: str, fix: str):
        self.input_name = input_name
        self.templates = (problem, fix)  # with the input references, for renamed_input
        self.problem = _spelled(problem, {})
        self.fix = _spelled(fix, {})
        super().__init__(f"{input_name}: {self.problem}. Fix: {self.fix}")


class VDOTMissingInput(VDOTInputError):
    """A needed input was not given. ``options``: the semantic inputs any one of which would do (inpaint:
    mask or box); a front end rewrites the fix to say how to give them there (:func:`renamed_input`)."""

    def __init__(self, input_name: str, problem: str, fix: str, options: tuple[str, ...] | None = None):
        super().__init__(input_name, problem, fix)
        self.options = tuple(options or (input_name,))


def renamed_input(exc: VDOTInputError, names: Mapping[str, str],
                  how_to_give: Mapping[str, str] | None = None) -> VDOTInputError:
    """``exc`` (naming semantic inputs, e.g. ``references[0]``, ``expand.top``) in a front end's terms.

    ``names`` maps semantic names to the front end's (``"references": "--ref"``); an exact entry wins,
    else the name's base is mapped and its ``[i]`` / ``.field`` tail kept. The error's own input and every
    :func:`input_ref` in its problem and fix are renamed. For a :class:`VDOTMissingInput` whose options
    all have an entry in ``how_to_give`` (a phrase: ``"pass --ref IMG [IMG ...]"``), the fix becomes those
    phrases joined by "or". Returns a new error, or ``exc`` when nothing changes.
    """
    problem, fix = getattr(exc, "templates", (exc.problem, exc.fix))
    new_name, problem, fix = _front_end_name(exc.input_name, names), _spelled(problem, names), _spelled(fix, names)
    options = getattr(exc, "options", ())
    if how_to_give and options and all(o in how_to_give for o in options):
        fix = " or ".join(how_to_give[o] for o in options)
    if (new_name, problem, fix) == (exc.input_name, exc.problem, exc.fix):
        return exc
    return VDOTInputError(new_name, problem, fix)


@contextlib.contextmanager
def inputs_named(names: Mapping[str, str], how_to_give: Mapping[str, str] | None = None) -> Iterator[None]:
    """Inside, a :class:`VDOTInputError` leaves renamed into a front end's terms (:func:`renamed_input`):
    ``with inputs_named(SOCKETS): validate_generate(...)``."""
    try:
        yield
    except VDOTInputError as exc:
        raise renamed_input(exc, names, how_to_give) from None


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


def run_subcommand(prog: str, parser, argv, run, interrupted: str = "interrupted",
                   names: Mapping[str, str] | None = None, how_to_give: Mapping[str, str] | None = None) -> int:
    """Parse ``argv`` and call ``run(args)``, mapping errors to exit statuses the one way every ``vdot``
    subcommand does: bad input → one line and 2, interrupt → one line and 130, ``--help`` → 0. A bad
    input is printed in the command's terms: ``names`` / ``how_to_give`` map core's semantic input names
    to its flags (:func:`renamed_input`)."""
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
        print(f"{prog}: error: {renamed_input(exc, names or {}, how_to_give)}", file=sys.stderr)
        return 2
    except (VDOTCancelled, KeyboardInterrupt):
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130

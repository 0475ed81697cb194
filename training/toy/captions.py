"""Captions of toy-world scenes from a small grammar, true to the scene by construction.

Grammar (one clause per object, front-most first, then the background and the camera)::

    caption  := object_clause ("," object_clause)* "over a" bg_colour pattern "background" [camera]
    object   := ("a" | "an") colour shape "moves" direction | "a" colour "stick figure walks" direction
                | ... "stays still"
    direction:= "left" | "right" | "up" | "down" | ("up" | "down") "and" ("left" | "right")
    camera   := ", the camera pans" direction

Directions are image-space motion (x right, y down) of the object; the camera pan is the direction
the camera moves, so the background drifts the opposite way. :func:`caption_vocabulary` lists every
word the grammar can produce, which is the toy tokenizer's vocabulary.
"""

from __future__ import annotations

OBJECT_COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.12),
    "green": (0.15, 0.75, 0.20),
    "blue": (0.15, 0.25, 0.90),
    "yellow": (0.95, 0.88, 0.15),
    "purple": (0.60, 0.20, 0.75),
    "cyan": (0.10, 0.85, 0.90),
}
# Background palettes: (name, colour a, colour b) — muted so the objects stand out. Six object colours
# far apart (no orange between red and yellow), so a generated object's colour names one of them.
BACKGROUND_COLORS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "grey": ((0.45, 0.45, 0.45), (0.62, 0.62, 0.62)),
    "brown": ((0.40, 0.28, 0.18), (0.55, 0.42, 0.30)),
    "white": ((0.85, 0.85, 0.85), (0.97, 0.97, 0.97)),
    "dark": ((0.08, 0.08, 0.12), (0.22, 0.22, 0.28)),
}
SHAPES = ("circle", "square", "triangle")
FIGURE = "figure"  # a stick figure ("stick figure" in captions)
PATTERNS = ("plain", "striped", "checkered")  # plain: colour a only

_FIXED_WORDS = "a an and over background moves walks stays still stick figure the camera pans left right up down".split()


def direction_words(vx: float, vy: float) -> str:
    """Image-space direction of a velocity (x right, y down): "left", "up and right", or "" when still."""
    horizontal = "right" if vx > 0 else "left" if vx < 0 else ""
    vertical = "down" if vy > 0 else "up" if vy < 0 else ""
    if horizontal and vertical:
        return f"{vertical} and {horizontal}"
    return horizontal or vertical


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def object_clause(kind: str, color: str, vx: float, vy: float) -> str:
    direction = direction_words(vx, vy)
    if kind == FIGURE:
        return f"{article(color)} {color} stick figure " + (f"walks {direction}" if direction else "stays still")
    return f"{article(color)} {color} {kind} " + (f"moves {direction}" if direction else "stays still")


def scene_caption(objects, background_color: str, pattern: str, pan: tuple[int, int]) -> str:
    """Caption of a scene: ``objects`` are ``(kind, colour, vx, vy)`` front-most first."""
    clauses = ", ".join(object_clause(*o) for o in objects)
    text = f"{clauses} over a {background_color} {pattern} background"
    camera = direction_words(*pan)
    if camera:
        text += f", the camera pans {camera}"
    return text


def caption_vocabulary() -> list[str]:
    """Every word the grammar can produce (sorted, no duplicates)."""
    words = set(_FIXED_WORDS) | set(OBJECT_COLORS) | set(BACKGROUND_COLORS) | set(SHAPES) | set(PATTERNS)
    return sorted(words)

"""A generated block of the README between two marker lines (the results matrix, the claim verdicts): swapped for a
freshly generated one, never edited by hand. Standard library only."""
from __future__ import annotations


def replace_block(text: str, start: str, end: str, block: str) -> str:
    """``text`` with the lines from ``start`` to ``end`` (the marker lines, included) replaced by ``block``.

    Refused where a marker is missing, appears more than once, or the end comes before the start: a README edited
    into such a state is corrected by hand, never guessed at."""
    for marker in (start, end):
        if text.count(marker) != 1:
            raise ValueError(f"the README must hold the marker {marker!r} exactly once "
                             f"(found {text.count(marker)} times)")
    a, b = text.index(start), text.index(end)
    if b < a:
        raise ValueError(f"the README's marker {end!r} comes before {start!r}")
    b += len(end)
    if text.startswith("\r\n", b):
        b += 2
    elif text.startswith("\n", b):
        b += 1
    return text[:a] + block + text[b:]


def print_or_write(block: str, start: str, end: str, write: bool) -> None:
    """The command line of a generated block: print it, or (``write``) put it into the checkout's README.md."""
    if not write:
        print(block, end="")
        return
    from ..paths import project_root
    readme = project_root() / "README.md"
    readme.write_text(replace_block(readme.read_text(), start, end, block))

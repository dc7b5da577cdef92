"""A notebook runs only with parameters its ``parameters`` cell declares.

papermill injects every ``-p NAME VALUE`` it is given and only logs a warning ("Passed unknown parameter") for a name
the notebook's parameters cell does not assign: the notebook then runs as if it had not been given. ``run_all.sh``
calls :func:`main` on every notebook it is about to run, before any compute. The declared names are papermill's own
(:func:`papermill.inspect_notebook`, the function behind that warning).

This module imports nothing of the package: ``run_all.sh`` loads it alone (importing the package imports torch).
"""
from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path


def declared_parameters(notebook: str | Path) -> list[str]:
    """The names the notebook's cell tagged ``parameters`` assigns, in order (none without such a cell)."""
    import papermill
    return list(papermill.inspect_notebook(str(notebook)))


def check_parameters(notebook: str | Path, parameters: Iterable[str]) -> None:
    """Raise ValueError naming the ``parameters`` (names, or a dict of name -> value) that ``notebook`` does not
    declare."""
    declared = declared_parameters(notebook)
    unknown = [name for name in parameters if name not in declared]
    if unknown:
        raise ValueError(f"{Path(notebook).name} does not declare the parameter{'s' * (len(unknown) > 1)} "
                         f"{', '.join(unknown)} in its parameters cell (it declares: {', '.join(declared) or 'none'}); "
                         "papermill would only warn and run the notebook without it")


def parse_args(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """``NOTEBOOK... [-p NAME VALUE]...`` (papermill's ``-p``) -> (notebooks, {name: value})."""
    notebooks, parameters = [], {}
    args = iter(argv)
    for arg in args:
        if arg in ("-p", "--parameters"):
            try:
                name, value = next(args), next(args)
            except StopIteration:
                raise ValueError(f"{arg} needs a name and a value") from None
            parameters[name] = value
        else:
            notebooks.append(arg)
    return notebooks, parameters


def main(argv: list[str] | None = None) -> int:
    """Check every notebook of ``NOTEBOOK... [-p NAME VALUE]...``; exit status 2 with a message naming what is not
    declared."""
    try:
        notebooks, parameters = parse_args(sys.argv[1:] if argv is None else list(argv))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    failed = False
    for notebook in notebooks:
        try:
            check_parameters(notebook, parameters)
        except (ValueError, OSError) as error:
            print(f"error: {error}", file=sys.stderr)
            failed = True
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

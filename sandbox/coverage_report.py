"""Coverage figures for a range of lines (a function under test) from what the sandbox measured.

``Sandbox.verify(pairs, coverage=True)`` hands back, per program, the lines and arcs of
its code part that ran (``VerifyResult.coverage``). ``summarize`` turns them into the
figures ``coverage report`` would give for lines ``first_line..last_line`` of the code:
what counts as a statement, a branch and a possible arc is coverage.py's own analysis of
the code (``coverage.parser.PythonParser``: docstrings are not statements, a ``def`` line
is, the lines of a multi-line statement count as its first, and its default exclusion
and "no branch" pragmas apply), and the arithmetic is that of its reports:

* line coverage = executed statements / statements in the range (1.0 when there are none,
  as coverage.py reports an empty file);
* branch coverage = executed branch arcs / possible branch arcs leaving the range's branch
  lines (lines with more than one possible exit), None when the range has no branch; a
  branch line marked ``# pragma: no branch`` counts its arcs as taken, as coverage.py does.

Runs on the host, never in the sandbox; imports coverage.py (``coverage>=7.4``).
"""

from __future__ import annotations

from collections.abc import Iterable

from coverage.config import DEFAULT_EXCLUDE, DEFAULT_PARTIAL, DEFAULT_PARTIAL_ALWAYS
from coverage.misc import join_regex
from coverage.parser import PythonParser


def summarize(
    code: str,
    executed_lines: Iterable[int],
    executed_arcs: Iterable[Iterable[int]],
    first_line: int,
    last_line: int,
) -> dict:
    """Coverage of lines ``first_line..last_line`` (1-based, inclusive) of ``code``.

    ``executed_lines`` and ``executed_arcs`` are what ran (``VerifyResult.coverage``'s
    ``lines`` and ``arcs``: line numbers of ``code``). Returns ``{"line_coverage": float,
    "branch_coverage": float or None, "uncovered_lines": [statement lines not executed],
    "statements": number of statements, "branches": number of possible branch arcs}``,
    all of them about the range only. Raises ``coverage.exceptions.NotPython`` when
    ``code`` does not parse.
    """
    parser = PythonParser(text=code, exclude=join_regex(DEFAULT_EXCLUDE))
    parser.parse_source()
    in_range = range(first_line, last_line + 1)

    statements = {line for line in parser.statements if line in in_range}
    executed = parser.translate_lines(executed_lines) & statements
    uncovered = sorted(statements - executed)

    possible = parser.arcs()
    exits: dict[int, set[int]] = {}
    for start, end in possible:
        exits.setdefault(start, set()).add(end)
    ran = set()
    for start, end in parser.translate_arcs(tuple(arc) for arc in executed_arcs):
        if start == end:  # a line that jumps back to itself: its one way on, if it has only one
            if len(exits.get(start, ())) == 1:
                ran.add((start, next(iter(exits[start]))))
        else:
            ran.add((start, end))

    counts = parser.exit_counts()
    no_branch = parser.lines_matching(join_regex(DEFAULT_PARTIAL + DEFAULT_PARTIAL_ALWAYS))
    branch_lines = {line for line, count in counts.items() if count > 1 and line in in_range}
    branches = sum(counts[line] for line in branch_lines)
    missing = sum(
        1
        for start, end in possible
        if start in branch_lines and (start, end) not in ran and start not in no_branch and end not in parser.excluded
    )
    return {
        "line_coverage": len(executed) / len(statements) if statements else 1.0,
        "branch_coverage": (branches - missing) / branches if branches else None,
        "uncovered_lines": uncovered,
        "statements": len(statements),
        "branches": branches,
    }

"""What every language package does the same way, whatever its syntax: the file checks made
before parsing, the search for tests in an answer, the seeded sample of mutants, and the
chat pair of a published row."""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Sequence


def file_gate(content: str | None, prefilter: re.Pattern, max_bytes: int) -> tuple[str, str] | None:
    """(drop reason, detail) of a file that cannot hold a kept function, known without
    parsing it (unreadable, binary, empty, too large, no import of a target package); None
    to go on."""
    if content is None:
        return "unreadable", ""
    if "\x00" in content:
        return "binary", ""
    if not content.strip():
        return "empty", ""
    if len(content) > max_bytes:
        return "too_large", f"{len(content)} characters"
    if not prefilter.search(content):
        return "no_target_import", ""
    return None


MAX_TRIMMED_LINES = 30  # lines cut off the end of an answer's code, at most, to make it parse


def test_candidates(blocks: list[str], answer: str, looks_like_tests: Callable[[str], bool]) -> list[str]:
    """Where an answer's tests may be, in the order to try: its code ``blocks`` that look
    like tests (all of them joined first, when the tests are split over several), the
    other blocks, the whole answer last."""
    testy = [b for b in blocks if looks_like_tests(b)]
    ordered = testy + [b for b in blocks if b not in testy]
    if len(testy) > 1:
        ordered.insert(0, "\n\n".join(testy))  # tests split over several blocks
    return ordered + [answer]


def parse_trimmed(text: str, parse: Callable, code_start: re.Pattern):
    """``(tree, source)`` for the first trim of ``text`` that ``parse`` accepts (it returns
    None otherwise): as it is, then without chatter before the first line ``code_start``
    matches, each cutting up to ``MAX_TRIMMED_LINES`` lines after the code, one at a time;
    None when no trim parses."""
    lines = text.strip("\n").splitlines()
    start = next((i for i, line in enumerate(lines) if code_start.match(line)), 0)
    for begin in dict.fromkeys((0, start)):
        kept = lines[begin:]
        for cut in range(0, min(MAX_TRIMMED_LINES, len(kept))):
            source = "\n".join(kept[: len(kept) - cut]) + "\n"
            tree = parse(source)
            if tree is not None:
                return tree, source
    return None


def sample_in_turns(code: str, edits: Sequence, operator: Callable, make: Callable, limit: int, seed: int) -> list:
    """At most ``limit`` mutants of ``code`` from its candidate ``edits``, a sample seeded by
    ``seed`` and the code itself (the same on every machine), in source order: each
    operator's edits are shuffled, the operators take turns (constants do not crowd out the
    rest), and only the edits drawn are made (``make(edit)``: a mutant with ``.code``, or
    None when the edit does not give a program); a mutant equal to one already drawn is
    skipped."""
    digest = int.from_bytes(hashlib.sha256(f"{seed}:{code}".encode()).digest()[:8], "big")
    rng = random.Random(digest)
    groups: dict[str, list[int]] = {}
    for index, edit in enumerate(edits):
        groups.setdefault(operator(edit), []).append(index)
    queues = [rng.sample(members, len(members)) for _, members in sorted(groups.items())]
    chosen: dict[int, object] = {}
    seen: set[str] = set()
    while len(chosen) < limit and any(queues):
        for queue in queues:
            while queue and len(chosen) < limit:
                index = queue.pop()
                mutant = make(edits[index])
                if mutant is not None and mutant.code not in seen:
                    seen.add(mutant.code)
                    chosen[index] = mutant
                    break
    return [chosen[index] for index in sorted(chosen)]


def chat_pair(code: str, instruction: str, fence: str) -> list[dict]:
    """An instruction-tuning pair: the task, then exactly ``code`` as the answer in a fence."""
    answer = code if code.endswith("\n") else code + "\n"
    return [{"role": "user", "content": instruction}, {"role": "assistant", "content": f"```{fence}\n{answer}```"}]


def function_from_answer(
    answer: str | None, blocks: list[str], defines: Callable[[str], bool], parses: Callable[[str], bool], lenient: bool
) -> tuple[str | None, str]:
    """(code, why not): the first of the answer's code ``blocks`` (or the whole answer) that
    ``defines`` the wanted function. With ``lenient`` (evaluation, where an answer may be a
    body only), an answer without such a block still gives code: its first block that
    ``parses``, else its first block, else the answer itself."""
    if answer is None:
        return None, "no_answer"
    for candidate in blocks + [answer]:
        if defines(candidate):
            return candidate.strip("\n") + "\n", ""
    if not lenient:
        return None, "no_function_in_answer"
    parsing = next((b for b in blocks if parses(b)), None)
    return (parsing if parsing is not None else blocks[0] if blocks else answer), ""

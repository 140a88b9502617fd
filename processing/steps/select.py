"""Stage 1's selection step: the decisions that depend on other rows.

The extraction step (``processing.steps.extract``) decides every row from its own
content; what is left needs to know what came before: a candidate function is dropped
as ``contaminated`` (it shares an n-gram with a benchmark solution, flagged during
extraction), ``duplicate`` (same code after normalising whitespace and comments as an
earlier candidate) or ``near_duplicate`` (it shares a MinHash LSH band bucket with an
earlier candidate, as pairs above the Jaccard threshold nearly always do), then goes through the
optional ``check`` (stage 1's define check, ``processing.steps.define``:
``does_not_define``), and the run stops at ``--limit`` kept functions. A candidate is
every function that passed decontamination, whatever dedup or the check then decide: all
of them join the dedup index (``processing.dedup.Deduplicator``), so a copy of a function
that is itself a copy, or that the check drops, is still a copy of it. With ``--limit``
the check is run on the rows of a table in order, a few more than are still needed at a
time, so the limit counts checked rows.

Order, and why results do not depend on how the work was split
---------------------------------------------------------------
``Selector`` is fed the extraction's output tables in input order (corpus row order,
and within a file: the file row, then its functions in source order) and walks each
table in row order; **the first candidate by input order wins**, and a copy that is
dropped names the earliest earlier candidate it matches. Extraction preserves input
order whatever its batch size or number of processes (``datasets.map`` concatenates its
shards in order; streaming is sequential), so for one input order the kept rows, the
rejected rows and the counts are the same with any ``--num_proc``, ``--block_files``
or ``--streaming``. With ``--limit N`` the input is read up to and including the
function that is kept N-th: nothing after it is counted or written, wherever a table
boundary falls.

Because a verdict depends only on the set of candidates before it (not on which of them
were kept), deduplication is exactly decomposable: split the input into contiguous
parts, deduplicate each on its own, then run the same rule once over all parts'
candidates (id, exact key, signature) in order, and every verdict is the one a single
pass over the whole input gives. The rule is also monotone: what a part keeps is a
superset of what the whole keeps, so the global pass only ever turns kept (or later
dropped) rows into copies, or renames the copy a dropped row names. Each shard of a job
array selects on its own and records its candidates (``record``);
``stage1.py --dedup_only`` (``processing.globaldedup``) is the global pass.

Kept and rejected rows leave as Arrow tables in the extraction's schema
(``EXTRACTED_FEATURES``) with ``drop_reason`` and ``detail`` filled in; rows dropped
during extraction pass through as table slices, so millions of dropped methods cost
next to nothing here. Only candidate functions become Python rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from processing.dedup import Deduplicator, copy_detail

# A check run on the candidates that contamination and dedup keep, in input order: one
# verdict per row, None to keep it or (drop reason, detail). With ``--limit`` it is fed
# only as many rows as are still needed (at least MIN_CHECK at a time).
Check = Callable[[list[dict]], list[tuple[str, str] | None]]
MIN_CHECK = 8
# Receives, table by table and in input order, the candidates that passed decontamination
# (columns CANDIDATE_COLUMNS), up to where the run stops: what a global dedup pass needs.
Record = Callable[[pa.Table], None]
CANDIDATE_COLUMNS = ("id", "exact_key", "signature")


class Selector:
    """The order-dependent pass over extracted rows: contamination, duplicates, the limit.

    Holds the deduplication index and the counts (files read, bytes, functions found,
    functions kept, drops per reason at file and function level) across all tables of
    one run. ``record``, if given, is handed each table's candidates (see ``Record``).
    """

    def __init__(
        self, dedup: Deduplicator, limit: int | None = None, check: Check | None = None, record: Record | None = None
    ):
        self.dedup = dedup
        self.limit = limit
        self.check = check
        self.record = record
        self.counts: Counter = Counter({"files": 0, "bytes": 0, "functions": 0, "kept": 0})
        self.files_dropped: Counter = Counter()
        self.functions_dropped: Counter = Counter()

    @property
    def done(self) -> bool:
        """Whether ``--limit`` functions have been kept (feed no more tables then)."""
        return self.limit is not None and self.counts["kept"] >= self.limit

    def _keep(self, kept: list[int], position: int) -> bool:
        """Keep the row at ``position``; True when that reaches the limit."""
        kept.append(position)
        self.counts["kept"] += 1
        return self.done

    def _decide(self, row: dict) -> tuple[str | None, str | None]:
        """(drop reason, detail) of a candidate function; (None, None) keeps it."""
        if row["contaminated"]:
            return "contaminated", "shares n-grams with a benchmark solution"
        reason, first = self.dedup.check(row["id"], row["exact_key"], row["signature"])
        return (reason, copy_detail(first)) if reason else (None, None)

    def select(self, table: pa.Table) -> tuple[pa.Table, pa.Table]:
        """(kept, rejected) rows of one table of extracted rows, taken in order.

        Both are slices of ``table`` with its columns; ``rejected`` holds the rows
        dropped during extraction and the candidates dropped here, in input order.
        Once the limit is reached the rest of the table is left out.
        """
        if self.done:
            return table.slice(0, 0), table.slice(0, 0)
        levels = table.column("level").to_pylist()
        reasons = table.column("drop_reason").to_pylist()
        candidates = [i for i, (lv, r) in enumerate(zip(levels, reasons)) if lv == "function" and r is None]
        stop = len(levels)
        kept: list[int] = []
        new_reasons: list[str | None] = [None] * len(levels)
        new_details: list[str | None] = [None] * len(levels)
        offered: list[int] = []  # candidates that passed decontamination, offered to dedup
        if candidates:
            survivors: list[tuple[int, dict]] = []  # kept by contamination and dedup, for the check
            for position, row in zip(candidates, table.take(pa.array(candidates, pa.int64())).to_pylist()):
                if not row["contaminated"]:
                    offered.append(position)
                reason, detail = self._decide(row)
                if reason:
                    new_reasons[position], new_details[position] = reason, detail
                    reasons[position] = reason
                    continue
                if self.check is not None:
                    survivors.append((position, row))
                    continue
                if self._keep(kept, position):
                    stop = position + 1
                    break
            while survivors and not self.done:
                need = len(survivors) if self.limit is None else self.limit - self.counts["kept"]
                chunk, survivors = survivors[: max(need, MIN_CHECK)], survivors[max(need, MIN_CHECK) :]
                for (position, _), verdict in zip(chunk, self.check([row for _, row in chunk])):
                    if verdict is not None:
                        new_reasons[position], new_details[position] = verdict
                        reasons[position] = verdict[0]
                    elif self._keep(kept, position):
                        stop = position + 1
                        break
        self._count(levels[:stop], reasons[:stop], table.column("file_bytes").to_pylist()[:stop])
        offered = [position for position in offered if position < stop]
        if self.record is not None and offered:
            self.record(table.take(pa.array(offered, pa.int64())).select(list(CANDIDATE_COLUMNS)))
        table = table.slice(0, stop)
        table = _fill(table, "drop_reason", new_reasons[:stop])
        table = _fill(table, "detail", new_details[:stop])
        rejected = [i for i in range(stop) if reasons[i] is not None]
        return table.take(pa.array(kept, pa.int64())), table.take(pa.array(rejected, pa.int64()))

    def _count(self, levels: list[str], reasons: list[str | None], sizes: list[int | None]) -> None:
        for level, reason, size in zip(levels, reasons, sizes):
            if level == "file":
                self.counts["files"] += 1
                self.counts["bytes"] += size or 0
                if reason:
                    self.files_dropped[reason] += 1
            else:
                self.counts["functions"] += 1
                if reason:
                    self.functions_dropped[reason] += 1

    def stats(self) -> dict:
        """The counts so far: ``counts`` (files, bytes, functions, kept) and drops per reason."""
        return {
            "counts": dict(self.counts),
            "files_dropped": dict(self.files_dropped.most_common()),
            "functions_dropped": dict(self.functions_dropped.most_common()),
        }


def _fill(table: pa.Table, name: str, values: list[str | None]) -> pa.Table:
    """``table`` with column ``name`` replaced by ``values`` where they are not None."""
    if not any(v is not None for v in values):
        return table
    index = table.schema.get_field_index(name)
    column = table.column(index)
    update = pa.array(values, type=column.type)
    return table.set_column(index, name, pc.if_else(pc.is_valid(update), update, column))

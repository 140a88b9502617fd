"""How steps run. An engine knows nothing of the steps' content: it is handed a function
from a batch of input columns to the rows to keep, the rows to reject and their counts.

* ``local``: one process; the input in chunks, each chunk's output written atomically and
  skipped on a rerun, shards of a job array, and their merge.
"""

from processing.engine.local import (
    ChunkOutput,
    ChunksDeferred,
    LocalEngine,
    OutputConflict,
    ShardSummary,
    add_stats,
    completed_shards,
    input_digest,
)

__all__ = [
    "ChunkOutput", "ChunksDeferred", "LocalEngine", "OutputConflict", "ShardSummary", "add_stats", "completed_shards", "input_digest",
]  # fmt: skip

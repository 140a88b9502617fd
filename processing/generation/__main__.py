"""Command-line tools of the generation layer.

    python -m processing.generation merge-caches SRC... DEST

``merge-caches`` copies into the request cache in the directory DEST every answer of the
caches SRC (cache directories, or their ``requests.sqlite`` files) that DEST lacks: the way
to combine the node-local caches of job-array tasks after the array has finished.
"""

from __future__ import annotations

import argparse
import os
import sys

from processing.generation.cache import CACHE_FILE, RequestCache, check_cache_source
from processing.generation.types import GenerationError


def merge_caches(sources: list[str], dest: str) -> int:
    """Merge every cache in ``sources`` into the cache directory ``dest``; 0, or 2 with one sentence on stderr."""
    try:
        for source in sources:  # all checked before anything is written
            check_cache_source(source)
        if os.path.isfile(dest):
            if os.path.basename(dest) != CACHE_FILE:
                raise GenerationError(f"the destination {dest} is a file, not a cache directory.")
            dest = os.path.dirname(dest) or "."
        with RequestCache(dest) as cache:
            for source in sources:
                added, total = cache.merge_from(source)
                print(f"{source}: {added} answers added ({total - added} of its {total} already in {dest})")
            print(f"{dest}: {cache.count()} answers in all")
    except GenerationError as error:
        print(f"merge-caches: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m processing.generation", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    merge = commands.add_parser(
        "merge-caches",
        help="copy the answers of request caches into another one",
        description="Copy into the request cache DEST every answer of the caches SRC that DEST lacks "
        "(INSERT OR IGNORE, one transaction per source), and say how many each source added.",
    )
    merge.add_argument("sources", nargs="+", metavar="SRC", help=f"a cache directory, or its {CACHE_FILE}")
    merge.add_argument("dest", metavar="DEST", help="the cache directory to merge into (created if missing)")
    args = parser.parse_args(argv)
    return merge_caches(args.sources, args.dest)


if __name__ == "__main__":
    sys.exit(main())

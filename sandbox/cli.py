"""``python -m sandbox verify IN.jsonl -o OUT.jsonl``: verify a JSONL file of programs.

Input rows: ``{"id", "code", "test_code"}``. Output rows, one per input line and in
input order: ``{"id", "status", "tests_run", "tests_passed", "details", "duration_s"}``,
and ``coverage`` (``VerifyResult.coverage``) with ``--coverage``. A malformed line gets a
``rejected`` row whose details name the line, never a crash.

Exit status: 0 when every row got a verdict (whatever the verdicts); 2 for a usage
error; 3 when the sandbox cannot run on this machine; 4 when some rows could only get
``sandbox_error`` (an infrastructure failure, retried once already).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterator
from typing import IO

from sandbox.bwrap import SandboxUnavailable
from sandbox.config import LANGUAGES, SandboxConfig
from sandbox.pool import Sandbox, SandboxBroken, WorkerFailure
from sandbox.verdict import REJECTED, SANDBOX_ERROR, VerifyResult, encodable

logger = logging.getLogger("sandbox")

OUTPUT_KEYS = ("id", "status", "tests_run", "tests_passed", "details", "duration_s")
EXIT_OK, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INFRA = 0, 2, 3, 4


def _flag_type(annotation: object) -> type:
    """int or float for numeric fields (optional ones included), str for the rest."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    for kind in (int, float):
        if text.split("|")[0].strip() == kind.__name__:
            return kind
    return str


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--field`` flag per dataclass field, typed from its annotation, help from its metadata."""
    for field in dataclasses.fields(cls):
        text = field.metadata.get("help", "")
        if field.default is not dataclasses.MISSING and "Default:" not in text:
            default = field.default
            text += f" (default: {','.join(default) if isinstance(default, tuple) else default})"
        if field.type in (bool, "bool"):
            parser.add_argument(f"--{field.name}", action="store_true", default=argparse.SUPPRESS, help=text)
        else:
            parser.add_argument(f"--{field.name}", type=_flag_type(field.type), default=argparse.SUPPRESS, help=text)


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    names = {f.name for f in dataclasses.fields(SandboxConfig)}
    return SandboxConfig(**{k: v for k, v in vars(args).items() if k in names})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description="Verify code against unittest tests.")
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="verify a JSONL file of {id, code, test_code} rows")
    verify.add_argument("input", help="input JSONL file ('-' for stdin)")
    verify.add_argument("-o", "--output", required=True, help="output JSONL file ('-' for stdout)")
    verify.add_argument(
        "--chunk_size", type=int, default=512, help="rows verified and written per step (output is flushed each step)"
    )
    verify.add_argument("--log_level", default="INFO", help="logging level (default: INFO)")
    verify.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    verify.add_argument(
        "--coverage",
        action="store_true",
        help="measure which lines and branch arcs of each row's code ran (a 'coverage' field in every row: "
        "{lines, arcs}, or null when not measured); verdicts are the same as without it",
    )
    add_dataclass_arguments(verify, SandboxConfig)
    setup = sub.add_parser("setup", help="install what a language's sandbox needs (JavaScript: its npm packages)")
    setup.add_argument("language", choices=["javascript"], help="the language to set up")
    setup.add_argument(
        "--folder",
        default=None,
        help="where to install the packages (default: $UNITCODER_JS_PACKAGES, else "
        "$XDG_DATA_HOME/unitcoder/javascript, else ~/.local/share/unitcoder/javascript); "
        "set UNITCODER_JS_PACKAGES to the same folder for the sandbox to find them",
    )
    setup.add_argument("--log_level", default="INFO", help="logging level (default: INFO)")
    return parser


def run_setup(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sandbox import javascript

    folder = Path(args.folder).expanduser() if args.folder else javascript.packages_dir()
    try:
        changed = javascript.setup(folder)
    except SandboxUnavailable as exc:
        logger.error("%s", exc)
        return EXIT_UNAVAILABLE
    if changed:
        logger.info("installed %d JavaScript packages into %s", len(javascript.package_list()), folder)
    return EXIT_OK


def output_row(row_id: object, result: VerifyResult, coverage: bool = False) -> dict:
    """The output row; a reason (rejected, error, ...) leads the details. With ``coverage``
    (``--coverage``), the row also carries the verdict's ``coverage``."""
    row = {"id": row_id, **{key: getattr(result, key) for key in OUTPUT_KEYS[1:]}}
    if result.reason and not row["details"].startswith(result.reason):
        row["details"] = f"{result.reason}: {row['details']}" if row["details"] else result.reason
    if coverage:
        row["coverage"] = result.coverage
    return row


def count_rows(path: str) -> int | None:
    if path == "-":
        return None
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def parse_line(number: int, line: str) -> tuple[object, str, str] | tuple[object, None, str]:
    """(id, code, test_code), or (id, None, problem) for a malformed line."""
    row_id, code, extra, _ = parse_row(number, line)
    return row_id, code, extra


def parse_row(number: int, line: str, default_language: str = "python") -> tuple[object, str | None, str, str]:
    """(id, code, test_code, language), or (id, None, problem, language) for a malformed line.
    A row's own ``language`` field wins over ``default_language`` (``--language``)."""
    try:
        row = json.loads(line)
    except ValueError as exc:
        return None, None, f"line {number}: not valid JSON ({exc})", default_language
    if not isinstance(row, dict):
        return None, None, f"line {number}: expected a JSON object, got {type(row).__name__}", default_language
    row_id = row.get("id")
    for key in ("code", "test_code"):
        if not isinstance(row.get(key), str):
            return row_id, None, f"line {number}: '{key}' must be a string", default_language
    language = row.get("language", default_language)
    if language is None:
        language = default_language
    if language not in LANGUAGES:
        return row_id, None, f"line {number}: 'language' must be one of {', '.join(LANGUAGES)}", default_language
    return row_id, row["code"], row["test_code"], language


def read_chunks(stream: IO[str], size: int) -> Iterator[list[tuple[int, str]]]:
    chunk: list[tuple[int, str]] = []
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        chunk.append((number, line))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run_verify(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ValueError as exc:
        logger.error("bad setting: %s", exc)
        return EXIT_USAGE
    if args.chunk_size < 1:
        logger.error("bad setting: chunk_size must be at least 1, got %s", args.chunk_size)
        return EXIT_USAGE
    try:
        source = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")
    except OSError as exc:
        logger.error("cannot read %s: %s", args.input, exc.strerror)
        return EXIT_USAGE
    logger.info("config: %s", json.dumps(dataclasses.asdict(config)))
    counts: Counter[str] = Counter()
    try:
        sink = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    except OSError as exc:
        logger.error("cannot write %s: %s", args.output, exc.strerror)
        return EXIT_USAGE
    sandboxes: dict[str, Sandbox] = {}

    def sandbox_for(language: str) -> Sandbox:
        # One pool per language, started when the first row of that language comes.
        if language not in sandboxes:
            confirm = config.confirm and language == "python"  # (the second opinion is Python's)
            sandboxes[language] = Sandbox(dataclasses.replace(config, language=language, confirm=confirm)).start()
        return sandboxes[language]

    try:
        with contextlib.ExitStack() as stack:
            stack.callback(lambda: [pool.close() for pool in sandboxes.values()])
            sandbox_for(config.language)  # the configured language's pool starts (or fails) before any row
            bar = None
            if not args.no_progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=count_rows(args.input), desc="verifying", unit="prog")
            for chunk in read_chunks(source, args.chunk_size):
                parsed = [parse_row(number, line, config.language) for number, line in chunk]
                by_language: dict[str, Iterator[VerifyResult]] = {}
                for language in dict.fromkeys(lang for _, code, _, lang in parsed if code is not None):
                    todo = [(code, tests) for _, code, tests, lang in parsed if code is not None and lang == language]
                    by_language[language] = iter(sandbox_for(language).verify(todo, coverage=args.coverage))
                for row_id, code, extra, language in parsed:
                    if code is None:
                        logger.warning("malformed input, %s", extra)
                        result = VerifyResult(REJECTED, details=extra, reason="malformed_input")
                    else:
                        result = next(by_language[language])
                    counts[result.status] += 1
                    row = output_row(row_id, result, coverage=args.coverage)
                    sink.write(encodable(json.dumps(row, ensure_ascii=False)) + "\n")
                sink.flush()
                if bar is not None:
                    bar.update(len(chunk))
            if bar is not None:
                bar.close()
    except SandboxUnavailable as exc:
        logger.error("%s", exc)
        return EXIT_UNAVAILABLE
    except SandboxBroken as exc:
        logger.error("stopped: %s; rows written so far are complete", exc)
        return EXIT_INFRA
    except WorkerFailure as exc:
        logger.error("the sandbox could not start: %s", exc)
        return EXIT_UNAVAILABLE
    finally:
        if source is not sys.stdin:
            source.close()
        if sink is not sys.stdout:
            sink.close()
    total = sum(counts.values())
    logger.info("%d rows: %s", total, ", ".join(f"{k} {v}" for k, v in counts.most_common()) or "none")
    if counts[SANDBOX_ERROR]:
        logger.error("%d rows hit infrastructure failures (sandbox_error); see their details", counts[SANDBOX_ERROR])
        return EXIT_INFRA
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "setup":
        return run_setup(args)
    return run_verify(args)

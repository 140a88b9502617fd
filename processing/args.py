"""Dataclass arguments for the stage scripts, with ``--config recipe.yaml`` (a thin HfArgumentParser).

Each field becomes ``--field_name``; its ``metadata={"help": ...}`` is the help text;
a YAML recipe gives defaults and flags on the command line win. Validation lives in
each dataclass's ``__post_init__`` (raising ``ValueError``), reported as a usage error.

Renamed flags: ``metadata={"aliases": ["old_name"]}`` keeps ``--old_name`` (and an
``old_name:`` key in a recipe) working for the field, with a ``FutureWarning`` naming
the new flag. Giving both names in one place (both flags, or both keys) is a usage
error; a flag on the command line still wins over a recipe key, whichever name either
uses. Aliases are left out of ``--help``; the field's help mentions them.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import gc
import json
import logging
import sys
import types
import typing
import warnings
from pathlib import Path

import yaml

logger = logging.getLogger(__name__)

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _to_bool(text: str) -> bool:
    lowered = str(text).lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _field_kind(cls: type, field: dataclasses.Field) -> tuple[type, bool]:
    """(element type, is_list) from the resolved annotation, Optional unwrapped."""
    hint = typing.get_type_hints(cls)[field.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and args:
        hint = args[0]
    if typing.get_origin(hint) in (list, tuple):
        return typing.get_args(hint)[0], True
    return hint, False


ALIAS_DEST = "alias:"  # argparse dest of a deprecated alias flag: ALIAS_DEST + old name


def aliases(classes: tuple[type, ...]) -> dict[str, str]:
    """{old name: field name} from the fields' ``metadata={"aliases": [...]}``."""
    names = {f.name for cls in classes for f in dataclasses.fields(cls)}
    mapping: dict[str, str] = {}
    for cls in classes:
        for field in dataclasses.fields(cls):
            for alias in field.metadata.get("aliases", ()):
                if alias in names or alias in mapping:
                    raise TypeError(f"alias {alias!r} of {field.name} is already a flag or another field's alias")
                mapping[alias] = field.name
    return mapping


def build_parser(classes: tuple[type, ...], description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", default=None, help="YAML recipe of flag values; flags given here win")
    aliases(classes)  # refuses an alias that is a flag or another field's alias
    seen: set[str] = set()
    for cls in classes:
        group = parser.add_argument_group(cls.__name__)
        for field in dataclasses.fields(cls):
            if field.name in seen:
                raise TypeError(f"two argument dataclasses define {field.name}")
            seen.add(field.name)
            kind, is_list = _field_kind(cls, field)
            default = field.default if field.default is not dataclasses.MISSING else None
            old = field.metadata.get("aliases", ())
            formerly = f" (formerly {', '.join('--' + a for a in old)})" if old else ""
            options: dict = {
                "default": argparse.SUPPRESS,
                "help": f"{field.metadata.get('help', '')}{formerly} (default: {default})",
            }
            if kind is bool:
                options.update(type=_to_bool, nargs="?", const=True)
            elif is_list:
                options.update(type=kind, nargs="+")
            else:
                options.update(type=kind)
            group.add_argument(f"--{field.name}", **options)
            for alias in old:
                group.add_argument(f"--{alias}", **{**options, "dest": ALIAS_DEST + alias, "help": argparse.SUPPRESS})
    return parser


def _resolve_aliases(values: dict, mapping: dict[str, str], where: str, flag: str) -> dict:
    """``values`` with old names replaced by the fields' names, warning once per old name used.

    ``flag`` prefixes names in messages (``--`` for the command line, ``""`` for a recipe).
    """
    out = {k: v for k, v in values.items() if k not in mapping}
    for old, value in values.items():
        if old not in mapping:
            continue
        new = mapping[old]
        if new in values:
            raise ValueError(
                f"{where} gives both {flag}{old} and {flag}{new}; {flag}{old} is the old name of {flag}{new}"
            )
        warnings.warn(
            f"{flag}{old} in {where} is deprecated and will be removed; use {flag}{new}", FutureWarning, stacklevel=3
        )
        out[new] = value
    return out


def parse_args(classes: tuple[type, ...], description: str, argv: list[str] | None = None) -> tuple:
    """Instances of ``classes`` from the recipe (if any) and the command line."""
    parser = build_parser(classes, description)
    mapping = aliases(classes)
    parsed = vars(parser.parse_args(sys.argv[1:] if argv is None else argv))
    given = {(k[len(ALIAS_DEST) :] if k.startswith(ALIAS_DEST) else k): v for k, v in parsed.items()}
    values: dict = {}
    recipe = given.pop("config", None)
    known = {f.name for cls in classes for f in dataclasses.fields(cls)}
    try:
        given = _resolve_aliases(given, mapping, "the command line", "--")
    except ValueError as exc:
        parser.error(str(exc))
    if recipe:
        path = Path(recipe)
        if not path.is_file():
            parser.error(f"config file {recipe} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            parser.error(f"config file {recipe} must be a mapping of flag names to values")
        unknown = sorted(set(loaded) - known - set(mapping))
        if unknown:
            parser.error(f"config file {recipe} has unknown keys: {', '.join(unknown)}")
        try:
            values.update(_resolve_aliases(loaded, mapping, f"config file {recipe}", ""))
        except ValueError as exc:
            parser.error(str(exc))
    values.update(given)
    instances = []
    for cls in classes:
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            instances.append(cls(**{k: v for k, v in values.items() if k in names}))
        except (ValueError, TypeError) as exc:
            parser.error(str(exc))
    return tuple(instances)


REDACTED = "<redacted>"


def as_dict(*instances) -> dict:
    """All fields of the given argument dataclasses, for logging the resolved config.

    Fields marked ``metadata={"secret": True}`` (API keys, tokens) are redacted.
    """
    merged: dict = {}
    for instance in instances:
        for field in dataclasses.fields(instance):
            value = getattr(instance, field.name)
            merged[field.name] = REDACTED if field.metadata.get("secret") and value else value
    return merged


def redacted_command_line(argv: list[str], classes: tuple[type, ...]) -> str:
    """The command line with the values of secret flags replaced (for logs and cards)."""
    secret_fields = [f for cls in classes for f in dataclasses.fields(cls) if f.metadata.get("secret")]
    secrets = {f"--{name}" for f in secret_fields for name in (f.name, *f.metadata.get("aliases", ()))}
    out, hide_next = [], False
    for token in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
        elif token in secrets:
            out.append(token)
            hide_next = True
        elif token.split("=", 1)[0] in secrets:
            out.append(token.split("=", 1)[0] + "=" + REDACTED)
        else:
            out.append(token)
    return " ".join(out)


def start_script(script: str, classes: tuple[type, ...], doc: str, argv: list[str] | None) -> tuple:
    """What every script's main() begins with: parse its flags, configure logging (at the
    ``log_level`` one of the classes defines), log the command line (secrets redacted) and
    the resolved config. Returns (instances, command)."""
    instances = parse_args(classes, doc.split("\n\n")[0], argv)
    _quick_exit()
    level = next(i.log_level for i in instances if hasattr(i, "log_level")).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = f"python {script} " + redacted_command_line(sys.argv[1:] if argv is None else argv, classes)
    logger.info("command: %s", command)
    logger.info("config: %s", json.dumps(as_dict(*instances), default=str))
    return instances, command


def _quick_exit() -> None:
    """Let the interpreter exit without its final garbage collections: at exit everything
    still alive is frozen (``gc.freeze``), which spares the collector passes over the heap
    of datasets, pyarrow and pandas (about 0.15 s per run). Exit handlers still run and
    objects are still released one by one; only cyclic garbage is left to the OS."""
    global _QUICK_EXIT
    if not _QUICK_EXIT:
        atexit.register(gc.freeze)
        _QUICK_EXIT = True


_QUICK_EXIT = False


@dataclasses.dataclass
class SandboxArgs:
    """The sandbox settings every script that runs code shares (stage 2, evaluation)."""

    sandbox_workers: int | None = dataclasses.field(
        default=None, metadata={"help": "sandbox workers (default: all cores)"}
    )
    sandbox_timeout: float = dataclasses.field(
        default=10.0, metadata={"help": "wall-clock seconds per program in the sandbox"}
    )
    sandbox_memory_mb: int = dataclasses.field(default=4096, metadata={"help": "memory cap per program process, MiB"})

    def __post_init__(self) -> None:
        if self.sandbox_workers is not None and self.sandbox_workers < 1:
            raise ValueError("--sandbox_workers must be at least 1")
        if self.sandbox_timeout <= 0 or self.sandbox_memory_mb < 64:
            raise ValueError("need --sandbox_timeout > 0 and --sandbox_memory_mb >= 64")

    def config(self, language: str = "python"):
        """The ``SandboxConfig`` these flags describe for programs in ``language`` (imported
        late: parsing flags starts nothing)."""
        from sandbox import SandboxConfig

        workers = {"workers": self.sandbox_workers} if self.sandbox_workers else {}  # default: all cores
        return SandboxConfig(
            timeout=self.sandbox_timeout, memory_mb=self.sandbox_memory_mb, language=language, **workers
        )


@dataclasses.dataclass
class EngineArgs:
    """Where a stage runs: this process (``local``) or a Ray cluster (``ray``)."""

    engine: str = dataclasses.field(
        default="local",
        metadata={"help": "local: one process, chunks written as they finish; ray: a Ray Data pipeline on a cluster"},
    )
    ray_address: str | None = dataclasses.field(
        default=None,
        metadata={"help": "the Ray cluster to join (default: RAY_ADDRESS, else a local Ray started for the run)"},
    )
    ray_workers: int | None = dataclasses.field(
        default=None,
        metadata={"help": "sandbox actors on the cluster (default: as many as its CPUs hold at --ray_worker_cpus)"},
    )
    ray_worker_cpus: int = dataclasses.field(
        default=4, metadata={"help": "CPUs per sandbox actor: programs it runs at once (its sandbox workers)"}
    )
    num_replicas: int = dataclasses.field(
        default=1, metadata={"help": "--engine ray with --backend vllm: model replicas of --tensor_parallel_size GPUs"}
    )

    def __post_init__(self) -> None:
        if self.engine not in ("local", "ray"):
            raise ValueError(f"--engine must be local or ray, got {self.engine!r}")
        if self.ray_workers is not None and self.ray_workers < 1:
            raise ValueError("--ray_workers must be at least 1")
        if self.ray_worker_cpus < 1 or self.num_replicas < 1:
            raise ValueError("--ray_worker_cpus and --num_replicas must be at least 1")
        if self.engine == "local" and (self.ray_address or self.ray_workers or self.num_replicas > 1):
            raise ValueError("--ray_address, --ray_workers and --num_replicas need --engine ray")

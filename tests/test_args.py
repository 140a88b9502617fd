"""The argument convention (processing/args.py): renamed flags keep working, with a warning."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import pytest

from processing.args import SandboxArgs, build_parser, parse_args, redacted_command_line


@dataclass
class Source:
    input_dataset: str | None = field(default=None, metadata={"help": "the input", "aliases": ["dataset"]})
    input_revision: str | None = field(default=None, metadata={"help": "its revision", "aliases": ["revision"]})
    limit: int = field(default=10, metadata={"help": "rows"})


@dataclass
class Secret:
    api_key: str | None = field(default=None, metadata={"help": "key", "secret": True, "aliases": ["token"]})


CLASSES = (Source,)


def parse(argv: list[str], classes: tuple[type, ...] = CLASSES):
    return parse_args(classes, "test", argv)


def recipe(tmp_path, text: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


def test_an_alias_on_the_command_line_sets_the_field():
    with pytest.warns(FutureWarning):
        (source,) = parse(["--dataset", "org/data"])
    assert source.input_dataset == "org/data"


def test_an_alias_on_the_command_line_warns_with_the_new_name():
    with pytest.warns(FutureWarning, match="use --input_dataset"):
        parse(["--dataset", "org/data"])


def test_an_alias_in_a_recipe_sets_the_field(tmp_path):
    with pytest.warns(FutureWarning):
        (source,) = parse(["--config", recipe(tmp_path, "revision: v2\n")])
    assert source.input_revision == "v2"


def test_an_alias_in_a_recipe_warns_with_the_new_name(tmp_path):
    with pytest.warns(FutureWarning, match="use input_revision"):
        parse(["--config", recipe(tmp_path, "revision: v2\n")])


def test_the_new_name_warns_nothing(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        parse(["--input_dataset", "org/data"])
        parse(["--config", recipe(tmp_path, "input_dataset: org/data\n")])


def test_the_old_and_the_new_name_give_the_same_arguments(tmp_path):
    (by_flag,) = parse(["--input_dataset", "org/data", "--input_revision", "v1"])
    with pytest.warns(FutureWarning):
        (by_alias,) = parse(["--dataset", "org/data", "--config", recipe(tmp_path, "revision: v1\n")])
    assert by_alias == by_flag


def test_a_flag_wins_over_a_recipe_whichever_names_they_use(tmp_path):
    with pytest.warns(FutureWarning):
        (source,) = parse(["--config", recipe(tmp_path, "input_dataset: from/recipe\n"), "--dataset", "from/flag"])
    assert source.input_dataset == "from/flag"


def test_both_names_on_the_command_line_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(["--dataset", "a/b", "--input_dataset", "c/d"])
    assert exit_info.value.code == 2 and "both --dataset and --input_dataset" in capsys.readouterr().err


def test_unknown_recipe_keys_are_still_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(["--config", recipe(tmp_path, "datasett: a/b\n")])
    assert exit_info.value.code == 2 and "unknown keys: datasett" in capsys.readouterr().err


def test_unknown_flags_are_still_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(["--datasett", "a/b"])
    assert exit_info.value.code == 2 and "--datasett" in capsys.readouterr().err


def test_help_names_the_old_flag_but_does_not_list_it_as_an_option():
    text = build_parser(CLASSES, "test").format_help()
    assert "(formerly --dataset)" in text and "\n  --dataset " not in text


def test_an_alias_that_clashes_with_a_flag_is_a_programming_error():
    @dataclass
    class Clash:
        limit_rows: int = field(default=1, metadata={"aliases": ["limit"]})

    with pytest.raises(TypeError, match="alias 'limit'"):
        build_parser((Source, Clash), "test")


def test_a_secret_given_under_its_old_name_is_redacted():
    assert redacted_command_line(["--token", "hf_abc"], (Secret,)) == "--token <redacted>"


def test_stage1_takes_the_input_flags_stage2_uses_and_the_old_ones():
    from processing import stage1

    classes = (stage1.InputArgs,)
    (new,) = parse(["--input_dataset", "bigcode/the-stack-smol", "--input_revision", "v1"], classes)
    with pytest.warns(FutureWarning):
        (old,) = parse(["--dataset", "bigcode/the-stack-smol", "--revision", "v1"], classes)
    assert old == new and new.input_revision == "v1"


def test_evaluate_uses_the_shared_sandbox_flags_with_its_own_time_limit():
    from train.evaluate import EvalSandboxArgs

    (box,) = parse(["--sandbox_workers", "2"], (EvalSandboxArgs,))
    assert isinstance(box, SandboxArgs) and (box.config().timeout, box.config().workers) == (30.0, 2)


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"engine": "spark"}, "--engine must be local or ray"),
        ({"ray_workers": 2}, "need --engine ray"),
        ({"ray_address": "10.0.0.1:6379"}, "need --engine ray"),
        ({"engine": "ray", "ray_worker_cpus": 0}, "must be at least 1"),
        ({"engine": "ray", "num_replicas": 0}, "must be at least 1"),
    ],
)
def test_engine_flags_are_checked_at_start_up(flags, message):
    from processing.args import EngineArgs

    with pytest.raises(ValueError, match=message):
        EngineArgs(**flags)

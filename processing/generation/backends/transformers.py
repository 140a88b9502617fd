"""A local checkpoint or Hub model through ``transformers`` generation.

Prompts go in batches of ``--batch_size`` (left-padded, chat template applied unless the
request is a raw completion); sampling is seeded per batch, so answers are deterministic
for a fixed batching. ``model`` may name a GGUF file inside a folder as
``folder:file.gguf`` (dequantised by ``transformers``). ``torch`` and ``transformers``
are imported when the backend is built, never at import time.
"""

from __future__ import annotations

from collections.abc import Sequence

from processing.generation.types import Backend, Checkpoint, Completion, Done, GenerationError, Request, no_checkpoint


class TransformersBackend(Backend):
    """``transformers`` generation in batches (sampling seeded per batch: deterministic for a fixed batching)."""

    name = "transformers"

    def __init__(self, model: str, batch_size: int):
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise GenerationError(
                "the transformers backend needs torch and transformers: pip install 'unitcoder[train]'"
            ) from exc
        self.torch = torch
        self.model_id = model
        path, gguf = model.rsplit(":", 1) if model.endswith(".gguf") and ":" in model else (model, None)
        kwargs = {"gguf_file": gguf} if gguf else {}
        self.tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        self.model.eval()
        self.batch_size = batch_size
        probe = self.tokenizer("x")["input_ids"]
        bos = self.tokenizer.bos_token_id
        self._bos = self.tokenizer.bos_token if bos is not None and probe and probe[0] == bos else ""

    def _prompt_text(self, request: Request) -> str:
        if not request.is_raw:
            return self.tokenizer.apply_chat_template(
                request.message_list(), add_generation_prompt=True, tokenize=False
            )
        return self._bos + request.text  # what tokenizing the raw text on its own would start with

    def complete(self, requests: Sequence[Request], done: Done, checkpoint: Checkpoint = no_checkpoint) -> None:
        torch = self.torch
        for start in range(0, len(requests), self.batch_size):
            batch = list(requests[start : start + self.batch_size])
            prompts = [self._prompt_text(r) for r in batch]
            encoded = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            first = batch[0]
            torch.manual_seed(first.seed)
            sample = first.temperature > 0
            stop = sorted({s for r in batch for s in r.stop})
            with torch.no_grad():
                output = self.model.generate(
                    **encoded,
                    do_sample=sample,
                    temperature=first.temperature if sample else None,
                    top_p=first.top_p if sample else None,
                    max_new_tokens=max(r.max_tokens for r in batch),
                    pad_token_id=self.tokenizer.pad_token_id,
                    **({"stop_strings": stop, "tokenizer": self.tokenizer} if stop else {}),
                )
            width = encoded["input_ids"].shape[1]
            for offset, row in enumerate(output):
                new = row[width:]
                text = self.tokenizer.decode(new, skip_special_tokens=True)
                prompt_tokens = int(encoded["attention_mask"][offset].sum())
                done(
                    start + offset,
                    Completion(text, prompt_tokens, int((new != self.tokenizer.pad_token_id).sum()), "stop"),
                )

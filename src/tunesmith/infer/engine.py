"""One inference engine: batched generation and token streaming through the chat template.

Chat, predict, evaluation and the server all go through ``Engine``.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from pydantic import Field

from ..config import Section
from ..models.template import end_of_turn_ids, template_kwargs


class GenParams(Section):
    max_new_tokens: int = Field(256, gt=0, description="most tokens to generate per answer")
    temperature: float = Field(0.0, ge=0, description="sampling temperature; 0 = greedy")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    top_k: int = Field(0, ge=0, description="sample from the k most likely tokens; 0 = off")
    repetition_penalty: float = Field(1.0, gt=0, description="penalty for repeating tokens; 1 = off")
    seed: int | None = Field(None, description="random seed for sampling")
    enable_thinking: bool | None = Field(None, description="thinking switch for templates that have one (Qwen3)")


class Engine:
    """Wraps a loaded model and tokenizer. ``generate`` answers a batch; ``stream`` yields text pieces."""

    def __init__(self, model, tokenizer):
        self.model = model
        self.tok = tokenizer
        self.stop_ids = end_of_turn_ids(tokenizer)

    @classmethod
    def load(cls, model: str, adapter: str | list[str] | None = None, dtype: str | None = None,
             device: str | None = None, trust_remote_code: bool = False) -> "Engine":
        from ..models import load_model

        m, tok, _ = load_model(model, adapter, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        return cls(m, tok)

    def prompt_ids(self, messages: list[dict[str, Any]], enable_thinking: bool | None = None) -> list[int]:
        out = self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                           **template_kwargs(self.tok, enable_thinking))
        return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)

    def _gen_kwargs(self, p: GenParams) -> dict:
        import torch

        if p.seed is not None:
            torch.manual_seed(p.seed)
        kw = dict(max_new_tokens=p.max_new_tokens, eos_token_id=self.stop_ids, pad_token_id=self.tok.pad_token_id,
                  repetition_penalty=p.repetition_penalty)
        if p.temperature > 0:
            kw.update(do_sample=True, temperature=p.temperature, top_p=p.top_p, top_k=p.top_k or None)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kw

    def generate(self, batch: list[list[dict[str, Any]]], params: GenParams | None = None) -> list[str]:
        """Answer each conversation in ``batch`` (left-padded into one forward pass)."""
        import torch

        p = params or GenParams()
        prompts = [self.prompt_ids(m, p.enable_thinking) for m in batch]
        width = max(len(x) for x in prompts)
        pad = self.tok.pad_token_id
        ids = torch.tensor([[pad] * (width - len(x)) + x for x in prompts])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in prompts])
        dev = next(self.model.parameters()).device
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), **self._gen_kwargs(p))
        return [self.tok.decode(row[width:], skip_special_tokens=True).strip() for row in out.tolist()]

    def stream(self, messages: list[dict[str, Any]], params: GenParams | None = None) -> Iterator[str]:
        """Yield pieces of the answer as they are generated."""
        import torch
        from transformers import TextIteratorStreamer

        p = params or GenParams()
        ids = torch.tensor([self.prompt_ids(messages, p.enable_thinking)])
        dev = next(self.model.parameters()).device
        streamer = TextIteratorStreamer(self.tok, skip_prompt=True, skip_special_tokens=True)
        kw = dict(input_ids=ids.to(dev), attention_mask=torch.ones_like(ids).to(dev), streamer=streamer,
                  **self._gen_kwargs(p))
        errors: list[BaseException] = []

        def work():
            try:
                with torch.inference_mode():
                    self.model.generate(**kw)
            except BaseException as e:  # surface the worker's error in the caller
                errors.append(e)
                streamer.end()

        t = threading.Thread(target=work, daemon=True)
        t.start()
        yield from streamer
        t.join()
        if errors:
            raise errors[0]

"""A GGUF file answered by llama.cpp itself (llama-cpp-python), for checking an exported file.

The prompt is rendered by the chat template stored in the file (``tokenizer.chat_template``)
through llama-cpp-python's own Jinja chat formatter, which passes template kwargs through (so
``enable_thinking`` reaches the template), tokenized by llama.cpp's vocabulary and decoded greedily
by llama.cpp until an end-of-generation token. Nothing of tunesmith's tokenizer or engine is used:
what comes out is what a llama.cpp user of the file gets. ``eval tasks --gguf`` scores with it.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import UserError
from .sampling import GenParams

INSTALL_HINT = "pip install 'tunesmith[gguf]'"


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        raise UserError(f"scoring a GGUF file needs llama-cpp-python: {INSTALL_HINT}") from None
    return llama_cpp


@contextmanager
def no_extra_buffer_types():
    """Weights loaded without llama.cpp's extra CPU buffer types: on the AMX VM this project measures
    on, that build's AMX repack path segfaults on multi-token batches of quantized weights
    (tests/export/test_gguf.py, bench/serve_load.py); ``Llama`` exposes no switch for it, so its
    default-params factory is wrapped for the load."""
    import llama_cpp.llama_cpp as lib

    default = lib.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    lib.llama_model_default_params = params
    try:
        yield
    finally:
        lib.llama_model_default_params = default


class _Template:
    """What ``models.template.supports_thinking`` reads: the chat template's text."""

    def __init__(self, chat_template: str | None):
        self.chat_template = chat_template


class GgufEngine:
    """``generate(conversations, GenParams)`` → answers, like ``Engine.generate``, greedy only."""

    def __init__(self, llm, path: Path):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.llm, self.path = llm, path
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise UserError(f"{path}: the GGUF has no tokenizer.chat_template to render chat prompts with")
        self.tok = _Template(template)
        text = lambda i: llm.detokenize([i], special=True).decode("utf-8", "replace") if i >= 0 else ""  # noqa: E731
        self.formatter = Jinja2ChatFormatter(template, eos_token=text(llm.token_eos()), bos_token=text(llm.token_bos()))

    @classmethod
    def load(cls, path: str | Path, n_ctx: int = 4096, threads: int | None = None) -> "GgufEngine":
        p = Path(path).expanduser()
        if not p.is_file():
            raise UserError(f"gguf: {path} not found")
        lc = _llama_cpp()
        with no_extra_buffer_types():
            try:
                llm = lc.Llama(model_path=str(p), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                               verbose=False)
            except (ValueError, RuntimeError) as e:
                raise UserError(f"gguf: llama.cpp cannot load {path} ({e})") from None
        return cls(llm, p)

    def prompt(self, messages: list[dict[str, Any]], enable_thinking: bool | None = None) -> str:
        kw = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
        return self.formatter(messages=messages, **kw).prompt

    def prompt_ids(self, messages: list[dict[str, Any]], enable_thinking: bool | None = None) -> list[int]:
        # the template writes BOS itself where the model wants one, as apply_chat_template does
        return self.llm.tokenize(self.prompt(messages, enable_thinking).encode(), add_bos=False, special=True)

    def generate(self, batch: list[list[dict[str, Any]]], params: GenParams | None = None) -> list[str]:
        p = params or GenParams()
        if not p.greedy:
            raise UserError("gguf: answers are decoded greedily (temperature 0)")
        out = []
        for messages in batch:
            ids = self.prompt_ids(messages, p.enable_thinking)
            room = self.llm.n_ctx() - len(ids)
            if room <= 0:
                raise UserError(f"gguf: a prompt of {len(ids)} tokens does not fit the context of {self.llm.n_ctx()}")
            r = self.llm.create_completion(prompt=ids, max_tokens=min(p.max_new_tokens, room), temperature=0.0,
                                           repeat_penalty=1.0, top_k=0, top_p=1.0, min_p=0.0,
                                           stop=list(p.stop) or None)
            out.append(r["choices"][0]["text"].strip())
        return out

    def close(self) -> None:
        self.llm.close()


def gguf_files(spec: str) -> list[Path]:
    """A GGUF file, or every ``*.gguf`` of a folder (an ``export gguf`` folder), f16 first."""
    p = Path(spec).expanduser()
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(p.glob("*.gguf"), key=lambda f: (not f.stem.endswith(("f16", "bf16")), f.name))
        if files:
            return files
        raise UserError(f"gguf: {spec} holds no .gguf file")
    raise UserError(f"gguf: {spec} not found")

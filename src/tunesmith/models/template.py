"""Facts about a tokenizer's chat template, found by rendering it (never hand-written), and the
template a run picks (``data.template``).

``data.template`` names either a *fallback* (``chatml``, ``alpaca``: used only by a base model that
ships no template) or a template that *replaces* the model's own, as LLaMA-Factory's ``template:``
and ms-swift's ``--template`` do: a shipped one (``models/templates/NAME.jinja``) or the path of a
user's ``.jinja`` file. The tokenizer then carries it, so the run folder saves it, ``export merge``
keeps it and ``export gguf`` writes it into the GGUF's ``tokenizer.chat_template``.

Shipped: ``qwen3`` — Qwen3's conversation format with its thinking switch, in a template written for
tunesmith (``models/templates/qwen3.jinja``; it renders every conversation without tools as Qwen3's own
template does, checked against TRL's copy in tests/models; tools are not rendered): ChatML turns. With
``enable_thinking`` false the generation prompt ends with an empty ``<think>\n\n</think>\n\n``;
true or unset, the model writes its own ``<think>…</think>`` before the answer.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from ..errors import UserError

# Only for base models that ship no template, and only when the user names one.
FALLBACK_TEMPLATES = {
    "chatml": (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    "alpaca": (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] + '\n\n' }}"
        "{% elif m['role'] == 'user' %}{{ '### Instruction:\n' + m['content'] + '\n\n' }}"
        "{% elif m['role'] == 'assistant' %}{{ '### Response:\n' + m['content'] + eos_token + '\n\n' }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"
    ),
}


SHIPPED = ("qwen3",)  # models/templates/<name>.jinja; each replaces the model's own template


def is_template_file(name: str) -> bool:
    """A ``data.template`` value that names a file rather than a shipped template."""
    return name.endswith(".jinja") or "/" in name or os.sep in name


def check_template_name(name: str) -> str:
    """``name`` when it is a fallback, a shipped template or an existing .jinja file; else ValueError
    (one line: the config check names the key)."""
    if name in FALLBACK_TEMPLATES or name in SHIPPED:
        return name
    if is_template_file(name):
        if not Path(name).expanduser().is_file():
            raise ValueError(f"{name} not found (resolved from the current folder {os.getcwd()})")
        return name
    raise ValueError(f"unknown template '{name}': choose a fallback for models without one "
                     f"({', '.join(FALLBACK_TEMPLATES)}), a template that replaces the model's own "
                     f"({', '.join(SHIPPED)}), or the path of a .jinja file")


def template_text(name: str) -> str:
    """The Jinja source of a shipped template or a .jinja file. Raises UserError."""
    if name in SHIPPED:
        return resources.files("tunesmith.models").joinpath("templates", f"{name}.jinja").read_text(encoding="utf-8")
    path = Path(name).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"template {name}: cannot read it ({type(e).__name__}: {e})") from None
    if not text.strip():
        raise UserError(f"template {name}: the file is empty")
    return text


def ensure_chat_template(tokenizer, fallback: str | None = None, where: str = "model") -> None:
    """Use the tokenizer's own template; a base model without one needs a named fallback. A shipped
    template or a .jinja file replaces the tokenizer's own (checked to render a chat and to end a turn
    on one of this tokenizer's special tokens)."""
    if fallback and fallback not in FALLBACK_TEMPLATES:
        if not (fallback in SHIPPED or is_template_file(fallback)):
            check_template_name(fallback)  # the one message for an unknown name
        text = template_text(fallback)
        if tokenizer.chat_template != text:
            old = tokenizer.chat_template
            tokenizer.chat_template = text
            try:
                _check_fits(tokenizer, fallback, where)
            except UserError:
                tokenizer.chat_template = old
                raise
        return
    if fallback:
        if not tokenizer.chat_template:
            tokenizer.chat_template = FALLBACK_TEMPLATES[fallback]
        return
    if not tokenizer.chat_template:
        raise UserError(f"{where} has no chat template: set template: chatml (or alpaca) to pick one explicitly")


def _check_fits(tokenizer, name: str, where: str) -> None:
    """The template renders a chat (in both modes when it has a switch) and ends an assistant turn on
    a special token of this tokenizer (a ChatML template on a Llama 3 tokenizer would not)."""
    marker = "Zq7xWv"
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": marker}]
    modes = [{"enable_thinking": True}, {"enable_thinking": False}] if supports_thinking(tokenizer) else [{}]
    try:
        for kw in modes:
            text = tokenizer.apply_chat_template(msgs, tokenize=False, **kw)
            tokenizer.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True, **kw)
    except Exception as e:  # noqa: BLE001 — whatever Jinja raises is about the user's template
        first = (str(e).splitlines() or [""])[0]
        raise UserError(f"template {name}: does not render a chat ({type(e).__name__}: {first})") from None
    tail = text.split(marker, 1)[1] if marker in text else ""
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    if not any(t in special for t in tokenizer(tail, add_special_tokens=False)["input_ids"]):
        raise UserError(f"template {name}: an assistant turn ends with {tail.strip()[:40]!r}, which holds no special "
                        f"token of {where}: pick a template written in this model's own tokens")


def supports_thinking(tokenizer) -> bool:
    """True when the template has a thinking switch (Qwen3's ``enable_thinking``)."""
    return "enable_thinking" in (tokenizer.chat_template or "")


def template_kwargs(tokenizer, enable_thinking: bool | None) -> dict:
    if enable_thinking is None or not supports_thinking(tokenizer):
        return {}
    return {"enable_thinking": enable_thinking}


def end_of_turn_ids(tokenizer) -> list[int]:
    """Token ids that end an assistant turn: the first special token the template puts after
    the assistant's content (``<|im_end|>``, ``<|eot_id|>``…), plus the tokenizer's eos."""
    marker = "Zq7xWv"
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}]
    text = tokenizer.apply_chat_template(msgs, tokenize=False)
    ids: list[int] = []
    if isinstance(text, str) and marker in text:
        tail = text.split(marker, 1)[1]
        special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
        for tid in tokenizer(tail, add_special_tokens=False)["input_ids"]:
            if tid in special:
                ids.append(tid)
                break
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids

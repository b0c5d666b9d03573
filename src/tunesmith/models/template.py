"""Facts about a tokenizer's chat template, found by rendering it (never hand-written)."""
from __future__ import annotations

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


def ensure_chat_template(tokenizer, fallback: str | None = None, where: str = "model") -> None:
    """Use the tokenizer's own template; a base model without one needs a named fallback."""
    if fallback:
        if fallback not in FALLBACK_TEMPLATES:
            raise UserError(f"unknown template '{fallback}' (choose from {', '.join(FALLBACK_TEMPLATES)})")
        if not tokenizer.chat_template:
            tokenizer.chat_template = FALLBACK_TEMPLATES[fallback]
        return
    if not tokenizer.chat_template:
        raise UserError(f"{where} has no chat template: set template: chatml (or alpaca) to pick one explicitly")


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

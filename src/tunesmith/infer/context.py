"""The one context-length check: does a prompt, plus the answer asked for, fit the model?

``tunesmith predict`` (a file:row error before any generation) and ``tunesmith serve`` (a 400)
both call ``room_for_answer``, so they refuse the same prompts with the same numbers.
"""
from __future__ import annotations


class ContextExceeded(ValueError):
    """A prompt that does not fit; ``prompt_alone`` tells whether no answer length could fit it."""

    def __init__(self, message: str, prompt_alone: bool):
        super().__init__(message)
        self.prompt_alone = prompt_alone


def model_context(model, cap: int | None = None) -> int | None:
    """Most tokens (prompt + answer) ``model`` takes: its config's ``max_position_embeddings``
    (the text part's, for a multimodal config), lowered to ``cap`` when given; None when unknown."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    n = int(getattr(cfg, "max_position_embeddings", 0) or 0) or None
    return min(n, cap) if n and cap else n or cap


def room_for_answer(prompt_tokens: int, context: int | None, max_new: int | None = None,
                    knob: str = "max_new_tokens") -> int | None:
    """Tokens left for the answer after ``prompt_tokens`` (None: the context is unknown).

    Raises ContextExceeded when the prompt alone fills the context, or when ``max_new`` (the
    setting named ``knob``) does not fit beside it."""
    if context is None:
        return None
    room = context - prompt_tokens
    if max_new is not None and max_new > room:
        raise ContextExceeded(f"prompt is {prompt_tokens:,} tokens; with {knob} {max_new:,} it exceeds the model's "
                              f"context of {context:,}", room < 1)
    if room < 1:
        raise ContextExceeded(f"prompt is {prompt_tokens:,} tokens; the model's context is {context:,}", True)
    return room

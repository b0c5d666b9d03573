"""Resolve and load models: the embedded default, local folders, .gguf files, hub ids."""
from .load import load_model, load_tokenizer, pick_device, pick_dtype
from .resolve import DEFAULT_MODEL, resolve_model, tunesmith_home

__all__ = ["DEFAULT_MODEL", "load_model", "load_tokenizer", "pick_device", "pick_dtype", "resolve_model",
           "tunesmith_home"]

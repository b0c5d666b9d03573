"""Resolve and load models: the embedded default, local folders, .gguf files, hub ids."""
from .load import load_model, load_tokenizer, pick_device, pick_dtype
from ..config import DEFAULT_MODEL
from ..home import tunesmith_home  # re-exported for callers that import it from here (synth/replay.py)
from .resolve import resolve_model

__all__ = ["DEFAULT_MODEL", "load_model", "load_tokenizer", "pick_device", "pick_dtype", "resolve_model",
           "tunesmith_home"]

"""Inference: one engine for chat, predict, evaluation and serving."""
from .engine import Engine, GenParams

__all__ = ["Engine", "GenParams"]

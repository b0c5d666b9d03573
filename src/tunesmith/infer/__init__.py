"""Inference: one engine for chat, predict, evaluation, synth and serving."""
from .engine import Engine, Event, Job, QueueFull
from .sampling import GenParams

__all__ = ["Engine", "Event", "GenParams", "Job", "QueueFull"]

"""tunesmith: make an open LLM your own — data, synthesis, training, evaluation, export, serving."""

__version__ = "0.1.0"

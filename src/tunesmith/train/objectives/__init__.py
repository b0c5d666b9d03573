"""Training objectives by name: the recipe's ``objective`` field picks one."""
from __future__ import annotations

from .base import Objective
from .sft import SFT

OBJECTIVES: dict[str, type[Objective]] = {SFT.name: SFT}


def get(name: str) -> Objective:
    """The objective a recipe names (the config's Literal already refused unknown names)."""
    return OBJECTIVES[name]()


__all__ = ["OBJECTIVES", "Objective", "SFT", "get"]

"""Training objectives by name: the recipe's ``objective`` field picks one."""
from __future__ import annotations

from .base import Objective
from .dpo import DPO, IPO, SimPO
from .grpo import GRPO
from .sft import SFT

OBJECTIVES: dict[str, type[Objective]] = {o.name: o for o in (SFT, DPO, IPO, SimPO, GRPO)}


def get(name: str) -> Objective:
    """The objective a recipe names (the config's Literal already refused unknown names)."""
    return OBJECTIVES[name]()


__all__ = ["DPO", "GRPO", "IPO", "OBJECTIVES", "Objective", "SFT", "SimPO", "get"]

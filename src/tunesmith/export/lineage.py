"""Moved to ``tunesmith.models.lineage`` (every verb that loads an adapter checks its base)."""
from ..models.lineage import (ADAPTER_WEIGHTS, Lineage, adapter_hash, check_lineage, claimed_base,  # noqa: F401
                              describe, lineage)

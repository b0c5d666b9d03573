"""Data: every source format → one Conversation type; LLaMA-Factory's dataset_info.json;
checks that name each bad row; mixing; rendering with the model's own chat template.

Entry points for training code: ``build_sft_data`` (load → check → render → mix),
``load_conversations`` / ``load_preferences`` (one dataset's rows) and ``render``.
"""
from .build import SFTData, build_sft_data
from .audit import check_specs
from .config import DataConfig, DatasetConfig
from .load import load_conversations, load_dataset, load_preferences
from .render import IGNORE, render, render_many, template_messages
from .types import Conversation, PreferencePair, Problem, Turn

__all__ = ["IGNORE", "Conversation", "DataConfig", "DatasetConfig", "PreferencePair", "Problem", "SFTData", "Turn",
           "build_sft_data", "check_specs", "load_conversations", "load_dataset", "load_preferences", "render",
           "render_many", "template_messages"]

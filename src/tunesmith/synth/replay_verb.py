"""``tunesmith synth replay``: the model's own answers to the shipped general prompts, as a
dataset to mix into a task recipe's training so the task does not crowd out general skills.

It is the self-distilled replay that ``tunesmith identity`` mixes in by itself
(``synth.replay.replay_rows``, cached per model content hash under ``$TUNESMITH_HOME/replay``),
made a verb so any recipe can use it: a pipeline stage ``job: synth_replay`` writes
``<output_dir>/<n>-<stage>/data.jsonl`` (messages rows, each kept answer once), which the train
stage names beside the task's rows; its weight in the mix is that dataset's ``ratio`` (2 = every
answer twice), the same whole-repetition sampling every dataset has.
"""
from __future__ import annotations

from pydantic import Field

from ..config import ModelSection
from ..data.names import LANGS, Lang
from ..errors import UserError
from .runner import Outputs, write_rows

KIND = "synth replay"


class ReplayConfig(ModelSection):
    out: str = Field(..., description="output .jsonl file, or a folder (data.jsonl + manifest.json inside)")
    languages: list[Lang] = Field(default_factory=lambda: list(LANGS), min_length=1,
                                  description="languages of the shipped general prompts: en, zh")
    prompts: int | None = Field(None, gt=0, description="how many shipped prompts the model answers, drawn with "
                                                        "seed (default: all of those languages)")
    max_new_tokens: int = Field(64, gt=0, description="answer length; cut-off answers are trimmed to their last "
                                                      "full sentence, dropped when none is left")
    batch_size: int = Field(16, gt=0, description="prompts per generation batch")
    seed: int = Field(0, description="which prompts are drawn when prompts is set")
    progress: bool = Field(True, description="show a progress bar while the model answers")


def replay(cfg: ReplayConfig) -> int:
    from .replay import replay_rows

    outputs = Outputs(cfg.out)  # an unwritable out, or one inside a file, is refused before any model loads
    rows, info = replay_rows(cfg.model, list(cfg.languages), cfg.prompts, cfg.max_new_tokens, cfg.batch_size,
                             cfg.seed, cfg.dtype, cfg.device, cfg.trust_remote_code, progress=cfg.progress)
    if not rows:
        raise UserError(f"no usable answer: all {info['prompts']} answers were empty or cut off before a full "
                        "sentence; raise max_new_tokens (nothing written)")
    print(f"replay: {info['prompts']} prompts, {info['kept']} kept, {info['dropped']} dropped "
          f"({info['trimmed']} cut off: trimmed to a full sentence or dropped); cache {info['cache']}")
    write_rows(outputs, rows, {"kind": KIND, "model": cfg.model, "languages": list(cfg.languages),
                               "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed, "dtype": cfg.dtype, **info})
    return 0

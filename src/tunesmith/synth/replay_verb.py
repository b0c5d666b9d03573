"""``tunesmith synth replay``: the model's own answers to the shipped general prompts, as a
dataset to mix into a task recipe's training so the task does not crowd out general skills.

It is the self-distilled replay that ``tunesmith identity`` mixes in by itself
(``synth.replay.replay_rows``, cached per model content hash under ``$TUNESMITH_HOME/replay``),
made a verb so any recipe can use it: a pipeline stage ``job: synth_replay`` writes
``<output_dir>/<n>-<stage>/data.jsonl`` (messages rows), which the train stage names beside the
task's rows. Each kept answer is written ``upsample`` times, so the file itself carries the weight.
"""
from __future__ import annotations

import json

from pydantic import Field

from ..config import ModelSection
from ..data.names import LANGS, Lang
from ..errors import UserError
from ..fsutil import write_atomic
from .runner import Outputs

KIND = "synth replay"


class ReplayConfig(ModelSection):
    out: str = Field(..., description="output .jsonl file, or a folder (data.jsonl + manifest.json inside)")
    languages: list[Lang] = Field(default_factory=lambda: list(LANGS), min_length=1,
                                  description="languages of the shipped general prompts: en, zh")
    prompts: int | None = Field(None, gt=0, description="how many shipped prompts the model answers, drawn with "
                                                        "seed (default: all of those languages)")
    upsample: int = Field(1, gt=0, description="each kept answer this many times in the file")
    max_new_tokens: int = Field(64, gt=0, description="answer length; cut-off answers are trimmed to their last "
                                                      "full sentence, dropped when none is left")
    batch_size: int = Field(16, gt=0, description="prompts per generation batch")
    seed: int = Field(0, description="which prompts are drawn when prompts is set")
    progress: bool = Field(True, description="show a progress bar while the model answers")


def check_ours(outputs: Outputs) -> None:
    """An existing output is replaced only when its manifest says this verb wrote it: a file
    tunesmith did not write is never changed."""
    if not outputs.data.exists():
        return
    try:
        kind = json.loads(outputs.beside("manifest.json").read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind != KIND:
        raise UserError(f"out {outputs.data} exists and was not written by {KIND}: choose another --out")


def replay(cfg: ReplayConfig) -> int:
    from ..manifest import now
    from .replay import replay_rows

    outputs = Outputs(cfg.out)  # an unwritable out, or one inside a file, is refused before any model loads
    check_ours(outputs)
    rows, info = replay_rows(cfg.model, list(cfg.languages), cfg.prompts, cfg.max_new_tokens, cfg.batch_size,
                             cfg.seed, cfg.dtype, cfg.device, cfg.trust_remote_code, progress=cfg.progress)
    if not rows:
        raise UserError(f"no usable answer: all {info['prompts']} answers were empty or cut off before a full "
                        "sentence; raise max_new_tokens (nothing written)")
    # Whole repetitions, one pass after another: the training mix sees every answer equally often.
    data = [r for _ in range(cfg.upsample) for r in rows]
    write_atomic(outputs.data, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data))
    # status done last: a pipeline skips a stage whose manifest says so.
    outputs.write_manifest({"kind": KIND, "status": "done", "finished": now(), "data": str(outputs.data),
                            "rows": len(data), "model": cfg.model, "languages": list(cfg.languages),
                            "upsample": cfg.upsample, "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed,
                            "dtype": cfg.dtype, **info})
    print(f"replay: {info['prompts']} prompts, {info['kept']} kept, {info['dropped']} dropped "
          f"({info['trimmed']} cut off: trimmed to a full sentence or dropped), {len(data)} rows written to {outputs.data} (x{cfg.upsample}); "
          f"cache {info['cache']}")
    return 0

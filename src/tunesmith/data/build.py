"""The training data of a recipe: load → check → render → mix, with a report per dataset."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..models.template import ensure_chat_template
from .config import DataConfig
from .load import load_dataset
from .mix import mix
from .render import render_many
from .types import PreferencePair, Problem


@dataclass
class SFTData:
    train: list[dict]                 # {"input_ids", "labels"}
    val: list[dict]
    report: list[dict] = field(default_factory=list)   # one per dataset, for the run's manifest


def _bad_rows_error(problems: list[Problem]) -> UserError:
    n = len({(p.file, p.row) for p in problems})
    return UserError(f"{problems[0]} ({n} bad row{'s' * (n != 1)} in total; run `tunesmith data check` for all, "
                     "or set data.drop_bad_rows: true)")


def build_sft_data(cfg: DataConfig, tokenizer, base_dir: Path | None = None) -> SFTData:
    """Rendered, mixed and split training rows.

    Raises UserError for: no datasets; a dataset that can't be found; bad rows (unless
    ``drop_bad_rows``); preference data; a template the tokenizer lacks (set ``template``);
    and no row left after rendering."""
    if not cfg.datasets:
        raise UserError("data.datasets is empty: list at least one dataset")
    ensure_chat_template(tokenizer, cfg.template, "the model's tokenizer")
    loaded = [load_dataset(ds, base_dir) for ds in cfg.datasets]
    problems = [p for d in loaded for p in d.problems]
    if problems and not cfg.drop_bad_rows:
        raise _bad_rows_error(problems)
    for d in loaded:
        if any(isinstance(r, PreferencePair) for r in d.rows):
            raise UserError(f"dataset '{d.name}' holds preference pairs (chosen/rejected): it is DPO data, "
                            "not supervised fine-tuning data")

    rendered, dropped, template_bad = [], [], []
    for d in loaded:
        rows, errors = render_many(d.rows, tokenizer, cfg.cutoff_len, cfg.mask_history, cfg.num_workers)
        if errors and not cfg.drop_bad_rows:
            i, msg = min(errors.items())
            raise UserError(f"{d.rows[i].source}: template: {msg} (the chat template refuses {len(errors)} "
                            "rows; set data.drop_bad_rows: true to skip them)")
        kept = [r for r in rows if r is not None]
        rendered.append(kept)
        template_bad.append(len(errors))
        dropped.append(len(rows) - len(kept) - len(errors))
    if not any(rendered):
        raise UserError(f"no row has a trainable token within data.cutoff_len={cfg.cutoff_len} "
                        f"({sum(dropped)} rows dropped); raise cutoff_len or check the answers")

    train_idx, val_idx = mix([len(r) for r in rendered], [d.config.samples for d in loaded],
                             [d.config.ratio for d in loaded], cfg.val_size, cfg.seed)
    train = [rendered[s][i] for s, i in train_idx]
    val = [rendered[s][i] for s, i in val_idx]
    used = Counter(s for s, _ in train_idx + val_idx)
    report = [{"name": d.name, "path": str(Path(d.config.path).resolve()), "sha256": d.sha256, "rows": d.total,
               "bad_rows": d.bad_rows + template_bad[k], "rows_used": used[k], "dropped_too_long": dropped[k]}
              for k, d in enumerate(loaded)]
    return SFTData(train, val, report)

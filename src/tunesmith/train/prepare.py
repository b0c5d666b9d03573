"""What both the launcher and the loop check before any work: the run folder, the model, the
tokenizer and the objective's data. Everything a user can get wrong fails here, as one line,
before a folder is made — in the launching process rather than N times in the workers."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..manifest import read_manifest
from .checkpoint import latest
from .config import TrainConfig
from .objectives import Objective, get


def check_run_dir(run_dir: Path, resume: bool | str) -> Path | None:
    """The checkpoint to resume from, if any; refuse to overwrite a finished or started run."""
    last = latest(run_dir)
    if resume is True and last is None:
        raise UserError(f"resume: no checkpoint in {run_dir}/checkpoints to continue from")
    if resume:
        return last
    done = (read_manifest(run_dir) or {}).get("status") == "done"
    if done or last is not None:
        what = "a finished run" if done else "checkpoints"
        raise UserError(f"{run_dir} already holds {what}: pass --resume to continue it, or choose another output_dir")
    return None


def prepare_data(cfg: TrainConfig) -> tuple[Path, object, Objective, tuple[list, list, list]]:
    """``(model_dir, tokenizer, objective, (train_rows, val_rows, report))``."""
    from ..models import load_tokenizer, resolve_model
    from ..models.load import is_adapter_dir

    model_dir = resolve_model(cfg.model)
    if cfg.adapter and not is_adapter_dir(cfg.adapter):
        raise UserError(f"adapter {cfg.adapter} not found: expected a folder with adapter_config.json")
    if cfg.adapter:  # trained on another base: said before any data or weights load
        from ..models.lineage import check_lineage

        check_lineage(model_dir.resolve(), cfg.model, [Path(cfg.adapter)], action="trained further on", skip_hint="")
    tok = load_tokenizer(model_dir, cfg.adapter, cfg.trust_remote_code)
    objective = get(cfg.objective)
    return model_dir, tok, objective, objective.prepare(cfg, tok)

"""Running a translated LLaMA-Factory YAML: show the translation, run the verb, keep both YAMLs."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from ..fsutil import write_atomic
from .lf import Translation


def run_translated(tr: Translation, cfg, target) -> int:
    """Print the translation, run the verb on ``cfg``, and keep the translation and the original
    YAML (``lf_translation.yaml``, ``lf_original.yaml``) in a training run's folder. ``target`` is
    the verb (``registry.Verb``: run through ``registry.invoke``, so the output policy applies) or
    a function of the config. An unset run folder is ``runs/<yaml name>-<time>``."""
    if tr.kind == "train":  # said in the YAML's own words (the data loader would name data.datasets[0])
        folders = {d["dataset_info"] for d in tr.values.get("data.datasets", [])}
        for ds in cfg.data.datasets:
            if ds.dataset_info in folders and not Path(ds.dataset_info).expanduser().is_dir():
                raise ConfigError(f"{tr.source}: dataset_dir: {ds.dataset_info} not found (resolved from the current "
                                  f"folder {os.getcwd()})")
    print(tr.render() + "---", flush=True)
    recipe = Path(tr.source).stem
    if tr.kind == "train" and cfg.output_dir is None:  # named now, so the YAMLs can go there
        from ..registry import run_folder

        cfg = cfg.model_copy(update={"output_dir": run_folder("train", cfg, recipe)})

    def run() -> int:
        if callable(target):
            return int(target(cfg) or 0)
        from ..registry import invoke

        return invoke(target, cfg, recipe)

    if tr.kind != "train":
        return run()
    folder = Path(cfg.output_dir)
    existed, ran = folder.is_dir(), False
    try:
        code, ran = run(), True
        return code
    finally:
        # A run that started (or resumed) keeps its recipe; a refused one leaves nothing, and a
        # finished run someone pointed at by mistake keeps the YAMLs it had.
        if folder.is_dir() and (ran or not existed):
            write_atomic(folder / "lf_translation.yaml", tr.render())
            write_atomic(folder / "lf_original.yaml", Path(tr.source).read_bytes())

"""``tunesmith pipeline``: stages that stack — train, merge, train again on the merge.

Seed 000's lesson: a second LoRA trained on top of an unmerged first one "did nothing";
merging first and training a new LoRA on the merged model worked. A pipeline makes that
explicit: each stage gets its own folder under ``output_dir``, a train (or identity) stage
trains on the current model, a merge stage folds the previous stage's adapter into the
model it was trained on and makes the result the current model. The top-level manifest
records the lineage. Finished stages are skipped on a rerun, so a killed pipeline resumes.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from .config import Section, validate, write_atomic
from .errors import UserError
from .manifest import now, read_manifest, write_manifest
from .models import DEFAULT_MODEL

KINDS = ("train", "identity", "merge")


class Stage(Section):
    name: str = Field(..., description="stage name (its folder is <n>-<name>)")
    train: dict[str, Any] | None = Field(None, description="a train recipe (model and output_dir are filled in)")
    identity: dict[str, Any] | None = Field(None, description="an identity job (model and output_dir are filled in)")
    merge: dict[str, Any] | None = Field(None, description="merge the previous stage's adapter (options: dtype, "
                                                           "shard_size, tolerance)")
    probes: str | None = Field(None, description="JSONL of {prompt, expect}: task accuracy after this stage and "
                                                 "on the final model")

    @model_validator(mode="after")
    def _one_kind(self):
        kinds = [k for k in KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"stage '{self.name}' needs exactly one of {', '.join(KINDS)}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)


class PipelineConfig(Section):
    model: str = Field(DEFAULT_MODEL, description="the first stage's base model")
    output_dir: str | None = Field(None, description="pipeline folder (default: runs/pipeline-<time>)")
    stages: list[Stage] = Field(..., min_length=1, description="stages, run in order")


def _done(folder: Path) -> bool:
    return (read_manifest(folder) or {}).get("status") == "done"


def _probe(stage: Stage, model: str, adapter: list[str], folder: Path, label: str) -> dict:
    from .eval.probes import EvalProbesConfig, run_probes

    r = run_probes(EvalProbesConfig(model=model, adapter=adapter, probes=stage.probes, out=str(folder / label)))
    print(f"  probes ({stage.name}, {label}): accuracy {r['accuracy']:.0%} ({r['passed']}/{r['total']})")
    return {"stage": stage.name, "on": label, "accuracy": r["accuracy"], "passed": r["passed"], "total": r["total"]}


def pipeline(cfg: PipelineConfig) -> int:
    from .export.merge import MergeConfig, merge
    from .synth.identity_job import IdentityJobConfig, identity
    from .train.config import TrainConfig
    from .train.sft import train

    from .fsutil import check_writable_dir

    root = Path(cfg.output_dir or f"runs/pipeline-{time.strftime('%Y%m%d-%H%M%S')}")
    check_writable_dir(root, "output_dir")
    # Validate every stage before running any, so a typo in stage 3 costs no training time.
    plan = []
    for i, st in enumerate(cfg.stages):
        folder = root / f"{i + 1}-{st.name}"
        where = f" (stage {i + 1} '{st.name}')"
        if st.kind == "merge":
            if i == 0 or cfg.stages[i - 1].kind == "merge":
                raise UserError(f"stage {i + 1} '{st.name}': a merge needs a train or identity stage before it")
            validate(MergeConfig, {"adapter": ["x"], "out": str(folder), **st.merge}, where)
        else:
            schema = TrainConfig if st.kind == "train" else IdentityJobConfig
            body = getattr(st, st.kind)
            if "model" in body or "output_dir" in body:
                raise UserError(f"stage {i + 1} '{st.name}': model and output_dir are set by the pipeline")
            validate(schema, {**body, "model": cfg.model, "output_dir": str(folder)}, where)
        plan.append((st, folder))

    current, last_trained = cfg.model, None  # last_trained: (base it trained on, its folder)
    lineage, probes = [], []
    t0 = time.time()
    for st, folder in plan:
        print(f"== stage {folder.name} ({st.kind}) on {current}")
        if st.kind == "merge":
            base, adapter = last_trained
            if not _done(folder):
                code = merge(validate(MergeConfig, {"model": base, "adapter": [str(adapter)], "out": str(folder),
                                                     **st.merge}))
                if code:
                    return code
            current = str(folder)
            if st.probes:
                probes.append(_probe(st, current, [], folder, "eval"))
        else:
            body = {**getattr(st, st.kind), "model": current, "output_dir": str(folder), "resume": "auto"}
            if not _done(folder):
                if st.kind == "train":
                    code = train(validate(TrainConfig, body))
                else:
                    body.setdefault("progress", True)
                    code = identity(validate(IdentityJobConfig, body))
                if code:
                    return code
            last_trained = (current, folder)
            if st.probes:
                probes.append(_probe(st, current, [str(folder)], folder, "eval"))
        m = read_manifest(folder) or {}
        lineage.append({"stage": st.name, "kind": st.kind, "folder": str(folder.resolve()),
                        "model_in": current if st.kind != "merge" else last_trained[0],
                        "metrics": m.get("metrics"), "eval": m.get("eval"), "verification": m.get("verification")})
    # The skills of every stage should survive into the final model: probe it with each probe set.
    final = [_probe(st, current, [], root, f"final-{st.name}") for st, _ in plan if st.probes]
    final_identity = None
    for st, _ in plan:
        if st.kind == "identity" and st.identity.get("eval", True) and current != cfg.model:
            from .eval.identity import EvalIdentityConfig, print_table, run_eval

            job = validate(IdentityJobConfig, {**st.identity, "model": current})
            rep = run_eval(EvalIdentityConfig(model=current, base=cfg.model, names=job.identity(),
                                              languages=job.languages, out=str(root / "final-identity")))
            print_table(rep)
            final_identity = rep["tuned"]["scores"]
    write_manifest(root, {"kind": "pipeline", "status": "done", "finished": now(), "base_model": cfg.model,
                          "final_model": str(Path(current).resolve()), "stages": lineage,
                          "probes": probes, "final_probes": final,
                          "final_identity": final_identity, "seconds": round(time.time() - t0, 1)})
    write_atomic(root / "final_model.txt", str(Path(current).resolve()) + "\n")
    print(f"done: {root} → final model {current}")
    return 0

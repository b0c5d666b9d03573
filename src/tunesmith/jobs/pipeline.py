"""``tunesmith pipeline``: stages that stack — train, merge, train again on the merge.

Seed 000's lesson: a second LoRA trained on top of an unmerged first one "did nothing";
merging first and training a new LoRA on the merged model worked. A pipeline makes that
explicit. Each stage is ``{job: NAME, …that verb's config…}`` for any verb of the registry
(``tunesmith.registry``); what the verb consumes and produces says how stages chain:

- a verb that consumes a ``model`` gets the current model (the first stage: the pipeline's);
- one that consumes an ``adapter`` (a merge) gets the last adapter a stage produced and the
  model that adapter was trained on;
- a stage that produces an ``adapter`` is remembered for the next merge; one that produces a
  ``merged`` model makes it the current model;
- the stage's folder (``<n>-<name>`` under ``output_dir``) goes into the verb's output field;
- a later stage names what an earlier one produced as ``$STAGE.OUTPUT`` (``path:
  $distill.dataset``), never by its folder: see ``jobs/handoff.py``. References and every
  stage's input files are checked before stage 1 runs.

Each stage runs through ``registry.invoke``, as the CLI runs a verb (the output policy with it).
The top-level manifest records the lineage. Finished stages are skipped on a rerun, so a
killed pipeline resumes. ``{name, train: {...}}`` (the older form) still reads as
``{stage: name, job: train, ...}``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from ..config import DEFAULT_MODEL, Section, validate
from ..errors import UserError
from ..fsutil import write_atomic
from ..manifest import now, read_manifest, write_manifest
from ..registry import Verb, by_job, invoke, run_folder
from .handoff import Planned, check_inputs, resolve_stage

OLD_FORMS = ("train", "identity", "merge")


class Stage(Section):
    stage: str = Field(..., description="stage label: its folder is <n>-<stage>, and later stages name what it "
                                        "produced as $<stage>.dataset, .adapter, .merged … (default: the job)")
    job: str = Field(..., description="a verb of the registry: train, identity, export_merge (or merge), …")
    probes: str | None = Field(None, description="JSONL of {prompt, expect}: task accuracy after this stage and "
                                                 "on the final model")
    config: dict[str, Any] = Field(default_factory=dict, description="the verb's config (its other keys)")

    @property
    def name(self) -> str:
        return self.stage

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any):
        """``{stage, job, probes, …}``: every other key belongs to the verb's own config (``name``
        too: the identity verb has one). The older form ``{name, train: {...}}`` reads as
        ``{stage: name, job: train, ...}``."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        old = [k for k in OLD_FORMS if k in data]
        if "job" not in data and len(old) == 1 and isinstance(data[old[0]], dict | None):
            body = data.pop(old[0]) or {}
            data = {"stage": data.pop("name", old[0]), "job": old[0], **data, **body}
        own = {k: data.pop(k) for k in ("stage", "job", "probes") if k in data}
        if "config" in data and isinstance(data["config"], dict) and len(data) == 1:
            own.update(config=data["config"])
        else:
            own.update(config=data)
        own.setdefault("stage", own.get("job"))
        return own


class PipelineConfig(Section):
    model: str = Field(DEFAULT_MODEL, description="the first stage's base model")
    output_dir: str | None = Field(None, description="pipeline folder (default: runs/<recipe name>-<time>)")
    stages: list[Stage] = Field(..., min_length=1, description="stages, run in order")


def _done(folder: Path) -> bool:
    return (read_manifest(folder) or {}).get("status") == "done"


def _probe(stage: Stage, model: str, adapter: list[str], folder: Path, label: str) -> dict:
    from ..eval.probes import EvalProbesConfig, run_probes

    r = run_probes(EvalProbesConfig(model=model, adapter=adapter, probes=stage.probes, out=str(folder / label)))
    print(f"  probes ({stage.name}, {label}): accuracy {r['accuracy']:.0%} ({r['passed']}/{r['total']})")
    return {"stage": stage.name, "on": label, "accuracy": r["accuracy"], "passed": r["passed"], "total": r["total"]}


def _body(verb: Verb, st: Stage, folder: Path, model: str, pending: tuple[str, str] | None) -> dict:
    """The stage's config with what the pipeline provides filled in: the current model, or the
    pending adapter with the model it was trained on, and the stage's folder."""
    schema = verb.load_schema()
    body = dict(st.config)
    given = sorted({"model", "adapter", verb.output_field} & set(body))
    if given and set(verb.consumes) & {"model", "adapter"}:
        raise UserError(f"stage '{st.name}': {', '.join(given)} {'is' if len(given) == 1 else 'are'} set by the "
                        "pipeline; remove " + ("it" if len(given) == 1 else "them"))
    if "adapter" in verb.consumes and pending is not None:
        body.update(model=pending[0], adapter=[pending[1]])
    elif "model" in verb.consumes and "model" in schema.model_fields:
        body["model"] = model
    if verb.output_field:
        body[verb.output_field] = str(folder)
    if "resume" in schema.model_fields:
        body.setdefault("resume", "auto")
    return body


def _needs_adapter(verb: Verb) -> bool:
    """A verb that cannot run without an adapter (a merge): its adapter field is required."""
    info = verb.load_schema().model_fields.get("adapter")
    return "adapter" in verb.consumes and info is not None and info.is_required()


def plan(cfg: PipelineConfig, root: Path) -> list[Planned]:
    """Every stage as it will run, checked before any runs (so a typo in stage 3 costs no
    training time): its verb, its references to earlier stages, its config, its input files."""
    from ..registry import VERBS

    labels = [st.name for st in cfg.stages]
    planned: list[Planned] = []
    pending = None
    for i, st in enumerate(cfg.stages):
        verb = by_job(st.job)
        if verb is None or verb.name == "pipeline":
            jobs = ", ".join(v.job for v in VERBS if v.name != "pipeline")
            raise UserError(f"stage {i + 1} '{st.name}': job '{st.job}' is not a verb (choose from {jobs})")
        if _needs_adapter(verb) and pending is None:
            raise UserError(f"stage {i + 1} '{st.name}': {verb.name} needs a stage before it that produces an "
                            "adapter (train, identity)")
        st = resolve_stage(st, i, labels, planned)
        p = Planned(i, st, verb, root / f"{i + 1}-{st.name}")
        p.cfg = validate(verb.load_schema(), _body(verb, st, p.folder, cfg.model, pending), f" ({p.where})")
        check_inputs(p, planned)
        if "adapter" in verb.produces:
            pending = (cfg.model, str(p.folder))
        if "merged" in verb.produces:
            pending = None
        planned.append(p)
    return planned


def pipeline(cfg: PipelineConfig) -> int:
    from ..fsutil import check_writable_dir

    root = Path(cfg.output_dir or run_folder("pipeline", cfg))
    check_writable_dir(root, "output_dir")
    stages = plan(cfg, root)

    current, pending = cfg.model, None  # pending: (the model it trained on, the adapter folder) until merged
    lineage, probes = [], []
    t0 = time.time()
    for p in stages:
        st, verb, folder = p.stage, p.verb, p.folder
        print(f"== stage {folder.name} ({verb.name}) on {current}")
        body = _body(verb, st, folder, current, pending)
        model_in = body.get("model", current)
        if not _done(folder):
            # overwrite: a rerun of the pipeline's own unfinished stage (what tunesmith did not write stays refused)
            code = invoke(verb, validate(verb.load_schema(), body, f" ({p.where})"), overwrite=folder.exists())
            if code:
                return code
        if "adapter" in verb.produces:
            pending = (current, str(folder))
            if st.probes:
                probes.append(_probe(st, current, [str(folder)], folder, "eval"))
        if "merged" in verb.produces:
            current, pending = str(folder), None
            if st.probes:
                probes.append(_probe(st, current, [], folder, "eval"))
        m = read_manifest(folder) or {}
        lineage.append({"stage": st.name, "kind": verb.job, "folder": str(folder.resolve()), "model_in": model_in,
                        "metrics": m.get("metrics"), "eval": m.get("eval"), "verification": m.get("verification")})
    # The skills of every stage should survive into the final model: probe it with each probe set,
    # and run each stage's own final check (the identity eval) on it.
    final = [_probe(p.stage, current, [], root, f"final-{p.stage.name}") for p in stages if p.stage.probes]
    checks = {}
    if current != cfg.model:
        for p in stages:
            if p.verb.final_check:
                from ..registry import load

                stage_cfg = validate(p.verb.load_schema(), _body(p.verb, p.stage, p.folder, cfg.model, None))
                checks[p.stage.name] = load(p.verb.final_check)(stage_cfg, current, cfg.model,
                                                                root / f"final-{p.stage.name}")
    write_manifest(root, {"kind": "pipeline", "status": "done", "finished": now(), "base_model": cfg.model,
                          "final_model": str(Path(current).resolve()), "stages": lineage,
                          "probes": probes, "final_probes": final, "final_checks": checks,
                          "final_identity": next((c for c in checks.values() if c), None),
                          "final_adapter": str(Path(pending[1]).resolve()) if pending else None,
                          "seconds": round(time.time() - t0, 1)})
    write_atomic(root / "final_model.txt", str(Path(current).resolve()) + "\n")
    # An adapter trained after the last merge is not in the final model: say where it is.
    unmerged = f" (+ the adapter {pending[1]}, not merged: a merge stage after it folds it in)" if pending else ""
    print(f"done: {root} → final model {current}{unmerged}")
    return 0

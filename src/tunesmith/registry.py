"""The one verb registry: each verb's schema, function, and what it consumes and produces.

The CLI (``tunesmith VERB``) and the pipeline (a stage is ``{job: NAME, …its schema…}``) read
this list; adding a verb here adds a command and a stage kind, with no edit to either.
Targets and schemas are ``"module:attr"`` strings, imported only when the verb runs, so
``tunesmith --help`` stays fast and no stage module is imported by the registry itself.

Kinds of things a verb consumes or produces (the pipeline chains stages by them):
``model`` (a base it loads: the pipeline passes the current model), ``adapter`` (a LoRA run
folder; a verb that consumes one gets the previous stage's adapter and the model it was trained
on), ``merged`` (a full model folder that becomes the current model), ``dataset``, ``gguf``,
``report``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from .outputs import Output

KINDS = ("model", "adapter", "merged", "dataset", "gguf", "report")


@dataclass(frozen=True)
class Verb:
    name: str                       # "train" or "data check"
    target: str                     # "module:function"; the function takes the config, returns an exit code
    schema: str                     # "module:Class"
    help: str
    positional: str | None = None   # field that bare words fill (list field: all of them)
    yaml_is_data: bool = False      # a bare .yaml names data to inspect (a recipe), not this verb's config
    consumes: tuple[str, ...] = ()
    produces: tuple[str, ...] = ()
    writes: tuple[Output, ...] = ()  # what it writes (outputs.plan checks each before the verb runs)
    reads: tuple[str, ...] = ()      # fields naming input files or folders (an output may not be one)
    final_check: str | None = None   # "module:function"(stage config, final model, base model, folder) → dict
    # A config written for another tool: "module:function"(yaml path, verb name) → Translation or None
    # (a LLaMA-Factory YAML given to train, export merge or chat), and how to run a translated one.
    foreign_yaml: str | None = None
    run_foreign: str | None = None
    argv_rewrite: str | None = None  # "module:function"(argv) → argv: another tool's flags (ms-swift's)
    run_name: str | None = None      # default run folder runs/<run_name>-<time> (else the recipe's name)

    @property
    def job(self) -> str:
        """The name a pipeline stage uses: ``export merge`` → ``export_merge``."""
        return self.name.replace(" ", "_").replace("-", "_")

    @property
    def output_field(self) -> str | None:
        """The field naming its output folder (a pipeline stage's folder goes here)."""
        first = self.writes[0] if self.writes else None
        return first.field if first and first.kind != "file" and "[" not in first.field else None

    def load_schema(self):
        return load(self.schema)

    def load_target(self):
        return load(self.target)


def load(ref: str):
    mod, _, attr = ref.partition(":")
    return getattr(importlib.import_module(mod), attr)


MODEL_IN = ("model", "adapter")
SYNTH_OUT = (Output("out", resumes=True),)  # a rerun continues from the journals
LF_YAML, LF_RUN = "tunesmith.compat.lf:translate_file", "tunesmith.compat.run:run_translated"

VERBS: list[Verb] = [
    Verb("chat", "tunesmith.infer.chat:chat", "tunesmith.infer.chat:ChatConfig",
         "talk to a model (streamed, multi-turn); --prompt answers once", positional="model",
         consumes=("model", "adapter"), foreign_yaml=LF_YAML, run_foreign=LF_RUN),
    Verb("predict", "tunesmith.infer.predict:predict", "tunesmith.infer.predict:PredictConfig",
         "answer every line of a JSONL file (batched, resumable)", consumes=("model", "dataset"),
         produces=("dataset",), writes=(Output("output", "file", resumes=True),), reads=MODEL_IN + ("input",)),
    Verb("data check", "tunesmith.data.commands:check", "tunesmith.data.commands:CheckConfig",
         "name every bad row (file:row: field: problem) before any compute", positional="specs",
         yaml_is_data=True, consumes=("dataset",), produces=("report",)),
    Verb("data convert", "tunesmith.data.commands:convert", "tunesmith.data.commands:ConvertConfig",
         "convert a dataset to alpaca, sharegpt or messages JSONL", positional="paths", consumes=("dataset",),
         produces=("dataset",), writes=(Output("paths[1]", "file"),), reads=("paths[:1]",)),
    Verb("data stats", "tunesmith.data.commands:stats", "tunesmith.data.commands:StatsConfig",
         "row counts, token lengths and a length histogram", positional="specs", yaml_is_data=True,
         consumes=("dataset",), produces=("report",), writes=(Output("out", "file"),), reads=("specs",)),
    Verb("train", "tunesmith.train:train", "tunesmith.train.config:TrainConfig",
         "fine-tuning: SFT, DPO / IPO / SimPO on pairs, or GRPO on prompts with rewards; LoRA, QLoRA or full "
         "(recipe YAML + overrides)", consumes=("model", "dataset"),
         produces=("adapter",), writes=(Output("output_dir", "dir", resumes=True, holds_inputs=True),),
         reads=MODEL_IN + ("data.datasets", "data.path"), foreign_yaml=LF_YAML, run_foreign=LF_RUN,
         run_name="{objective}", argv_rewrite="tunesmith.compat.swift:swift_grpo_argv"),
    Verb("identity", "tunesmith.jobs.identity:identity", "tunesmith.jobs.identity:IdentityJobConfig",
         "the identity journey: synth → train (LoRA) → eval → before/after report", consumes=("model",),
         produces=("adapter", "report"), writes=(Output("output_dir", "dir", resumes=True),),
         reads=("model", "identity_data", "data.datasets"), run_name="identity",
         argv_rewrite="tunesmith.compat.swift:swift_argv", final_check="tunesmith.jobs.identity:final_check"),
    Verb("eval identity", "tunesmith.eval.identity:eval_identity", "tunesmith.eval.identity:EvalIdentityConfig",
         "identity hit rates, leak rate and closeness to base, base vs tuned", consumes=("model", "adapter"),
         produces=("report",), writes=(Output("out", "dir"),), reads=MODEL_IN + ("base",)),
    Verb("eval probes", "tunesmith.eval.probes:eval_probes", "tunesmith.eval.probes:EvalProbesConfig",
         "task accuracy: does each answer contain the expected text?", consumes=("model", "adapter"),
         produces=("report",), writes=(Output("out", "dir"),), reads=MODEL_IN + ("probes",)),
    Verb("pipeline", "tunesmith.jobs.pipeline:pipeline", "tunesmith.jobs.pipeline:PipelineConfig",
         "stages that stack: train → merge → train on the merge → merge, one folder each", consumes=("model",),
         produces=("merged", "report"), writes=(Output("output_dir", "dir", resumes=True),), reads=("model",),
         run_name="pipeline"),
    Verb("export merge", "tunesmith.export.merge:merge", "tunesmith.export.merge:MergeConfig",
         "merge adapters into the base and verify the logits", consumes=("model", "adapter"),
         produces=("merged",), writes=(Output("out", "dir"),), reads=MODEL_IN, foreign_yaml=LF_YAML,
         run_foreign=LF_RUN),
    Verb("export gguf", "tunesmith.export.gguf:export_gguf", "tunesmith.export.gguf:GgufConfig",
         "GGUF (f16, q8_0, q4_k_m…) with llama.cpp's converter and quantizer, an Ollama Modelfile and a README",
         consumes=("model", "adapter"), produces=("gguf",), writes=(Output("out", "dir"),), reads=MODEL_IN),
    Verb("convert-recipe", "tunesmith.compat.recipe:convert_recipe", "tunesmith.compat.recipe:ConvertRecipeConfig",
         "translate a LLaMA-Factory YAML (train, merge or inference) into a tunesmith recipe", positional="path",
         yaml_is_data=True, writes=(Output("out", "file"),), reads=("path",)),
    Verb("serve", "tunesmith.serve:serve", "tunesmith.serve:ServeConfig",
         "OpenAI-compatible server with batching and a chat page at /", positional="model",
         consumes=("model", "adapter")),
    Verb("ui", "tunesmith.ui:ui", "tunesmith.ui:UiConfig",
         "a local web app over the verbs: data check, recipe forms, runs with live curves, reports, side-by-side "
         "chat, export (http://127.0.0.1 with a token)"),
    Verb("synth distill", "tunesmith.synth.distill:distill", "tunesmith.synth.distill:DistillConfig",
         "a teacher (any OpenAI-compatible endpoint) answers prompts, reasoning kept; resumable",
         consumes=("dataset",), produces=("dataset",), writes=SYNTH_OUT, reads=("prompts",)),
    Verb("synth style", "tunesmith.synth.style:style", "tunesmith.synth.style:StyleConfig",
         "answer each question in a corpus's style from k other Q/A pairs of it (never its own answer)",
         consumes=("dataset",), produces=("dataset",), writes=SYNTH_OUT, reads=("corpus",)),
    Verb("synth judge", "tunesmith.synth.judge:judge", "tunesmith.synth.judge:JudgeConfig",
         "a teacher scores each row 1-10 against a rubric; keep rows scoring at least min_score",
         consumes=("dataset",), produces=("dataset",), writes=SYNTH_OUT, reads=("input",)),
    Verb("synth chunks", "tunesmith.synth.chunks:chunks", "tunesmith.synth.chunks:ChunksConfig",
         "long text → continuation pairs on sentence boundaries (optionally teacher-written pairs + judge)",
         produces=("dataset",), writes=SYNTH_OUT, reads=("text",)),
    Verb("synth task", "tunesmith.synth.tasks:task", "tunesmith.synth.tasks:TaskConfig",
         "checkable chain-of-thought rows (multiply, add) with a held-out split; --check verifies every step",
         positional="task", produces=("dataset",), writes=(Output("out", resumes=False),), reads=("check",)),
    Verb("eval tasks", "tunesmith.eval.tasks:eval_tasks", "tunesmith.eval.tasks:EvalTasksConfig",
         "task scores (exact, number, label ranking by log-likelihood) and retention, base vs each adapter",
         consumes=("model", "adapter"), produces=("report",), writes=(Output("out", "dir"),),
         reads=MODEL_IN + ("tasks", "shots", "gguf")),
    Verb("eval lm-eval", "tunesmith.eval.lm_eval:eval_lm_eval", "tunesmith.eval.lm_eval:EvalLmEvalConfig",
         "lm-evaluation-harness tasks on the model (+ adapters): local task YAMLs offline, benchmarks from the hub "
         "(extra: tunesmith[lm-eval])", consumes=("model", "adapter"), produces=("report",),
         writes=(Output("out", "dir"),), reads=MODEL_IN + ("include_path",)),
    Verb("synth preference", "tunesmith.synth.preference:preference", "tunesmith.synth.preference:PreferenceConfig",
         "DPO pairs: identity answer vs the model's own (--name/--author), or two answer files (--chosen/--rejected)",
         consumes=("model",), produces=("dataset",), writes=SYNTH_OUT, reads=("model", "chosen", "rejected")),
    Verb("synth replay", "tunesmith.synth.replay_verb:replay", "tunesmith.synth.replay_verb:ReplayConfig",
         "the model's own answers to shipped general prompts (cached), to mix into a task's training: keeps "
         "general skills", consumes=("model",), produces=("dataset",), writes=SYNTH_OUT, reads=("model",)),
]
GROUPS = {"data": "load, check, convert and describe datasets",
          "eval": "before/after evaluation reports: identity, probes, tasks with retention; lm-eval benchmarks",
          "export": "merge adapters into the base (verified); GGUF files and an Ollama Modelfile for llama.cpp, Ollama, Jan",
          "synth": "make training data: teacher distill, style, judge, chunks, preference pairs, CoT tasks, replay"}


def register(verb: Verb) -> Verb:
    """Add a verb (or replace one of the same name): it becomes a command and a stage kind."""
    for i, v in enumerate(VERBS):
        if v.name == verb.name:
            VERBS[i] = verb
            return verb
    VERBS.append(verb)
    return verb


def invoke(verb: Verb, cfg, recipe: str | None = None, overwrite: bool = False) -> int:
    """Run a verb on its validated config: the one call the CLI and the pipeline make. An unset
    run folder gets its one default name (``runs/<recipe or run_name>-<time>``); every output
    is checked by the one output policy before the verb touches a model or a teacher, and what
    it writes is recorded as tunesmith's (``tunesmith.outputs``). ``overwrite``: the caller
    owns the outputs (a pipeline rerunning its own unfinished stage)."""
    from .outputs import claimed, plan

    field = verb.output_field
    if field and getattr(cfg, field, None) is None and (recipe or verb.run_name):
        setattr(cfg, field, run_folder(verb, cfg, recipe))
    claims = plan(verb.name, verb.writes, verb.reads, cfg, overwrite or bool(getattr(cfg, "overwrite", False)))
    with claimed(claims):
        return int(verb.load_target()(cfg) or 0)


def run_folder(verb: Verb | str, cfg, recipe: str | None = None) -> str:
    """The one place a run folder is named: ``runs/<recipe's name>-<time>``, else
    ``runs/<the verb's run_name>-<time>`` (train: its objective, ``runs/sft-…``)."""
    from .fsutil import default_run_dir

    v = by_name(verb) if isinstance(verb, str) else verb
    name = recipe or (v.run_name.format(**dict(cfg)) if v and v.run_name else (v.job if v else "run"))
    return default_run_dir(name)


def by_name(name: str) -> Verb | None:
    return next((v for v in VERBS if v.name == name), None)


def by_job(job: str) -> Verb | None:
    """A pipeline stage's ``job``: ``train``, ``export_merge`` (or ``export merge``), or the short
    ``merge`` for the verb whose last word it is, when only one verb ends so."""
    exact = next((v for v in VERBS if job in (v.job, v.name)), None)
    if exact:
        return exact
    tails = [v for v in VERBS if v.name.split()[-1] == job]
    return tails[0] if len(tails) == 1 else None

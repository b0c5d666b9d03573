"""The training recipe's schema: ``tunesmith train recipe.yaml lora.r=32 train.lr=2e-4``."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ..config import DTYPES, Dtype, ModelSection, Section
from ..data.config import DataConfig


class LoraSettings(Section):
    r: int = Field(16, gt=0, description="LoRA rank")
    alpha: int = Field(32, gt=0, description="LoRA alpha (scale = alpha / r, or alpha / sqrt(r) with rslora)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: list[str] = Field(default_factory=lambda: ["all-linear"],
                                      description="modules to adapt: all-linear, or names such as q_proj,v_proj")
    use_dora: bool = Field(False, description="weight-decomposed LoRA (DoRA)")
    use_rslora: bool = Field(False, description="rank-stabilized scaling alpha / sqrt(r)")
    modules_to_save: list[str] = Field(default_factory=list,
                                       description="modules trained in full and saved with the adapter (e.g. lm_head)")


class LoopSettings(Section):
    lr: float = Field(1e-4, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="learning-rate schedule")
    warmup: float = Field(0.03, ge=0, description="warmup: a fraction of all steps if < 1, else a step count")
    epochs: float = Field(3.0, gt=0, description="passes over the training data (ignored when max_steps is set)")
    max_steps: int | None = Field(None, gt=0, description="optimizer steps to run (overrides epochs)")
    batch_size: int = Field(4, gt=0, description="rows per micro-batch on each process")
    grad_accum: int = Field(1, gt=0, description="micro-batches per optimizer step")
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip gradients to this norm (null: no clipping)")
    seed: int = Field(42, description="seed for initialisation, data order and dropout")
    group_by_length: bool = Field(True, description="batch rows of similar length together so padding stays small")
    gradient_checkpointing: bool | Literal["offload"] = Field(
        False, description="recompute activations in backward to save memory; offload = also keep each layer's "
                           "input in pinned CPU memory until the backward needs it (torch's save_on_cpu; "
                           "Unsloth's offloaded checkpointing: less GPU memory, some speed)")
    dtype: Dtype = Field(None, description="deprecated: use dtype (the top-level field; still read from old recipes)")
    log_every: int = Field(1, gt=0, description="log train metrics every N steps")
    eval_every: int | None = Field(None, gt=0, description="evaluate on the val split every N steps (and at the end)")
    save_every: int | None = Field(None, gt=0, description="checkpoint every N steps (and at the end)")
    keep_last: int = Field(2, gt=0, description="checkpoints to keep")
    packing: bool | None = Field(
        None, description="pack rows into bins of pack_len tokens, each row attending only to itself (exact: same "
                          "loss and gradients as padded rows). Default: on for sft; dpo/ipo/simpo use padded pairs")
    pack_len: int | None = Field(None, gt=0, description="bin width in tokens when packing (default: data.cutoff_len)")
    batch_tokens: int | None = Field(
        None, gt=0, description="form micro-batches by a token budget per process instead of batch_size rows: the "
                                "sum of row lengths (padded: rows × longest) stays ≤ this; a longer row goes alone")
    kernels: Literal["auto", "liger", "none"] = Field(
        "auto", description="fused kernels (Liger: linear+cross-entropy without full logits, RMSNorm, RoPE, "
                            "SwiGLU): auto = liger on CUDA when installed and the model family is supported")
    attention: Literal["auto", "sdpa", "flex", "varlen"] = Field(
        "auto", description="how packed rows attend only to themselves: sdpa = a 4-D block mask (exact anywhere, but "
                            "every bin computes its full width²); flex = torch flex_attention with a document-causal "
                            "block mask; varlen = torch's varlen flash attention over the rows; auto = varlen on "
                            "CUDA in bf16 when packing (fastest measured), else sdpa")
    compile: bool = Field(False, description="torch.compile each decoder layer (regional: compiled once, reused by "
                                             "every layer)")
    autocast: Literal["auto", "bf16", "off"] = Field(
        "auto", description="bf16 autocast around the loss, fp32 weights and gradients kept: auto = on CUDA when the "
                            "model is bf16 and the adapters fp32, and for a LoRA over an fp32 model on a CPU with AMX "
                            "(bf16 matrix units: the frozen weights held in bf16, attention in fp32, train/cpu.py); "
                            "bf16 = always; off = never (fp32 on a CPU)")
    mlp_recompute: bool = Field(
        False, description="recompute each MLP's act(gate)*up in the backward instead of keeping it (its widest "
                           "activation; same numbers): less memory, slower (H100, Qwen2.5-0.5B: 33.8 → 29.5 GiB, 96k → 74k "
                           "tokens/s), so off unless asked; a LoRA, offline objectives, without gradient checkpointing or compile")
    optim: Literal["adamw", "paged_adamw_8bit"] = Field(
        "adamw", description="optimizer: adamw (torch), or paged_adamw_8bit (bitsandbytes, CUDA only; pairs with qlora)")


class PrefSettings(Section):
    beta: float = Field(0.1, gt=0, description="strength of the preference (DPO/IPO: how far from the reference "
                                               "the policy may move; SimPO: reward scale)")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="dpo/simpo: probability that a pair's label is "
                                                                  "flipped (conservative DPO); 0 = off")
    gamma: float = Field(0.5, ge=0, description="simpo: target reward margin (LLaMA-Factory's simpo_gamma)")
    sft_weight: float = Field(0.0, ge=0, description="weight of an SFT term (per-token NLL of the chosen answer) "
                                                     "added to the loss (LLaMA-Factory's pref_ftx)")


class RewardSpec(Section):
    name: str = Field(..., description="a reward of the task home (tasks/rewards.py): multiply, add, label, format, "
                                       "identity, length, prefix")
    weight: float = Field(1.0, description="its weight in the summed reward")
    options: dict[str, Any] = Field(default_factory=dict, description="its settings: identity {names: [...]}, length "
                                                                      "{max_chars: N}, prefix {text: ...}, multiply/add "
                                                                      "{step_weight: 0 to 1, default 0.5}")

    @model_validator(mode="after")
    def _known(self):
        from ..tasks.rewards import build

        build(self.name, self.options)  # an unknown name or option is one line, before any work
        return self


class GRPOSettings(Section):
    num_generations: int = Field(8, ge=2, description="completions sampled per prompt (the group G); a step has "
                                                      "batch_size × grad_accum prompts, each with G completions")
    max_completion_length: int = Field(256, gt=0, description="most tokens per completion")
    temperature: float = Field(1.0, gt=0, description="sampling temperature (log-probabilities are taken at it too)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass of the rollouts")
    top_k: int = Field(0, ge=0, description="sample from the k most likely tokens; 0 = off")
    beta: float = Field(0.0, ge=0, description="weight of the KL term to the reference (the adapter switched off); "
                                               "0 = no reference pass")
    kl_bias_correction: bool = Field(True, description="multiply the KL term by the probability ratio (TRL's "
                                                       "use_bias_correction_kl): the unbiased reverse-KL gradient")
    epsilon: float = Field(0.2, gt=0, description="lower clip of the probability ratio (1 - epsilon)")
    epsilon_high: float | None = Field(None, gt=0, description="upper clip (1 + epsilon_high; default epsilon; DAPO: "
                                                               "0.28)")
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = Field(
        "dapo", description="grpo: each completion's mean over its tokens, averaged; dr_grpo: token sum / "
                            "(completions × max_completion_length); dapo: token sum / tokens of the global batch; "
                            "bnpo: as dapo")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="advantage = (reward − group mean) / std of the group, of the whole batch, or not "
                             "divided (none: Dr. GRPO)")
    mask_truncated_completions: bool = Field(False, description="leave completions cut at max_completion_length out "
                                                                "of the loss (DAPO)")
    dynamic_sample: bool = Field(False, description="replace each group whose rewards are all equal (no learning "
                                                    "signal) by the group of another training prompt, sampled anew "
                                                    "(DAPO's dynamic sampling; ms-swift --dynamic_sample)")
    max_resample_times: int = Field(3, ge=1, description="rounds of new prompts a step may sample for dynamic_sample; "
                                                         "groups still without signal then stay (advantage 0)")
    enable_thinking: bool | None = Field(None, description="thinking switch of templates that have one; the format "
                                                           "reward expects a think block when on")
    rewards: list[RewardSpec] = Field(default_factory=list, description="the rewards, summed with their weights")


def lift_train_dtype(data):
    """Old recipes set ``train.dtype``; it now lives in the model section as ``dtype``. Move it
    there before validation (a config that sets both to different values is refused)."""
    if not isinstance(data, dict):
        return data
    train = data.get("train")
    old = train.get("dtype") if isinstance(train, dict) else getattr(train, "dtype", None)
    if old is None:
        return data
    if old not in DTYPES:  # named as the user wrote it, not as the field it moves to
        raise ValueError(f"train.dtype: '{old}' is not a dtype: choose bf16, fp16, fp32 or auto (and set it as dtype: "
                         "train.dtype is deprecated)")
    if data.get("dtype") not in (None, old):
        raise ValueError(f"train.dtype ({old}) and dtype ({data['dtype']}) disagree: train.dtype is deprecated, "
                         "set dtype only")
    train = {**train, "dtype": None} if isinstance(train, dict) else train.model_copy(update={"dtype": None})
    return {**data, "dtype": old, "train": train}


class TrainConfig(ModelSection):
    adapter: str | None = Field(None, description="continue training this existing LoRA adapter (a run folder)")
    objective: Literal["sft", "dpo", "ipo", "simpo", "grpo"] = Field(
        "sft", description="what is learned: sft (supervised fine-tuning on the answers); dpo, ipo or simpo "
                           "(preference pairs: chosen/rejected answers, settings in pref); grpo (reinforcement "
                           "learning on prompts: completions sampled and rewarded in each step, settings in grpo)")
    method: Literal["lora", "full", "qlora"] = Field(
        "lora", description="lora: train an adapter; full: train every weight; qlora: an adapter on a 4-bit NF4 "
                            "base (CUDA + bitsandbytes)")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA settings (method: lora)")
    pref: PrefSettings = Field(default_factory=PrefSettings, description="preference settings (objective: dpo, ipo, "
                                                                         "simpo)")
    grpo: GRPOSettings = Field(default_factory=GRPOSettings, description="online RL settings (objective: grpo)")
    data: DataConfig = Field(default_factory=DataConfig, description="datasets, mixing and rendering")
    train: LoopSettings = Field(default_factory=LoopSettings, description="optimizer, schedule and loop")
    output_dir: str | None = Field(None, description="run folder (default: runs/<objective>-<time>)")
    resume: bool | Literal["auto"] = Field(False, description="true: continue from the run folder's last checkpoint; "
                                                              "auto: continue if there is one")
    nproc: int = Field(1, gt=0, description="data-parallel processes to launch (through torch.distributed / accelerate)")
    progress: bool = Field(True, description="show a progress bar")

    _lift_dtype = model_validator(mode="before")(lift_train_dtype)

    @model_validator(mode="after")
    def _check(self):
        if self.method == "full" and self.adapter:
            raise ValueError("adapter: continuing an adapter needs method: lora")
        if self.objective == "ipo" and self.pref.label_smoothing:
            raise ValueError("pref.label_smoothing: IPO has no label smoothing (dpo and simpo do); set it to 0")
        if self.objective == "grpo" and not self.grpo.rewards:
            raise ValueError("grpo.rewards: name at least one reward, e.g. [{name: multiply}]")
        if self.objective == "grpo" and self.nproc > 1:
            raise ValueError("nproc: grpo runs in one process for now; set nproc: 1")
        if self.objective == "grpo" and self.data.val_size:
            raise ValueError("data.val_size: grpo has no validation loss; measure it with an eval_tasks stage (or "
                             "`tunesmith eval tasks`) and remove val_size")
        if self.train.packing and self.objective != "sft":
            raise ValueError(f"train.packing: {self.objective} trains on pairs of padded rows; remove train.packing")
        if self.train.kernels == "liger" and self.device == "cpu":
            raise ValueError("train.kernels: liger needs a CUDA GPU; use auto or none on CPU")
        if self.train.attention in ("flex", "varlen") and self.device == "cpu":
            raise ValueError(f"train.attention: {self.train.attention} needs a CUDA GPU; use auto or sdpa on CPU")
        if self.train.attention in ("flex", "varlen") and self.objective != "sft":
            raise ValueError(f"train.attention: {self.train.attention} is for sft's packed rows; remove train.attention")
        if self.train.mlp_recompute and (self.method != "lora" or self.objective == "grpo"):
            raise ValueError("train.mlp_recompute: for a LoRA on sft, dpo, ipo or simpo; remove it")
        if self.train.mlp_recompute and (self.train.gradient_checkpointing or self.train.compile):
            raise ValueError("train.mlp_recompute: gradient_checkpointing and compile already recompute the layer; "
                             "use one of them")
        if self.train.optim != "adamw" and self.device == "cpu":
            raise ValueError(f"train.optim: {self.train.optim} needs a CUDA GPU (bitsandbytes); use adamw on CPU")
        return self

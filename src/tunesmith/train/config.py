"""The SFT recipe's schema: ``tunesmith train recipe.yaml lora.r=32 train.lr=2e-4``."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..config import Device, Section
from ..data.config import DataConfig
from ..models import DEFAULT_MODEL


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
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward to save memory")
    dtype: str | None = Field(None, description="bf16, fp16 or fp32 (default: bf16 on CUDA, fp32 on CPU)")
    log_every: int = Field(1, gt=0, description="log train metrics every N steps")
    eval_every: int | None = Field(None, gt=0, description="evaluate on the val split every N steps (and at the end)")
    save_every: int | None = Field(None, gt=0, description="checkpoint every N steps (and at the end)")
    keep_last: int = Field(2, gt=0, description="checkpoints to keep")


class TrainConfig(Section):
    model: str = Field(DEFAULT_MODEL, description="base: built-in alias, HF folder (a merged run too), .gguf or hub id")
    adapter: str | None = Field(None, description="continue training this existing LoRA adapter (a run folder)")
    method: Literal["lora", "full"] = Field("lora", description="lora: train an adapter; full: train every weight")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA settings (method: lora)")
    data: DataConfig = Field(default_factory=DataConfig, description="datasets, mixing and rendering")
    train: LoopSettings = Field(default_factory=LoopSettings, description="optimizer, schedule and loop")
    output_dir: str | None = Field(None, description="run folder (default: runs/<recipe name>-<time>)")
    resume: bool | Literal["auto"] = Field(False, description="true: continue from the run folder's last checkpoint; "
                                                              "auto: continue if there is one")
    nproc: int = Field(1, gt=0, description="data-parallel processes to launch (through torch.distributed / accelerate)")
    device: Device = Field(None, description="cpu, cuda, cuda:N, mps or auto (default: cuda if present)")
    trust_remote_code: bool = Field(False, description="run model code shipped with the model folder")
    progress: bool = Field(True, description="show a progress bar")

    @model_validator(mode="after")
    def _check(self):
        if self.method == "full" and self.adapter:
            raise ValueError("adapter: continuing an adapter needs method: lora")
        return self

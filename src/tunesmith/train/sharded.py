"""Whole (unsharded) training state under FSDP, through torch's public
``torch.distributed.checkpoint.state_dict`` API. Every process must call these together;
only the main process receives the tensors. Without FSDP the recipe reads parameters directly."""
from __future__ import annotations


def is_sharded(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def gather(model, optimizer) -> tuple[dict, dict]:
    """(trainable tensors, optimizer state) as full CPU tensors on the main process."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    return get_state_dict(model, optimizer, options=_options(cpu_offload=True, ignore_frozen_params=True))


def scatter(model, optimizer, tensors: dict, optim_state: dict) -> None:
    """Load full tensors (read by every process from the checkpoint) back into the shards."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    set_state_dict(model, optimizer, model_state_dict=tensors, optim_state_dict=optim_state,
                   options=_options(strict=False))

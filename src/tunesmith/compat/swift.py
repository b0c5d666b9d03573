"""ms-swift's flags: self-cognition for ``tunesmith identity``, ``--rlhf_type grpo`` for ``tunesmith train``."""
from __future__ import annotations

import sys

from ..errors import ConfigError

SWIFT_PAIRS = {"--model_name": "name", "--model_author": "author"}


def swift_argv(argv: list[str]) -> list[str]:
    """ms-swift's self-cognition flags → tunesmith identity overrides: ``--model_name 小黄 'Xiao
    Huang'`` (Chinese, then English), ``--model_author 魔搭 ModelScope``, ``--self_cognition_sample N``."""
    out, i = [], 0
    while i < len(argv):
        flag, eq, inline = argv[i].partition("=")
        if flag in SWIFT_PAIRS:
            key = SWIFT_PAIRS[flag]
            words = [inline] if eq else []
            j = i + 1
            while not eq and j < len(argv) and len(words) < 2 and not argv[j].startswith("-") \
                    and "=" not in argv[j]:
                words.append(argv[j])
                j += 1
            if not words:
                raise ConfigError(f"{flag} needs a value: {flag} <Chinese> <English> (or one value for both)")
            out += [f"names.{key}={words[0]}"] if len(words) == 1 else \
                [f"names.{key}_zh={words[0]}", f"names.{key}_en={words[1]}"]
            i = j
        elif flag == "--self_cognition_sample":
            value = inline if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            if not value:
                raise ConfigError("--self_cognition_sample needs a number of rows")
            out.append(f"identity_samples={value}")
            i += 1 if eq else 2
        else:
            out.append(argv[i])
            i += 1
    return out


# ``swift rlhf --rlhf_type grpo`` flags with a tunesmith equivalent → the train recipe's keys.
SWIFT_GRPO = {"--num_generations": "grpo.num_generations", "--max_completion_length": "grpo.max_completion_length",
              "--beta": "grpo.beta", "--epsilon": "grpo.epsilon", "--epsilon_high": "grpo.epsilon_high",
              "--loss_type": "grpo.loss_type", "--temperature": "grpo.temperature", "--top_p": "grpo.top_p",
              "--top_k": "grpo.top_k", "--scale_rewards": "grpo.scale_rewards",
              "--mask_truncated_completions": "grpo.mask_truncated_completions",
              "--dynamic_sample": "grpo.dynamic_sample", "--max_resample_times": "grpo.max_resample_times"}
# GRPO flags of ms-swift with none (said once, then left out): generation servers, several updates per
# batch, overlong filtering, sequence-level ratios, reward models and plugins.
SWIFT_GRPO_NONE = ("--use_vllm", "--vllm_mode", "--vllm_server_host", "--vllm_server_port",
                   "--vllm_gpu_memory_utilization", "--vllm_max_model_len", "--vllm_tensor_parallel_size",
                   "--tensor_parallel_size", "--sleep_level",
                   "--async_generate", "--move_model_batches", "--offload_model", "--offload_optimizer",
                   "--gc_collect_after_offload", "--num_iterations", "--steps_per_generation",
                   "--generation_batch_size",
                   "--overlong_filter", "--importance_sampling_level",
                   "--delta", "--top_entropy_quantile", "--reward_model", "--reward_model_plugin", "--external_plugins",
                   "--multi_turn_scheduler", "--max_turns", "--log_completions", "--repetition_penalty")


def swift_grpo_argv(argv: list[str]) -> list[str]:
    """ms-swift's ``--rlhf_type grpo`` flags → tunesmith train overrides (``objective=grpo``,
    ``grpo.*``); ``--reward_funcs`` names tunesmith rewards (tasks/rewards.py), ``--reward_weights``
    their weights. Without ``--rlhf_type`` the arguments pass through untouched. The flags and
    reward functions with no equivalent are printed once and left out."""
    if not any(a.partition("=")[0] == "--rlhf_type" for a in argv):
        return argv
    from ..tasks.rewards import REWARDS

    out, none, funcs, weights, i = [], [], [], [], 0
    while i < len(argv):
        flag, eq, inline = argv[i].partition("=")
        j = i + 1
        values = [inline] if eq else []
        if flag.startswith("--") and (flag in SWIFT_GRPO or flag in SWIFT_GRPO_NONE or flag in (
                "--rlhf_type", "--reward_funcs", "--reward_weights")):
            while not eq and j < len(argv) and not argv[j].startswith("--") and "=" not in argv[j]:
                values.append(argv[j])
                j += 1
            if not values and flag not in SWIFT_GRPO_NONE:
                raise ConfigError(f"{flag} needs a value")
        else:
            out.append(argv[i])
            i += 1
            continue
        if flag == "--rlhf_type":
            if values != ["grpo"]:
                raise ConfigError(f"--rlhf_type {' '.join(values)}: of ms-swift's RLHF types tunesmith maps grpo "
                                  "(dpo, ipo, simpo: objective=...; the others have no equivalent)")
            out.append("objective=grpo")
        elif flag == "--reward_funcs":
            funcs += values
        elif flag == "--reward_weights":
            weights += [float(v) for v in values]
        elif flag in SWIFT_GRPO:
            out.append(f"{SWIFT_GRPO[flag]}={values[0]}")
        else:
            none.append(flag)
        i = j
    if weights and len(weights) != len(funcs):
        raise ConfigError(f"--reward_weights: {len(weights)} weights for {len(funcs)} reward functions")
    kept = [(f, w) for f, w in zip(funcs, weights or [1.0] * len(funcs)) if f in REWARDS]
    none += [f"--reward_funcs {f}" for f in funcs if f not in REWARDS]
    if kept:
        out.append("grpo.rewards=[" + ", ".join(f"{{name: {f}, weight: {w}}}" for f, w in kept) + "]")
    if none:
        print(f"ms-swift: no tunesmith equivalent, left out: {', '.join(none)} (rewards tunesmith has: "
              f"{', '.join(REWARDS)})", file=sys.stderr)
    return out

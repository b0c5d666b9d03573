"""ms-swift's ``--rlhf_type grpo`` flags on ``tunesmith train``: the ones with an equivalent fill the
recipe's grpo section, the others are named once on stderr and left out."""
import pytest

from tunesmith import cli
from tunesmith.compat.swift import swift_grpo_argv
from tunesmith.config import build_config
from tunesmith.errors import ConfigError


def _cfg(argv):
    from tunesmith.train.config import TrainConfig

    return build_config(TrainConfig, [], dict(a.split("=", 1) for a in argv))


def test_grpo_flags_fill_the_recipe_and_the_rest_is_named(capsys):
    argv = swift_grpo_argv(["--rlhf_type", "grpo", "--num_generations", "4", "--max_completion_length=300",
                            "--beta", "0.04", "--epsilon", "0.2", "--epsilon_high", "0.28", "--loss_type", "dr_grpo",
                            "--temperature", "0.9", "--scale_rewards", "none", "--use_vllm", "true",
                            "--dynamic_sample", "true", "--max_resample_times", "2",
                            "--num_iterations", "2", "--reward_funcs", "multiply", "format", "accuracy",
                            "--reward_weights", "1.0", "0.5", "2", "train.lr=1e-5", "model=x"])
    err = capsys.readouterr().err
    assert "--use_vllm, --num_iterations, --reward_funcs accuracy" in err and "multiply, add" in err
    cfg = _cfg(argv)
    g = cfg.grpo
    assert cfg.objective == "grpo" and cfg.train.lr == 1e-5
    assert (g.num_generations, g.max_completion_length, g.beta, g.epsilon, g.epsilon_high, g.loss_type,
            g.temperature, g.scale_rewards) == (4, 300, 0.04, 0.2, 0.28, "dr_grpo", 0.9, "none")
    assert (g.dynamic_sample, g.max_resample_times) == (True, 2)
    assert [(r.name, r.weight) for r in g.rewards] == [("multiply", 1.0), ("format", 0.5)]


def test_without_rlhf_type_the_arguments_pass_untouched():
    argv = ["recipe.yaml", "--resume", "--temperature", "3", "lora.r=8"]
    assert swift_grpo_argv(argv) == argv


@pytest.mark.parametrize("argv,message", [
    (["--rlhf_type", "kto"], "tunesmith maps grpo"),
    (["--rlhf_type", "grpo", "--reward_funcs", "label", "--reward_weights", "1", "2"], "2 weights for 1 reward"),
    (["--rlhf_type", "grpo", "--beta"], "--beta needs a value")])
def test_bad_swift_flags_are_one_line(argv, message):
    with pytest.raises(ConfigError, match=message):
        swift_grpo_argv(argv)


def test_train_reads_swift_grpo_flags(tmp_path, capsys):
    # Understood flags get the recipe past validation to the (missing) model.
    code = cli.main(["train", f"model={tmp_path}/no-such-model", "--rlhf_type", "grpo", "--reward_funcs", "multiply",
                     "--num_generations", "4", f"output_dir={tmp_path}/run"])
    err = capsys.readouterr().err
    assert code != 0 and "no-such-model" in err and "Traceback" not in err

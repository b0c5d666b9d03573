"""Files on disk: written whole, with the user's umask (not mkstemp's 0600), outputs checked first;
and running out of GPU memory in training is one line naming what to lower."""
import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from tunesmith.errors import UserError
from tunesmith.fsutil import check_writable_dir, check_writable_file, write_atomic


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _recipe(tmp_path: Path, base: Path, out: Path, steps: int = 2) -> Path:
    data = tmp_path / "toy.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                     {"role": "assistant", "content": f"answer {i}"}]}) + "\n"
                            for i in range(8)))
    cfg = {"model": str(base), "output_dir": str(out), "progress": False,
           "data": {"datasets": [{"path": str(data)}], "cutoff_len": 96}, "lora": {"r": 2, "alpha": 4},
           "train": {"max_steps": steps, "batch_size": 2, "save_every": 1}}
    f = tmp_path / "recipe.yaml"
    f.write_text(yaml.safe_dump(cfg))
    return f


def _modes(root: Path) -> tuple[set, set]:
    files = {oct(stat.S_IMODE(p.stat().st_mode)) for p in root.rglob("*") if p.is_file()}
    dirs = {oct(stat.S_IMODE(p.stat().st_mode)) for p in [root, *root.rglob("*")] if p.is_dir()}
    return files, dirs


def test_write_atomic_follows_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no temp file left


def test_run_and_merged_folders_are_0644_and_0755(tiny_model, tmp_path, umask022):
    from tunesmith.config import build_config
    from tunesmith.export.merge import MergeConfig, merge
    from tunesmith.train.config import TrainConfig
    from tunesmith.train import train

    run = tmp_path / "run"
    assert train(build_config(TrainConfig, [str(_recipe(tmp_path, tiny_model, run))])) == 0
    assert _modes(run) == ({"0o644"}, {"0o755"})
    assert merge(MergeConfig(model=str(tiny_model), adapter=[str(run)], out=str(tmp_path / "merged"))) == 0
    assert _modes(tmp_path / "merged") == ({"0o644"}, {"0o755"})


def test_out_of_memory_in_training_is_one_line(tiny_model, tmp_path):
    import torch

    from tunesmith.config import build_config
    from tunesmith.train.config import TrainConfig
    from tunesmith.train.loop import fit, setup

    run = setup(build_config(TrainConfig, [str(_recipe(tmp_path, tiny_model, tmp_path / "run", steps=3))]))

    def oom(module, args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    run.accelerator.unwrap_model(run.model).base_model.model.model.layers[0].register_forward_pre_hook(oom)
    with pytest.raises(UserError) as e:
        fit(run)
    msg = str(e.value)
    assert "\n" not in msg
    assert "out of memory at step 1 on a micro-batch of 2 rows × " in msg
    for knob in ("train.batch_size (now 2", "data.cutoff_len (now 96)", "train.gradient_checkpointing"):
        assert knob in msg
    assert not (tmp_path / "run" / "adapter_model.safetensors").exists()  # not a finished-looking run


@pytest.mark.parametrize("bad,expected", [("/proc/x/out.txt", "cannot write"), ("{dir}", "is a folder"),
                                          ("{file}/x.txt", "is a file, not a folder")])
def test_check_writable_file(tmp_path, bad, expected):
    (tmp_path / "f").write_text("keep")
    with pytest.raises(UserError, match=expected):
        check_writable_file(bad.format(dir=tmp_path, file=tmp_path / "f"), "output")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # the probe left nothing behind
    check_writable_file(tmp_path / "new" / "deeper" / "x.txt")  # folders to be made are fine
    assert not (tmp_path / "new").exists()  # ... and not made by the check


def test_check_writable_dir(tmp_path):
    (tmp_path / "f").write_text("keep")
    with pytest.raises(UserError, match="is a file"):
        check_writable_dir(tmp_path / "f")
    with pytest.raises(UserError, match="cannot write"):
        check_writable_dir("/proc/x/run")
    check_writable_dir(tmp_path / "a" / "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # reaped: no process has this pid now
    return p.pid


def test_build_dir_for_removes_only_our_dead_runs_build_folders(tmp_path):
    from tunesmith.fsutil import build_dir_for

    out = tmp_path / "out"
    dead, live = _dead_pid(), os.getppid()
    mine = build_dir_for(out)
    host = mine.name.rpartition("@")[2]
    assert mine == tmp_path / f".out.tmp-{os.getpid()}@{host}" and host
    names = {"stale": f".out.tmp-{dead}@{host}", "live": f".out.tmp-{live}@{host}",
             "other host": f".out.tmp-{dead}@{host}x", "no host": f".out.tmp-{dead}",
             "other out": f".out2.tmp-{dead}@{host}", "not a pid": f".out.tmp-x{dead}@{host}",
             "a file": f".out.tmp-{dead + 1}@{host}"}
    for what, name in names.items():
        if what == "a file":
            (tmp_path / name).write_text("keep")
            continue
        (tmp_path / name).mkdir()
        (tmp_path / name / "model-f16.gguf").write_bytes(b"GGUF" + b"\0" * 100)  # a truncated file of a killed run
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / f".out.tmp-{dead + 2}@{host}").symlink_to(tmp_path / "elsewhere")  # not ours to follow
    assert build_dir_for(out) == mine
    left = {p.name for p in tmp_path.iterdir()}
    assert names["stale"] not in left
    assert {n for w, n in names.items() if w != "stale"} | {"elsewhere", f".out.tmp-{dead + 2}@{host}"} == left
    assert build_dir_for(tmp_path / "nowhere" / "out").parent == tmp_path / "nowhere"  # no folder yet: nothing to do

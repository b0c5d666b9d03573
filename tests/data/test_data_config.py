"""``data.datasets`` and ``data.path``: the short forms a newcomer types, and one line for wrong ones."""
from __future__ import annotations

import pytest

from tunesmith.config import build_config
from tunesmith.errors import ConfigError
from tunesmith.fsutil import save_config
from tunesmith.train.config import TrainConfig

FORMS = "--data.datasets a.jsonl,b.jsonl (or --data.path a.jsonl)"


def paths(cfg) -> list[str]:
    return [d.path for d in cfg.data.datasets]


def test_short_forms_become_datasets(tmp_path):
    assert paths(build_config(TrainConfig, overrides={"data.datasets": "my.jsonl"})) == ["my.jsonl"]
    assert paths(build_config(TrainConfig, overrides={"data.datasets": "a.jsonl, b.jsonl"})) == ["a.jsonl", "b.jsonl"]
    assert paths(build_config(TrainConfig, overrides={"data.path": "a.jsonl,b.jsonl"})) == ["a.jsonl", "b.jsonl"]
    y = tmp_path / "r.yaml"
    y.write_text("data:\n  datasets: x.jsonl\n")
    assert paths(build_config(TrainConfig, [str(y)])) == ["x.jsonl"]
    y.write_text("data:\n  datasets: [x.jsonl, {path: y.json, format: alpaca}]\n")
    cfg = build_config(TrainConfig, [str(y)], {"data.path": "first.jsonl"})
    assert paths(cfg) == ["first.jsonl", "x.jsonl", "y.json"] and cfg.data.datasets[2].format == "alpaca"
    # The saved config lists each dataset once and reads back the same (path is not kept beside datasets).
    save_config(cfg, tmp_path / "saved.yaml")
    again = build_config(TrainConfig, [str(tmp_path / "saved.yaml")])
    assert paths(again) == paths(cfg) and again.data.path is None


@pytest.mark.parametrize("yaml_text, where", [
    ("data:\n  datasets: 5\n", "data.datasets: expects a list of datasets, not int"),
    ("data:\n  datasets: [a.jsonl, 7]\n", "data.datasets: item 1 (7) is not a dataset"),
    ("data:\n  path: [a.jsonl]\n", "data.path expects a file name or a comma list of them"),
])
def test_a_wrong_form_is_one_line_that_shows_the_working_ones(tmp_path, yaml_text, where):
    y = tmp_path / "r.yaml"
    y.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        build_config(TrainConfig, [str(y)])
    msg = str(e.value)
    assert "\n" not in msg and where in msg and FORMS in msg and "Value error" not in msg, msg


def test_help_shows_the_forms(capsys):
    from tunesmith.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--data.datasets a.jsonl,b.jsonl (or --data.path a.jsonl)" in text
    assert "datasets: [{path: a.jsonl}, {path: b.jsonl, format: alpaca}]" in text
    assert "--data.path V" in text

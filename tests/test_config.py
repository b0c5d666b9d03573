import pytest
from pydantic import Field

from tunesmith.config import Section, build_config, nearest_key
from tunesmith.fsutil import save_config
from tunesmith.errors import ConfigError


class Lora(Section):
    r: int = Field(8, gt=0, description="rank")
    alpha: int = Field(16, description="alpha")
    target_modules: list[str] = Field(default_factory=lambda: ["all-linear"], description="modules")


class Train(Section):
    lr: float = Field(1e-4, gt=0, description="learning rate")
    name: str = Field("x", description="a string that looks like a number on the CLI")


class Cfg(Section):
    lora: Lora = Field(default_factory=Lora)
    train: Train = Field(default_factory=Train)
    model: str = Field("m", description="model")


def test_sources_last_wins(tmp_path):
    y = tmp_path / "r.yaml"
    y.write_text("lora:\n  r: 4\n  alpha: 7\nmodel: from-yaml\n")
    cfg = build_config(Cfg, [str(y)], {"lora.r": "32", "train.lr": "2e-4", "train.name": "123",
                                       "lora.target_modules": "q_proj,v_proj"})
    assert cfg.lora.r == 32 and cfg.lora.alpha == 7 and cfg.model == "from-yaml"
    assert cfg.train.lr == pytest.approx(2e-4)
    assert cfg.train.name == "123"  # strings stay strings
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]


def test_unknown_key_suggests_nearest(tmp_path):
    with pytest.raises(ConfigError, match=r"'lora\.rr'.*did you mean 'lora\.r'") as e:
        build_config(Cfg, [], {"lora.rr": "8"})
    assert e.value.exit_code == 2
    y = tmp_path / "r.yaml"
    y.write_text("lora:\n  alhpa: 3\n")
    with pytest.raises(ConfigError, match=rf"lora\.alhpa' in {y}.*'lora\.alpha'"):
        build_config(Cfg, [str(y)])
    assert nearest_key("lr", Cfg) == "train.lr"


def test_bad_values_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.lr: Input should be greater than 0"):
        build_config(Cfg, [], {"train.lr": "0"})
    y = tmp_path / "bad.yaml"
    y.write_text("lora: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: not valid YAML"):
        build_config(Cfg, [str(y)])
    with pytest.raises(ConfigError, match="config file not found"):
        build_config(Cfg, [str(tmp_path / "missing.yaml")])


def test_saved_config_round_trips(tmp_path):
    cfg = build_config(Cfg, [], {"lora.r": "12"})
    save_config(cfg, tmp_path / "config.yaml")
    again = build_config(Cfg, [str(tmp_path / "config.yaml")])
    assert again == cfg


def test_union_field_error_names_the_field():
    from typing import Literal

    class R(Section):
        resume: bool | Literal["auto"] = Field(False, description="resume")

    with pytest.raises(ConfigError) as e:
        build_config(R, [], {"resume": "atuo"})
    assert str(e.value).startswith("config: resume: 'atuo' is not valid: ") and "'auto'" in str(e.value)

"""What a SPEC on the command line names: a data file or folder, a folder with a
LLaMA-Factory dataset_info.json (all of it, or ``DIR:name[,name…]``), or a recipe YAML
whose ``data:`` section lists the datasets."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import build_config, read_yaml
from ..errors import ConfigError, UserError
from .config import DataConfig, DatasetConfig
from .registry import registry_names


@dataclass
class Expanded:
    """The datasets of one SPEC. A recipe's relative paths are resolved later, from the
    current folder, exactly as ``train`` resolves them (load.resolve_path)."""

    datasets: list[DatasetConfig]
    data: DataConfig | None = None   # the recipe's data section, when the spec is a recipe
    keys: list[str] | None = None    # the recipe key of each dataset, for errors

    @property
    def dataset_dir(self) -> str | None:
        return self.data.dataset_dir if self.data else None

    def key(self, i: int) -> str:
        return self.keys[i] if self.keys else "dataset"


def read_recipe_data(path: Path) -> DataConfig:
    """The ``data:`` section of a recipe YAML. Raises ConfigError."""
    raw = read_yaml(path)
    section = raw.get("data")
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: no data: section (a recipe lists its datasets under data.datasets)")
    try:
        return build_config(DataConfig, values=section)
    except ConfigError as e:
        raise ConfigError(f"{path}: data: {str(e).removeprefix('config: ')}") from None


def expand_spec(spec: str, fmt: str = "auto") -> Expanded:
    """The datasets one SPEC names. Raises UserError when it names nothing."""
    path = Path(spec).expanduser()
    if path.suffix.lower() in (".yaml", ".yml") and path.is_file():
        data = read_recipe_data(path)
        if not data.datasets:
            raise UserError(f"{spec}: data.datasets is empty")
        return Expanded(list(data.datasets), data, [f"{spec}: data.datasets[{i}]" for i in range(len(data.datasets))])
    if path.is_dir() and (path / "dataset_info.json").is_file():
        return Expanded([DatasetConfig(dataset_info=str(path), name=n) for n in registry_names(path)])
    if path.exists():
        return Expanded([DatasetConfig(path=str(path), format=fmt)])
    folder, sep, names = spec.rpartition(":")
    if sep and folder and Path(folder).expanduser().is_dir():
        return Expanded([DatasetConfig(dataset_info=folder, name=n.strip()) for n in names.split(",") if n.strip()])
    raise UserError(f"{spec}: no such file or folder (a SPEC is a data file or folder, a folder with "
                    "dataset_info.json, DIR:name, or a recipe .yaml)")

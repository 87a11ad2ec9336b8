"""dasrlib.config: typed loading, unknown keys, coercion, hashing, documented defaults."""

from __future__ import annotations

import enum
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from dasrlib.config import (
    ConfigError,
    config_hash,
    describe,
    flat_section,
    load_config,
    save_config,
    to_dict,
)


class Kind(str, enum.Enum):
    WEAK = "weak"
    SEVERE = "severe"


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    lr: float = field(default=1e-4, metadata={"help": "Adam learning rate"})
    betas: tuple[float, float] = field(default=(0.9, 0.99), metadata={"help": "Adam betas"})


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    name: str = field(metadata={"help": "run name"})
    iterations: int = field(default=1000, metadata={"help": "training iterations"})
    optim: OptimConfig = field(default_factory=OptimConfig, metadata={"help": "optimiser"})
    level: Kind = field(default=Kind.WEAK, metadata={"help": "degradation level"})
    sizes: tuple[int, ...] = field(default=(64, 128), metadata={"help": "patch sizes"})
    probs: dict[str, float] = field(
        default_factory=lambda: {"weak": 0.5, "severe": 0.5}, metadata={"help": "level mix"}
    )
    precision: Literal["fp32", "bf16"] = field(default="fp32", metadata={"help": "precision"})
    out: Path | None = field(default=None, metadata={"help": "output folder"})


def test_unknown_key_rejected_with_its_name() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(RunConfig, {"name": "a", "iteratoins": 5})
    message = str(info.value)
    assert "'iteratoins'" in message and "RunConfig" in message
    assert "did you mean 'iterations'" in message


def test_unknown_nested_key_rejected() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'momentum' for OptimConfig"):
        load_config(RunConfig, {"name": "a", "optim": {"momentum": 0.9}})


def test_yaml_load_coerces_types(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "name: demo\n"
        "iterations: 5e5\n"  # YAML 1.1 reads this as a string
        "optim:\n  lr: 2e-4\n  betas: [0.5, 0.999]\n"
        "level: severe\n"
        "sizes: [32, 48, 64]\n"
        "out: results/x\n"
    )
    config = load_config(RunConfig, path)
    assert config.iterations == 500_000 and isinstance(config.iterations, int)
    assert config.optim == OptimConfig(lr=2e-4, betas=(0.5, 0.999))
    assert config.level is Kind.SEVERE
    assert config.sizes == (32, 48, 64)
    assert config.out == Path("results/x")


def test_json_load_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"name": "j", "optim": {"lr": 0.1}}))
    config = load_config(RunConfig, path, overrides={"optim.lr": "1e-3", "precision": "bf16"})
    assert config.optim.lr == pytest.approx(1e-3) and config.precision == "bf16"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({}, "missing required key 'name'"),
        ({"name": "a", "iterations": 1.5}, "RunConfig.iterations: expected an integer"),
        ({"name": "a", "optim": {"betas": [0.9]}}, "RunConfig.optim.betas: expected 2 items"),
        ({"name": "a", "level": "medium"}, "RunConfig.level: 'medium' is not one of"),
        ({"name": "a", "precision": "fp8"}, "RunConfig.precision"),
        ({"name": 3}, "RunConfig.name: expected a string"),
    ],
)
def test_bad_values_name_the_field(data: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[")):
        load_config(RunConfig, data)


def test_configs_are_frozen() -> None:
    config = load_config(RunConfig, {"name": "a"})
    with pytest.raises(AttributeError):
        config.name = "b"  # type: ignore[misc]


def test_hash_stable_and_sensitive(tmp_path: Path) -> None:
    a = load_config(RunConfig, {"name": "a", "probs": {"weak": 0.5, "severe": 0.5}})
    b = load_config(RunConfig, {"probs": {"severe": 0.5, "weak": 0.5}, "name": "a"})
    assert config_hash(a) == config_hash(b)
    assert len(config_hash(a)) == 12
    assert config_hash(a) != config_hash(load_config(RunConfig, {"name": "a", "iterations": 7}))
    # The same value in a fresh interpreter (no dependence on hash seeds or id()).
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import test_config as t; "
        "from dasrlib.config import config_hash, load_config; "
        "print(config_hash(load_config(t.RunConfig, {'name': 'a'})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == config_hash(load_config(RunConfig, {"name": "a"}))


def test_save_and_reload_round_trip(tmp_path: Path) -> None:
    config = load_config(RunConfig, {"name": "a", "level": "severe", "out": "o"})
    save_config(config, tmp_path / "c.yaml")
    save_config(config, tmp_path / "c.json")
    assert load_config(RunConfig, tmp_path / "c.yaml") == config
    assert load_config(RunConfig, tmp_path / "c.json") == config
    assert to_dict(config)["level"] == "severe" and to_dict(config)["sizes"] == [64, 128]


def test_defaults_documented() -> None:
    table = describe(RunConfig)
    assert "| `optim.lr` | float | `0.0001` | Adam learning rate |" in table
    assert "| `name` | str | required | run name |" in table
    assert "| `sizes` | tuple[int, ...] | `(64, 128)` | patch sizes |" in table
    lines = table.splitlines()
    assert len(lines) == 2 + 9  # header, rule, one row per leaf field


@dataclass(frozen=True, kw_only=True)
class FlatRunConfig:
    name: str = field(default="a", metadata={"help": "run name"})
    optim: OptimConfig = field(default_factory=OptimConfig, metadata=flat_section("optimiser"))


def test_flat_section_is_nested_in_memory_and_flat_in_files(tmp_path: Path) -> None:
    config = load_config(FlatRunConfig, {"name": "b", "lr": "3e-4"})
    assert config.optim.lr == 3e-4 and config.optim.betas == (0.9, 0.99)
    assert to_dict(config) == {"name": "b", "lr": 3e-4, "betas": [0.9, 0.99]}
    # A mapping under the section's name, and a dotted override, reach the same field.
    assert load_config(FlatRunConfig, {"name": "b", "optim": {"lr": 3e-4}}) == config
    assert load_config(FlatRunConfig, {"name": "b"}, overrides={"optim.lr": 3e-4}) == config
    # A flat override beats the value the instance carries (to_dict writes it flat).
    assert load_config(FlatRunConfig, config, overrides={"optim.lr": 1.0}).optim.lr == 1.0
    save_config(config, tmp_path / "c.yaml")
    assert load_config(FlatRunConfig, tmp_path / "c.yaml") == config
    assert "| `lr` | float | `0.0001` | Adam learning rate |" in describe(FlatRunConfig)
    with pytest.raises(ConfigError, match=r"unknown key 'lrr'.*did you mean 'lr'"):
        load_config(FlatRunConfig, {"lrr": 1.0})


def test_flat_section_key_collision_is_a_definition_error() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Clash:
        lr: float = 1.0
        optim: OptimConfig = field(default_factory=OptimConfig, metadata=flat_section("o"))

    with pytest.raises(TypeError, match="'lr' appears twice"):
        load_config(Clash, {})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "-inf", "nan"])
def test_non_finite_numbers_are_refused_naming_the_key(value: object) -> None:
    with pytest.raises(ConfigError, match=r"OptimConfig\.lr: expected a finite number"):
        load_config(OptimConfig, {"lr": value})


def test_require_range_names_the_field_and_the_bounds() -> None:
    from dasrlib.config import require_range

    optim = load_config(OptimConfig, {"lr": -1.0})
    with pytest.raises(ConfigError, match=r"OptimConfig\.lr must be in \(0, inf\), got -1\.0"):
        require_range(optim, "lr", low=0.0, low_open=True)
    require_range(optim, "lr", low=-1.0, high=0.0)  # inside: no error


@pytest.mark.parametrize("problem", ["missing", "folder", "malformed", "list", "binary"])
def test_read_config_file_errors_name_the_file(tmp_path: Path, problem: str) -> None:
    from dasrlib.config import read_config_file

    path = tmp_path / "run.yaml"
    if problem == "folder":
        path.mkdir()
    elif problem == "malformed":
        path.write_text("lr: [1,\n")
    elif problem == "list":
        path.write_text("- 1\n")
    elif problem == "binary":
        path.write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(ConfigError, match=re.escape(repr(str(path)))):
        read_config_file(path)

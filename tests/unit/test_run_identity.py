"""Run identity: config and resume hashes of existing runs are pinned, and a new config field
with a default changes none of them; the run folder is one property."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dasrlib.config import HASH_FORMAT, config_hash, flat_section, load_config, to_dict
from dasrlib.experiments import table2
from dasrlib.train.config import (
    FORMAT_1_FIELDS,
    ModelSection,
    TrainConfig,
    config_from_parameters,
    resume_hash,
)

TINY_UNIT = dict(  # tests/unit/test_train.py's TINY with its out_dir and name
    num_feat=4,
    num_block=1,
    num_experts=2,
    batch_size=2,
    patch_size=32,
    queue_size=4,
    data_block_iters=2,
    val_images=1,
    val_crop=32,
    val_levels=("bicubic", "severe"),
    disc_num_feat=4,
    allow_random_vgg_for_tests=True,
    progress=False,
    log_every=1,
    val_every=100,
    out_dir="runs",
    name="run",
)

# results/campaign/runs/pretrain_from0/run.json, fields off their defaults; its data_root is the
# campaign's optional external data folder of training images
CAMPAIGN_PRETRAIN = {
    "stage": "pretrain",
    "data_root": "../shared/data/train",
    "batch_size": 16,
    "patch_size": 128,
    "val_images": 8,
    "perceptual_weight": 0.0,
    "adversarial_weight": 0.0,
    "lr": 0.0002,
    "iterations": 30000,
    "time_limit_minutes": 128.16266427558335,
    "val_every": 2500,
    "checkpoint_every": 500,
    "name": "pretrain_from0",
    "out_dir": "results/campaign/runs",
    "export_dtype": "fp16",
    "progress": False,
}

PINNED: dict[str, tuple[dict[str, Any], str, str]] = {
    # name: (flat fields, config_hash, resume_hash), computed before the growth-safe hash
    "default": ({}, "6c45fb164d7c", "6c45fb164d7c"),
    "dasr_stage": (
        {
            "stage": "dasr",
            "init_from": "results/runs/pretrain",
            "iterations": 250000,
            "lr_milestones": (125000,),
            "name": "dasr",
        },
        "e6ce8f352ec6",
        "2f2ac8920a61",
    ),
    "baseline_rrdb": (
        {"stage": "baseline", "backbone": "rrdb", "lr": 2e-4, "name": "x", "iterations": 7},
        "89708140f87c",
        "3ef5531ec799",
    ),
    "tiny_unit": (TINY_UNIT, "daed04a67287", "6d3c3c27a66e"),
    "tiny_pretrain_edsr": (
        {
            "stage": "pretrain",
            "backbone": "edsr",
            "num_feat": 4,
            "num_block": 1,
            "batch_size": 2,
            "patch_size": 32,
            "name": "p",
        },
        "0e67170799ae",
        "2ebf0b8aa460",
    ),
    "campaign_pretrain_from0": (CAMPAIGN_PRETRAIN, "96294088c9b3", "2cce5e392b4a"),
}


@pytest.mark.parametrize("case", sorted(PINNED))
def test_hashes_of_existing_runs_are_pinned(case: str) -> None:
    values, wanted_config_hash, wanted_resume_hash = PINNED[case]
    config = config_from_parameters(values)
    assert (config_hash(config), resume_hash(config)) == (wanted_config_hash, wanted_resume_hash)


def test_table2_run_names_are_pinned() -> None:
    """Table 2's run names carry the resume hash: the planned names of a small budget."""
    budget = {"iterations": 100, "batch_size": 4, "patch_size": 64, "out_dir": "results/runs"}
    plan = table2.plan({**budget, "num_feat": 16}, dasr_pretrain_iterations=50)
    names = {key: [config.run.name for config in stages] for key, stages in plan.items()}
    assert names == {
        "SRResNet": ["table2_srresnet_1ae737d2"],
        "EDSR": ["table2_edsr_337874e8"],
        "RRDB": ["table2_rrdb_37ff37a4"],
        "SwinIR": ["table2_swinir_704f0b0d"],
        "DASR": ["table2_dasr_pretrain_879a48ff", "table2_dasr_335b70da"],
    }
    assert plan["DASR"][1].model.init_from == "results/runs/table2_dasr_pretrain_879a48ff"
    assert config_hash(plan["DASR"][1]) == "5666eff2a9c5"


def test_the_campaign_run_record_hashes_as_recorded() -> None:
    """The full flat config a run.json holds (every field written) gives the recorded hashes."""
    record = config_from_parameters(CAMPAIGN_PRETRAIN)
    full = to_dict(record)
    assert set(FORMAT_1_FIELDS) <= set(full) and len(set(FORMAT_1_FIELDS)) == 58
    assert resume_hash(config_from_parameters(json.loads(json.dumps(full)))) == "2cce5e392b4a"


# A grown TrainConfig: one new top-level field and one new model field, both with defaults. The
# class keeps the name TrainConfig (the hash covers the class name), as an edited class would.
@dataclass(frozen=True, kw_only=True)
class _GrownModel(ModelSection):
    expert_dropout: float = field(default=0.0, metadata={"help": "a hypothetical new field"})


_GrownModel.__qualname__ = "ModelSection"


@dataclass(frozen=True, kw_only=True)
class _GrownConfig(TrainConfig):
    warmup_scheme: str = field(default="none", metadata={"help": "a hypothetical new field"})
    model: _GrownModel = field(  # type: ignore[assignment]
        default_factory=_GrownModel, metadata=flat_section("networks")
    )


_GrownConfig.__qualname__ = "TrainConfig"


@pytest.mark.parametrize("case", sorted(PINNED))
def test_a_new_field_with_a_default_changes_no_hash(case: str) -> None:
    values, wanted_config_hash, wanted_resume_hash = PINNED[case]
    grown = load_config(_GrownConfig, values)
    assert {"warmup_scheme", "expert_dropout"} <= set(to_dict(grown))
    grown_resume = config_hash(
        dataclasses.replace(grown, schedule=type(grown.schedule)(), run=type(grown.run)())
    )
    assert (config_hash(grown), grown_resume) == (wanted_config_hash, wanted_resume_hash)
    # Set away from its default, a new field is part of the identity (tagged with the format).
    moved = {
        config_hash(load_config(_GrownConfig, {**values, k: v}))
        for k, v in (("warmup_scheme", "linear"), ("expert_dropout", 0.1))
    }
    assert len(moved) == 2 and wanted_config_hash not in moved


def test_a_class_without_legacy_fields_hashes_its_non_defaults_with_the_format_tag() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Small:
        a: int = 1

    @dataclass(frozen=True, kw_only=True)
    class SmallGrown:
        a: int = 1
        b: str = "x"

    SmallGrown.__qualname__ = Small.__qualname__
    assert config_hash(Small()) == config_hash(SmallGrown())
    assert config_hash(Small(a=2)) == config_hash(SmallGrown(a=2)) != config_hash(Small())
    assert config_hash(SmallGrown(b="y")) != config_hash(SmallGrown())
    assert HASH_FORMAT == 2


def test_the_run_folder_is_one_property(tmp_path: Path) -> None:
    config = config_from_parameters({"out_dir": "results/runs", "name": "a"})
    assert config.run.path == "results/runs/a"
    absolute = config.replace(out_dir=str(tmp_path))
    assert absolute.run.path == f"{tmp_path.as_posix()}/a"

"""The experiments' training runner: planning, the naming rule, shared pretraining, run.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dasrlib.config import to_dict
from dasrlib.experiments.runs import (
    NetworkRun,
    Pretraining,
    RunNaming,
    plan_runs,
)
from dasrlib.train.state import RunRecord

BUDGET = {"iterations": 3, "batch_size": 2, "patch_size": 32, "out_dir": "runs", "seed": 4}
PRETRAINING = Pretraining(role="pretrain_srresnet", backbone="srresnet")
NETWORKS = {
    "a": NetworkRun(role="a", fields={"stage": "dasr", "num_experts": 3}, pretraining=PRETRAINING),
    "b": NetworkRun(role="b", fields={"stage": "dasr", "num_experts": 4}, pretraining=PRETRAINING),
    "plain": NetworkRun(role="plain", fields={"stage": "baseline", "backbone": "edsr"}),
}


def test_networks_on_one_backbone_share_one_pretraining_run() -> None:
    plan = plan_runs(BUDGET, NETWORKS, pretrain_iterations=2, naming=RunNaming(prefix="x"))
    assert [len(stages) for stages in plan.values()] == [2, 2, 1]
    (pre_a, a), (pre_b, b) = plan["a"], plan["b"]
    assert to_dict(pre_a) == to_dict(pre_b)
    pre = to_dict(pre_a)
    assert (pre["name"], pre["stage"], pre["iterations"], pre["init_from"]) == (
        "x_pretrain_srresnet",
        "pretrain",
        2,
        None,
    )
    for config, experts in ((a, 3), (b, 4)):
        values = to_dict(config)
        assert values["init_from"] == "runs/x_pretrain_srresnet" == pre_a.run.path
        assert values["num_experts"] == experts and values["iterations"] == 3
    plain = to_dict(plan["plain"][0])
    assert plain["name"] == "x_plain" and plain["init_from"] is None


def test_without_pretraining_a_dasr_starts_from_random_experts(caplog) -> None:
    plan = plan_runs(BUDGET, NETWORKS, pretrain_iterations=0, naming=RunNaming(prefix="x"))
    assert all(len(stages) == 1 for stages in plan.values())
    assert to_dict(plan["a"][0])["init_from"] is None
    assert "random experts" in caplog.text


def test_hashed_names_follow_the_resume_fields_only() -> None:
    naming = RunNaming(prefix="t", hashed=True)
    first = plan_runs(BUDGET, NETWORKS, pretrain_iterations=1, naming=naming)
    longer = plan_runs({**BUDGET, "iterations": 9}, NETWORKS, pretrain_iterations=1, naming=naming)
    other = plan_runs({**BUDGET, "seed": 5}, NETWORKS, pretrain_iterations=1, naming=naming)
    name = to_dict(first["plain"][0])["name"]
    assert name.startswith("t_plain_") and len(name) == len("t_plain_") + 8
    assert to_dict(longer["plain"][0])["name"] == name
    assert to_dict(other["plain"][0])["name"] != name


def test_unknown_budget_fields_are_rejected() -> None:
    from dasrlib.config import ConfigError

    with pytest.raises(ConfigError, match="iteratons"):
        plan_runs({"iteratons": 1}, NETWORKS, pretrain_iterations=1, naming=RunNaming("x"))


def test_run_record_reads_run_json(tmp_path: Path) -> None:
    record = {
        "status": "finished",
        "iteration": 7,
        "iterations_this_call": 3,
        "wall_time_s": 1.5,
        "it_per_s_this_call": 2.0,
        "config_hash": "abc",
        "config": {"init_from": "runs/p", "name": "r"},
        "other": 1,
    }
    (tmp_path / "run.json").write_text(json.dumps(record))
    read = RunRecord.read(tmp_path)
    assert (read.status, read.iteration, read.iterations_this_call) == ("finished", 7, 3)
    assert (read.config_hash, read.init_from, read.wall_time_s) == ("abc", "runs/p", 1.5)
    (tmp_path / "run.json").write_text("[1]")
    with pytest.raises(ValueError, match="run.json"):
        RunRecord.read(tmp_path)

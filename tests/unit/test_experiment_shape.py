"""Every experiment has the one shape: ``plan(...) -> Plan`` and ``tabulate(runs, testset_dir,
*, ...) -> TableResult``; the one runner (`run_plan`) reuses a finished run instead of training it
again, and says so in the log."""

from __future__ import annotations

import inspect
import logging
import typing
from pathlib import Path
from types import ModuleType

import pytest

from dasrlib.experiments import ablations, runs, table1, table2
from dasrlib.experiments.runs import Plan, TrainedRun, run_plan
from dasrlib.tables import TableResult
from dasrlib.train.config import TrainConfig
from dasrlib.train.state import RunRecord

EXPERIMENTS: tuple[ModuleType, ...] = (table1, table2, ablations)
"""Every experiment module; a new one is added here and gets these tests."""

TINY = {
    "iterations": 1,
    "batch_size": 1,
    "patch_size": 32,
    "num_feat": 4,
    "num_block": 1,
    "device": "cpu",
    "perceptual_weight": 0.0,
    "adversarial_weight": 0.0,
    "val_images": 0,
    "queue_size": 2,
    "progress": False,
}


def _tiny_plans(tmp_path: Path) -> dict[str, Plan]:
    """Each experiment's plan of a tiny budget (Table 1's: nothing to train)."""
    budget = {**TINY, "out_dir": str(tmp_path / "runs")}
    ablation_budget = ablations.budget_config(
        iterations=1,
        batch_size=1,
        patch_size=32,
        seed=0,
        device="cpu",
        data_root=None,
        out_dir=str(tmp_path / "runs"),
        overrides={"num_feat": 4, "num_block": 1, "predictor_feat": 4},
    )
    return {
        "table1": table1.plan(),
        "table2": table2.plan(budget, methods=["SRResNet", "DASR"], dasr_pretrain_iterations=1),
        "ablations": ablations.plan(
            ablation_budget, variants=["dasr", "dasr_moe"], pretrain_iterations=1
        ),
    }


@pytest.mark.parametrize("module", EXPERIMENTS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_every_experiment_offers_plan_and_tabulate_of_one_shape(module: ModuleType) -> None:
    assert {"plan", "tabulate"} <= set(module.__all__)
    plan_hints = typing.get_type_hints(module.plan)
    assert plan_hints["return"] == Plan == dict[str, list[TrainConfig]]
    tabulate_hints = typing.get_type_hints(module.tabulate)
    assert tabulate_hints["return"] is TableResult
    parameters = list(inspect.signature(module.tabulate).parameters.values())
    assert [p.name for p in parameters[:2]] == ["runs", "testset_dir"]
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in parameters[:2])
    assert all(p.kind is p.KEYWORD_ONLY for p in parameters[2:])  # everything else by name
    assert {"levels", "device", "lpips"} <= {p.name for p in parameters}
    assert typing.get_origin(tabulate_hints["runs"]) is not None  # a mapping of runs
    assert TrainedRun in typing.get_args(typing.get_args(tabulate_hints["runs"])[1]) or (
        typing.get_args(tabulate_hints["runs"])[1] is TrainedRun
    )


def test_every_plan_is_stage_configs_per_network(tmp_path: Path) -> None:
    plans = _tiny_plans(tmp_path)
    assert plans["table1"] == {}  # Table 1 trains nothing
    assert list(plans["table2"]) == ["SRResNet", "DASR"]
    assert list(plans["ablations"]) == ["dasr", "dasr_moe"]
    for name in ("table2", "ablations"):
        for stages in plans[name].values():
            assert isinstance(stages, list) and stages
            assert all(isinstance(config, TrainConfig) for config in stages)
    # two variants on one backbone share one pretraining run
    pretrains = {stages[0].run.path for stages in plans["ablations"].values()}
    assert len(pretrains) == 1 and pretrains.pop().endswith("ablation_pretrain_srresnet")
    assert run_plan(plans["table1"]) == {}


@pytest.mark.slow
def test_the_runner_reuses_a_finished_run_instead_of_training_it_again(
    tmp_path: Path, hr_folder: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    budget = {**TINY, "data_root": str(hr_folder), "out_dir": str(tmp_path / "runs")}
    plan = table2.plan(budget, methods=["SRResNet"], dasr_pretrain_iterations=1)
    first = run_plan(plan)
    assert not first["SRResNet"].reused and first["SRResNet"].weights.is_file()
    stamp = (first["SRResNet"].run_dir / "run.json").stat().st_mtime_ns

    def no_training(config: TrainConfig) -> Path:
        raise AssertionError(f"{config.run.name} was trained again")

    monkeypatch.setattr(runs, "train", no_training)
    with caplog.at_level(logging.INFO, logger="dasrlib.experiments.runs"):
        again = run_plan(table2.plan(budget, methods=["SRResNet"], dasr_pretrain_iterations=1))
    run = again["SRResNet"]
    assert run.reused and run.run_dir == first["SRResNet"].run_dir
    assert (run.run_dir / "run.json").stat().st_mtime_ns == stamp
    assert "not trained again" in run.message and run.message in caplog.text


@pytest.mark.slow
def test_one_budget_for_a_whole_plan_stops_inside_a_run_and_the_next_call_continues(
    tmp_path: Path, hr_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Clock:
        """One second per call: the budget ends after a known number of stop checks."""

        now = 0.0

        def monotonic(self) -> float:
            self.now += 1.0
            return self.now

    budget = {**TINY, "data_root": str(hr_folder), "out_dir": str(tmp_path / "runs")}
    plan = table2.plan(budget, methods=["DASR"], dasr_pretrain_iterations=6)
    pretrain, dasr = plan["DASR"]
    monkeypatch.setattr(runs, "time", Clock())
    assert run_plan(plan, budget_minutes=5 / 60) == {}  # a few stop checks into the pretraining
    record = RunRecord.read(tmp_path / "runs" / pretrain.run.name)
    assert record.status == "time_limit" and 0 < record.iteration < 6
    assert not (tmp_path / "runs" / dasr.run.name).exists()  # not started on a half pretraining
    monkeypatch.undo()
    finished = run_plan(plan, budget_minutes=60)
    assert list(finished) == ["DASR"]
    assert RunRecord.read(tmp_path / "runs" / pretrain.run.name).iteration == 6

"""The evaluation of a lease: test sets built on the CPU while the GPU trains, then every model
on every built set and level (bicubic, the SRResNet baseline and DASR, Sec. 4.2 and Table 1).

The test sets are built in one background process (the canonical device type, seed 0, as
``python -m dasrlib.testsets build`` everywhere in the project); the metrics run in
`LeaseSettings.eval_workers` processes. Whatever misses the lease's deadline is reported, never
averaged in. Only the standard library is imported at module level (see `dasrlib.lease.checks`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["EvaluationPlan", "TestsetBuild", "evaluate_models", "start_testsets"]


@dataclass(frozen=True, kw_only=True)
class EvaluationPlan:
    """What the evaluation needs from a lease's settings (`dasrlib.lease.run.LeaseSettings`)."""

    eval_sets: tuple[str, ...]
    eval_levels: tuple[str, ...]
    eval_max_images: int | None  # first N images of each set; None: all
    testset_seed: int
    testset_threads: int  # CPU threads of the background builder
    eval_workers: int  # processes sharing the evaluation (1: in this process)
    device: str
    deadline_s: float  # lease clock (seconds from its start) by which evaluation ends


@dataclass(frozen=True)
class TestsetBuild:
    """The background test-set builder and the folder it fills for each evaluation set."""

    process: subprocess.Popen
    outs: dict[str, Path]


def start_testsets(
    plan: EvaluationPlan, *, carry: Path, work: Path, logs_dir: Path, env: Mapping[str, str]
) -> TestsetBuild:
    """One background process that builds the seeded test sets of every evaluation set in turn
    (on the CPU, like ``python -m dasrlib.testsets build`` everywhere in the project) from the
    carried HR images under ``carry/eval``; its output goes to ``logs_dir/testsets.log``.

    `env` is the child's environment (the package on its PYTHONPATH, its OMP thread count)."""
    outs = {}
    for name in plan.eval_sets:
        hr = carry / "eval" / name
        if not hr.is_dir():
            raise FileNotFoundError(f"evaluation images {hr} are not in the carried folder")
        outs[name] = work / "testsets" / name
    jobs = [{"hr": str(carry / "eval" / name), "out": str(out)} for name, out in outs.items()]
    script = (
        "import json, logging, sys\n"
        "from dasrlib.testsets import build_testsets\n"
        "logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')\n"
        "jobs, levels, seed, n = json.loads(sys.argv[1])\n"
        "for job in jobs:\n"
        "    build_testsets(job['hr'], job['out'], levels=levels, seed=seed, device='cpu',\n"
        "                   max_images=n)\n"
    )
    arguments = json.dumps([jobs, list(plan.eval_levels), plan.testset_seed, plan.eval_max_images])
    log = open(logs_dir / "testsets.log", "w", encoding="utf-8")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-c", script, arguments],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(env),
        cwd=str(work),
    )
    log.close()
    return TestsetBuild(process, outs)


def _evaluate_task(task: dict[str, Any]) -> list[dict[str, Any]]:
    """One (method, dataset, level) of the evaluation; runs in a worker process."""
    import torch

    from dasrlib.evaluate import Method, evaluate
    from dasrlib.metrics import LPIPSUnavailable, load_lpips

    torch.set_num_threads(task["threads"])
    device = torch.device(task["device"])
    if importlib.util.find_spec("lpips") is None:
        lpips = LPIPSUnavailable("the lpips package is not installed on the device")
    else:
        lpips = load_lpips(device=device)
    if task["weights"] is None:
        method = Method.bicubic(name=task["method"])
    else:
        method = Method.checkpoint(name=task["method"], path=task["weights"])
    frame = evaluate(method, task["testset"], levels=[task["level"]], device=device, lpips=lpips)
    return frame.to_dict("records")


def evaluate_models(
    plan: EvaluationPlan,
    build: TestsetBuild,
    models: Mapping[str, Path | None],
    *,
    logs_dir: Path,
    elapsed: Callable[[], float],
) -> tuple[pd.DataFrame, list[str]]:
    """Mean rows of bicubic and every model in `models` (None: not trained) on every built test
    set and level, and what was skipped; per-image rows and the test-set manifests go to
    `logs_dir`. `eval_workers` processes share the (method, dataset, level) tasks (the metrics
    run on the CPU). A set whose build failed or a task past `plan.deadline_s` on the lease clock
    `elapsed` is reported, never averaged in."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import pandas as pd

    skipped: list[str] = []
    try:
        code = build.process.wait(timeout=max(plan.deadline_s - elapsed(), 1.0))
    except subprocess.TimeoutExpired:
        build.process.terminate()
        build.process.wait(timeout=30)
        code = "timeout"
    if code != 0:
        skipped.append(f"test-set build ended with {code}; see logs/testsets.log")
    tasks = []
    methods = {"bicubic": None, **{k: str(v) for k, v in models.items() if v is not None}}
    for dataset, out in sorted(build.outs.items(), key=lambda item: item[0] != "B100"):
        if not (out / "manifest.json").is_file():
            skipped.append(f"{dataset}: no test sets were built")
            continue
        shutil.copyfile(out / "manifest.json", logs_dir / f"testset_{dataset}_manifest.json")
        for name, weights in methods.items():
            for level in plan.eval_levels:
                tasks.append(
                    {
                        "method": name,
                        "weights": weights,
                        "testset": str(out),
                        "level": level,
                        "device": plan.device,
                        "threads": 1 if plan.eval_workers > 1 else max(os.cpu_count() or 1, 1),
                    }
                )
    records: list[dict[str, Any]] = []
    if plan.eval_workers <= 1:
        for task in tasks:
            if elapsed() > plan.deadline_s:
                skipped.append(f"{task['method']} {task['testset']} {task['level']}: past deadline")
                continue
            records += _evaluate_task(task)
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=plan.eval_workers, mp_context=context) as pool:
            futures = {pool.submit(_evaluate_task, task): task for task in tasks}
            try:
                for future in as_completed(futures, timeout=max(plan.deadline_s - elapsed(), 1)):
                    records += future.result()
            except TimeoutError:
                for future, task in futures.items():
                    if not future.done():
                        future.cancel()
                        skipped.append(f"{task['method']} {task['testset']} {task['level']}")
                pool.shutdown(wait=False, cancel_futures=True)
    if not records:
        return pd.DataFrame(), skipped
    rows = pd.DataFrame(records)
    rows.to_csv(logs_dir / "eval_per_image.csv", index=False)
    means = rows[rows["aggregate"] == "mean"]
    columns = ["method", "dataset", "level", "metric", "value", "n_images", "note"]
    return means.loc[:, columns].reset_index(drop=True), skipped

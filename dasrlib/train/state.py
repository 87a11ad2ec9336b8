"""A run folder's state files: the checkpoint pair, the resume decision, ``run.json`` read back.

Checkpoints (``<run>/checkpoints/``): ``latest.safetensors`` (every tensor: ``generator.*``,
``ema.*``, ``discriminator.*``, ``optimizer_g.<param>.<name>``, ...) and ``latest.state.json``
(iteration, config and its hash, optimiser hyper-parameters, counters, and the weights file's
checkpoint id and sha256). A new pair is written under temporary names, then the current pair is
renamed to ``previous.*`` and the new one to ``latest.*``; the loader takes the newest state whose
weights file carries its id and sha256, so a kill at any moment leaves a loadable pair.

Resume (`resume_from`): a run continues from its checkpoint when the recorded `resume_hash`
matches the config's (only the `schedule` and `run` sections may differ); resume='never' starts
over and removes the old checkpoints and logs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from dasrlib.config import ConfigError
from dasrlib.io import file_sha256, give_default_mode
from dasrlib.train.config import (
    RESUME_FREE_FIELDS,
    TrainConfig,
    config_from_parameters,
    resume_differences,
    resume_hash,
)

__all__ = [
    "STATE_FORMAT",
    "CheckpointNotFound",
    "RunFolderLocked",
    "latest_iteration",
    "load_checkpoint",
    "optimizer_from_files",
    "optimizer_to_files",
    "prefixed",
    "RUN_RECORD",
    "RunRecord",
    "read_run_config",
    "resume_from",
    "run_folder_lock",
    "unprefixed",
    "write_checkpoint",
]

logger = logging.getLogger(__name__)

STATE_FORMAT = "dasrlib-train-state/1"
RUN_RECORD = "run.json"
"""The run record every run folder has (`RunRecord`; written by `dasrlib.train.trainer`)."""


class CheckpointNotFound(FileNotFoundError):
    """No consistent checkpoint pair in a checkpoint folder."""


LOCK_NAME = ".lock"


class RunFolderLocked(RuntimeError):
    """Another training process holds the run folder (`run_folder_lock`)."""


@contextlib.contextmanager
def run_folder_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on `run_dir` while the block runs (``<run_dir>/.lock``).

    A second process that asks for the same folder gets `RunFolderLocked` naming the holder's
    process id, at once. The lock is an ``flock`` on the open file, so the operating system
    releases it when the holder exits in any way (a crash, a kill); the file itself stays. Where
    ``fcntl`` does not exist (Windows) the folder is not locked and a warning says so.
    """
    try:
        import fcntl
    except ImportError:
        logger.warning(
            "no file locks on this system: %s is not protected from a second run", run_dir
        )
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    lock_path = run_dir / LOCK_NAME
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise RunFolderLocked(
                f"run folder {run_dir} is in use by another training process (pid {holder}); "
                "wait for it to finish or choose another run name"
            ) from error
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def write_checkpoint(folder: Path, tensors: dict[str, Tensor], state: dict[str, Any]) -> Path:
    """Write ``latest.safetensors`` + ``latest.state.json`` in `folder`, keeping the previous pair.

    The new pair is written as ``next.*`` and flushed; then ``latest.*`` becomes ``previous.*``
    and ``next.*`` becomes ``latest.*`` (four `os.replace` calls). The state records the weights
    file's id and sha256, so `load_checkpoint` finds a consistent pair whatever moment a kill
    interrupts this.
    """
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint_id = uuid.uuid4().hex
    next_w, next_s = folder / "next.safetensors", folder / "next.state.json"
    header = {"checkpoint_id": checkpoint_id, "iteration": str(state["iteration"])}
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(cpu, str(next_w), metadata=header)
    give_default_mode(next_w)  # safetensors creates its files 0600
    _fsync(next_w)
    state = {**state, "checkpoint_id": checkpoint_id, "weights_sha256": file_sha256(next_w)}
    next_s.write_text(json.dumps(state, indent=1, allow_nan=True), encoding="utf-8")
    _fsync(next_s)
    latest_w, latest_s = folder / "latest.safetensors", folder / "latest.state.json"
    if latest_s.exists():
        os.replace(latest_s, folder / "previous.state.json")
    if latest_w.exists():
        os.replace(latest_w, folder / "previous.safetensors")
    os.replace(next_w, latest_w)
    os.replace(next_s, latest_s)
    with contextlib.suppress(OSError):  # make the renames durable where the OS allows it
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return latest_w


def load_checkpoint(folder: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The newest consistent (tensors, state) pair in `folder`; raises `CheckpointNotFound`."""
    states = []
    for stem in ("latest", "previous"):
        path = folder / f"{stem}.state.json"
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, json.JSONDecodeError) as err:  # truncated by a kill: not a candidate
            logger.warning("checkpoint state %s is unreadable (%s); skipping it", path, err)
            continue
        if state.get("format") == STATE_FORMAT:
            states.append(state)
    weights = {}
    for stem in ("latest", "previous"):
        path = folder / f"{stem}.safetensors"
        try:
            with safe_open(str(path), framework="pt") as handle:
                weights[(handle.metadata() or {}).get("checkpoint_id")] = path
        except Exception as err:  # missing or truncated file: not a candidate
            if path.exists():
                logger.warning("checkpoint weights %s unreadable (%s); skipping them", path, err)
            continue
    for state in sorted(states, key=lambda s: -s["iteration"]):
        path = weights.get(state["checkpoint_id"])
        if path is None:
            continue
        if file_sha256(path) != state["weights_sha256"]:
            logger.warning("checkpoint %s does not match its recorded sha256; skipping it", path)
            continue
        return load_file(str(path), device="cpu"), state
    raise CheckpointNotFound(f"no consistent checkpoint pair (state + weights) in {folder}")


def latest_iteration(folder: Path) -> int | None:
    """The iteration of ``latest.state.json`` in `folder`, else of ``previous.state.json`` (a
    kill between the renames of `write_checkpoint` leaves only that one, which is what a resume
    then continues from); None when neither is readable."""
    for stem in ("latest", "previous"):
        try:
            state = json.loads((folder / f"{stem}.state.json").read_text(encoding="utf-8"))
            return int(state["iteration"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return None


def resume_from(
    config: TrainConfig, run_dir: Path, *, is_main: bool
) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
    """The checkpoint a run continues from, or None when it starts from iteration 0.

    resume='never' removes the run's checkpoints and logs (on the main process) and returns None.
    resume='auto' returns the newest consistent pair; None when the folder holds no state at all;
    `CheckpointNotFound` when states exist but none is consistent; `ConfigError` naming the
    changed keys when the checkpoint's resume hash differs from the config's.
    """
    ckpt_dir = run_dir / "checkpoints"
    if config.run.resume == "never":
        stale = [run_dir / name for name in ("metrics.csv", "val.csv")]
        stale += [
            ckpt_dir / f"{stem}.{ext}"
            for stem in ("latest", "previous", "next")
            for ext in ("safetensors", "state.json")
        ]
        stale = [path for path in stale if path.exists()]
        if stale:
            logger.warning(
                "resume='never': starting over in %s; removing its checkpoints and logs", run_dir
            )
            if is_main:
                for path in stale:
                    path.unlink()
        return None
    try:
        tensors, state = load_checkpoint(ckpt_dir)
    except CheckpointNotFound:
        if any(ckpt_dir.glob("*.state.json")):
            raise
        return None
    if state["resume_hash"] != resume_hash(config):
        changed = resume_differences(state["config"], config)
        raise ConfigError(
            f"cannot resume {ckpt_dir}: the config differs in {changed} (only "
            f"{sorted(RESUME_FREE_FIELDS)} may change); use another name or resume='never'"
        )
    return tensors, state


@dataclass(frozen=True)
class RunRecord:
    """``run.json`` of a run folder (written by `dasrlib.train`): status, progress, config."""

    status: str | None
    iteration: int | None
    iterations_this_call: int | None
    wall_time_s: float | None
    it_per_s_this_call: float | None
    config_hash: str | None
    precision: str | None = None
    channels_last: bool | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def init_from(self) -> str | None:
        """The run folder the network was initialised from (None: random initialisation)."""
        value = self.config.get("init_from")
        return None if value is None else str(value)

    @classmethod
    def read(cls, run_dir: str | os.PathLike[str]) -> RunRecord:
        """Read ``<run_dir>/run.json``; ValueError naming the file when it is not a run record."""
        path = Path(run_dir) / RUN_RECORD
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
        config = data.get("config")
        return cls(
            status=data.get("status"),
            iteration=data.get("iteration"),
            iterations_this_call=data.get("iterations_this_call"),
            wall_time_s=data.get("wall_time_s"),
            it_per_s_this_call=data.get("it_per_s_this_call"),
            config_hash=data.get("config_hash"),
            precision=data.get("precision"),
            channels_last=data.get("channels_last"),
            config=dict(config) if isinstance(config, dict) else {},
        )


def read_run_config(run_dir: Path) -> TrainConfig:
    """The config recorded in a run folder's ``run.json`` (the flat layout every version wrote)."""
    path = Path(run_dir) / RUN_RECORD
    recorded = RunRecord.read(run_dir).config
    if not recorded:
        raise ConfigError(f"{path}: no config recorded")
    try:
        return config_from_parameters(recorded)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error


def optimizer_to_files(
    optimizer: torch.optim.Optimizer, prefix: str
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """An optimiser's state as (tensors named ``<prefix>.<param>.<name>``, JSON-ready rest)."""
    state_dict = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in state_dict["state"].items():
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def optimizer_from_files(
    optimizer: torch.optim.Optimizer, prefix: str, tensors: dict[str, Tensor], meta: dict[str, Any]
) -> None:
    """Load what `optimizer_to_files` wrote into `optimizer`."""
    entries: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            index, name = key[len(prefix) + 1 :].split(".", 1)
            entries.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        entries.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": entries, "param_groups": meta["param_groups"]})
    # Files hold contiguous tensors; per-parameter state takes its parameter's memory layout
    # again (channels-last), as in the run that saved it: fused optimiser kernels read the
    # parameter and its state element by element in memory order.
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for name, value in state.items():
                if isinstance(value, Tensor) and value.shape == param.shape:
                    state[name] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def prefixed(prefix: str, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """`state` with keys ``<prefix>.<key>`` (one checkpoint file holds several state dicts)."""
    return {f"{prefix}.{k}": v for k, v in state.items()}


def unprefixed(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """The entries of `tensors` under ``<prefix>.``, with the prefix removed."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}

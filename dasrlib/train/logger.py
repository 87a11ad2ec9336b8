"""What the training loop reports: the progress bar, ``metrics.csv``, ``val.csv``, tensorboard.

``metrics.csv`` has one row per `log_every` iterations: the mean of each loss term since the last
row (``loss_<term>``), the learning rate, iterations per second and the count of skipped
(non-finite) steps. ``val.csv`` has one row per validation and level. A resumed run keeps the rows
up to its checkpoint's iteration. Only the main process writes.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
from torch import Tensor

from dasrlib.io import atomic_write

__all__ = ["TrainingLog"]


class TrainingLog:
    """Loss sums between rows, the rows of ``metrics.csv`` and ``val.csv``, bar and tensorboard.

    Use as a context manager around the loop: entering opens the progress bar (`progress`) and
    the tensorboard writer (`tensorboard`, ``<run>/tensorboard``); leaving closes them.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        is_main: bool,
        total: int,
        description: str,
        progress: bool,
        tensorboard: bool,
    ) -> None:
        self.run_dir = run_dir
        self.is_main = is_main
        self.total = total
        self.description = description
        self.progress = progress and is_main
        self.tensorboard = tensorboard and is_main
        self.metrics_rows: list[dict[str, Any]] = []
        self.val_rows: list[dict[str, Any]] = []
        self._sums: dict[str, Tensor] = {}
        self._count = 0
        self._tick = time.monotonic()
        self._bar: Any = None
        self._writer: Any = None

    def resume(self, iteration: int) -> None:
        """Keep the logged rows up to `iteration` (later rows belong to a lost future)."""
        for attr, name in (("metrics_rows", "metrics.csv"), ("val_rows", "val.csv")):
            path = self.run_dir / name
            if path.is_file() and path.stat().st_size:
                frame = pd.read_csv(path)
                frame = frame[frame["iteration"] <= iteration]
                setattr(self, attr, frame.to_dict("records"))

    def open(self, iteration: int) -> TrainingLog:
        """Open the bar (starting at `iteration`) and the tensorboard writer; restart the clock."""
        if self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        if self.progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=self.total,
                initial=iteration,
                desc=self.description,
                mininterval=2.0,
                dynamic_ncols=True,
            )
        self._tick = time.monotonic()
        return self

    def __enter__(self) -> TrainingLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
        self._bar = self._writer = None

    @property
    def pending(self) -> int:
        """Iterations added since the last metrics row."""
        return self._count

    def add(self, terms: dict[str, Tensor]) -> None:
        """Count one iteration and add its (detached) loss terms to the sums of the next row."""
        self._count += 1
        for key, value in terms.items():
            self._sums[key] = (
                self._sums[key] + value.float() if key in self._sums else value.float()
            )
        if self._bar is not None:
            self._bar.update(1)

    def metrics(self, iteration: int, *, lr: float, nonfinite_total: int) -> dict[str, Any]:
        """Append the row of the iterations since the last one (mean losses) and return it."""
        now = time.monotonic()
        row: dict[str, Any] = {"iteration": iteration}
        row.update({f"loss_{k}": float(v) / self._count for k, v in self._sums.items()})
        row["lr"] = lr
        row["it_per_s"] = self._count / max(now - self._tick, 1e-9)
        row["nonfinite_total"] = nonfinite_total
        self.metrics_rows.append(row)
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{row.get('loss_total', math.nan):.4f}")
        if self._writer is not None:
            for key, value in row.items():
                if key != "iteration":
                    self._writer.add_scalar(key, value, iteration)
        self._sums, self._count, self._tick = {}, 0, now
        return row

    def validation(self, iteration: int, rows: list[dict[str, Any]]) -> None:
        """Record the validation rows of `iteration` (replacing any earlier ones of it)."""
        rows = [{"iteration": iteration, **row} for row in rows]
        self.val_rows = [r for r in self.val_rows if r["iteration"] != iteration] + rows
        if self._writer is not None:
            for row in rows:
                self._writer.add_scalar(
                    f"val/psnr_y_db/{row['level']}", row["psnr_y_db"], iteration
                )

    def validated(self, iteration: int) -> list[dict[str, Any]]:
        """The validation rows recorded for `iteration`."""
        return [r for r in self.val_rows if r["iteration"] == iteration]

    def write(self) -> None:
        """Write ``metrics.csv`` and ``val.csv`` atomically (main process only)."""
        if not self.is_main:
            return
        for rows, name in ((self.metrics_rows, "metrics.csv"), (self.val_rows, "val.csv")):
            if rows:
                with atomic_write(self.run_dir / name) as tmp:
                    pd.DataFrame(rows).to_csv(tmp, index=False)

"""Fill the carried folder of a lease (``.carry/lease``) and check it fits the 64 MiB limit.

Layout::

    train/<set>/<name>.webp|.jpg   a deterministic subset of the shared training images
    eval/<Set5|Set14|B100>/<name>.webp   every evaluation HR image
    models/{srresnet,dasr}.safetensors, models/history.json   the last published state
    manifest.json                  every file with its size and sha256, the sources, the subset

Training images are re-encoded as lossless WebP (verified pixel for pixel after encoding); JPEG
files are copied as they are (re-encoding them would only grow them). The subset: every image of
the training root ordered by the SHA-256 of its relative path (a fixed shuffle that mixes the
five sets), taken in that order until the next one would pass `train_budget_mib`. The same
sources and budget give the same subset on every lease; its hash is in the manifest and in each
lease's record.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dasrlib.data import list_image_files
from dasrlib.io import atomic_write, atomic_write_text, file_sha256
from dasrlib.lease import CARRY_LIMIT_BYTES, EVAL_SETS, MIB

__all__ = ["DEFAULT_TRAIN_BUDGET_MIB", "carry_size", "encode_lossless", "prepare_carry"]

logger = logging.getLogger(__name__)

DEFAULT_TRAIN_BUDGET_MIB = 23.0
"""Training images per lease: 64 MiB minus the evaluation images (about 20 MiB as lossless WebP)
and the published weights (DASR N = 5 fp16 15.4 MiB + SRResNet fp16 2.9 MiB)."""

_COPIED_AS_IS = {".jpg", ".jpeg", ".webp"}


def _pixels(image: Image.Image) -> np.ndarray:
    mode = "RGBA" if image.mode in ("RGBA", "LA", "PA") else "RGB"
    return np.asarray(image.convert(mode))


def encode_lossless(source: Path, target_stem: Path) -> Path:
    """`source` as lossless WebP (``<target_stem>.webp``, checked pixel for pixel), or a copy of a
    JPEG / WebP file; returns the written path."""
    suffix = source.suffix.lower()
    if suffix in _COPIED_AS_IS:
        target = target_stem.with_suffix(suffix)
        with atomic_write(target) as tmp:
            shutil.copyfile(source, tmp)
        return target
    target = target_stem.with_suffix(".webp")
    with Image.open(source) as image:
        image.load()
        if image.mode not in ("RGB", "RGBA", "L", "LA", "P", "PA"):
            raise ValueError(f"{source}: mode {image.mode} has no lossless 8-bit WebP form")
        expected = _pixels(image)
        with atomic_write(target) as tmp:
            image.save(tmp, format="WEBP", lossless=True, quality=100, method=4, exact=True)
    with Image.open(target) as back:
        if not np.array_equal(_pixels(back), expected):
            raise ValueError(f"{target}: lossless WebP of {source} does not decode to its pixels")
    return target


def _encode_job(args: tuple[str, str, str, str | None]) -> dict[str, Any]:
    source, stem, key, cached = args
    path = Path(cached) if cached is not None else encode_lossless(Path(source), Path(stem))
    return {
        "key": key,
        "file": path.as_posix(),
        "bytes": path.stat().st_size,
        "reused": cached is not None,
    }


def _encode_many(
    jobs: Sequence[tuple[Path, Path, str, Path | None]], *, workers: int, budget: int | None
) -> list[dict[str, Any]]:
    """Encode (or reuse the cached file of) each job in order; with `budget`, stop before the
    first file that would pass it."""
    done: list[dict[str, Any]] = []
    total = 0
    args = [(str(s), str(t), key, None if c is None else str(c)) for s, t, key, c in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for result in pool.map(_encode_job, args, chunksize=1):
            if budget is not None and total + result["bytes"] > budget:
                break
            total += result["bytes"]
            done.append(result)
        else:
            return done
        pool.shutdown(cancel_futures=True)
    return done


def _cached(carry: Path, old: dict[str, Any], key: str, source_sha: str) -> Path | None:
    """The file a previous prepare wrote for the same source bytes, if it is still intact."""
    entry = old.get(key)
    if entry is None or entry.get("source_sha256") != source_sha:
        return None
    path = carry / entry["file"]
    if not path.is_file() or file_sha256(path) != entry.get("file_sha256"):
        return None
    return path


def carry_size(folder: Path) -> int:
    """Bytes of every file under `folder`."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def prepare_carry(
    *,
    carry: Path,
    train_root: Path,
    eval_root: Path,
    models_dir: Path,
    train_budget_mib: float = DEFAULT_TRAIN_BUDGET_MIB,
    eval_sets: Sequence[str] = EVAL_SETS,
    workers: int = 2,
) -> dict[str, Any]:
    """Rebuild `carry` from the shared images and the published models; returns its manifest.

    Raises ValueError when the folder passes the 64 MiB carry limit, FileNotFoundError naming a
    missing source folder.
    """
    for folder in (train_root, *(eval_root / name for name in eval_sets)):
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder {folder} does not exist")
    carry.mkdir(parents=True, exist_ok=True)
    old_manifest = carry / "manifest.json"
    old: dict[str, Any] = {}
    if old_manifest.is_file():
        with contextlib.suppress(ValueError, KeyError):
            old = json.loads(old_manifest.read_text(encoding="utf-8"))["sources"]
    if (carry / "models").exists():
        shutil.rmtree(carry / "models")

    def job(path: Path, target_stem: Path, key: str) -> tuple[Path, Path, str, Path | None]:
        source_sha[key] = file_sha256(path)
        return path, target_stem, key, _cached(carry, old, key, source_sha[key])

    source_sha: dict[str, str] = {}
    sources = list_image_files(train_root)
    if not sources:
        raise FileNotFoundError(f"no images under {train_root}")
    rels = [p.relative_to(train_root).as_posix() for p in sources]
    order = sorted(range(len(sources)), key=lambda i: hashlib.sha256(rels[i].encode()).hexdigest())
    jobs = [
        job(sources[i], carry / "train" / Path(rels[i]).with_suffix(""), f"train/{rels[i]}")
        for i in order
    ]
    train = _encode_many(jobs, workers=workers, budget=int(train_budget_mib * MIB))
    if not train:
        raise ValueError(f"no training image fits {train_budget_mib} MiB")
    subset = sorted(item["key"].removeprefix("train/") for item in train)
    logger.info("training subset: %d of %d images", len(train), len(sources))

    eval_jobs = []
    for name in eval_sets:
        for path in list_image_files(eval_root / name):
            rel = path.relative_to(eval_root / name).as_posix()
            eval_jobs.append(job(path, carry / "eval" / name / path.stem, f"eval/{name}/{rel}"))
    evaluation = _encode_many(eval_jobs, workers=workers, budget=None)
    kept = {Path(item["file"]).resolve() for item in (*train, *evaluation)}
    for part in ("train", "eval"):  # files of other subsets or encoded past the budget
        for extra in [p for p in (carry / part).rglob("*") if p.is_file()]:
            if extra.resolve() not in kept:
                extra.unlink()
    reused = sum(item["reused"] for item in (*train, *evaluation))
    logger.info(
        "%d images encoded, %d reused from the last prepare (same source sha256)",
        len(train) + len(evaluation) - reused,
        reused,
    )

    models = []
    history = models_dir / "history.json"
    state = (
        json.loads(history.read_text(encoding="utf-8")).get("state", {})
        if history.is_file()
        else {}
    )
    for name in ("srresnet", "dasr"):
        source = models_dir / name / "model.safetensors"
        if (name in state) != source.is_file():
            raise ValueError(
                f"{history} and {source} disagree on whether {name} exists; republish the lease"
            )
        if source.is_file():
            target = carry / "models" / f"{name}.safetensors"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            models.append({"file": f"models/{name}.safetensors", "bytes": target.stat().st_size})
    if history.is_file():
        (carry / "models").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(history, carry / "models" / "history.json")

    files = sorted(p for p in carry.rglob("*") if p.is_file() and p.name != "manifest.json")
    manifest = {
        "format": "dasrlib-lease-carry/1",
        "train_root": str(train_root),
        "eval_root": str(eval_root),
        "train_budget_mib": train_budget_mib,
        "n_train_images": len(train),
        "n_train_sources": len(sources),
        "train_subset": subset,
        "train_subset_sha256": hashlib.sha256("\n".join(subset).encode()).hexdigest(),
        "sources": {
            item["key"]: {
                "source_sha256": source_sha[item["key"]],
                "file": Path(item["file"]).resolve().relative_to(carry.resolve()).as_posix(),
                "file_sha256": file_sha256(Path(item["file"])),
            }
            for item in (*train, *evaluation)
        },
        "n_eval_images": {
            n: sum(1 for e in evaluation if e["key"].startswith(f"eval/{n}/")) for n in eval_sets
        },
        "models": models,
        "n_reused": reused,
        "files": [
            {
                "file": p.relative_to(carry).as_posix(),
                "bytes": p.stat().st_size,
                "sha256": file_sha256(p),
            }
            for p in files
        ],
    }
    manifest["bytes"] = sum(f["bytes"] for f in manifest["files"])
    atomic_write_text(carry / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    total = carry_size(carry)
    manifest["bytes_with_manifest"] = total
    if total > CARRY_LIMIT_BYTES:
        raise ValueError(
            f"{carry} holds {total / MIB:.2f} MiB, over the {CARRY_LIMIT_BYTES // MIB} MiB carry "
            f"limit; lower train_budget_mib (now {train_budget_mib})"
        )
    return manifest

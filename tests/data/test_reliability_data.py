"""Bad image files fed to the classification loader (hypothesis): random bytes behind real image
signatures, truncated encodings, and every PIL mode the common formats can hold. Each sample comes
out as an 8-bit RGB image (converted) or ``None`` (skipped, counted, logged once with the file
name), never an exception; and a batch of them always collates."""

import io
import logging
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

from botnet.data import ImageFolderSafe, build_transforms, collate_skip_none

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SIGNATURES = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
              b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"P6\n", b"\x00\x00\x01\x00"]
EXTENSIONS = sorted(IMG_EXTENSIONS)
FORMATS = ["png", "jpeg", "bmp", "tiff", "webp", "ppm"]  # all have extensions ImageFolder accepts
_MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I;16", "I;16B", "I", "F"]


def _writable(mode, fmt):
    try:
        Image.new(mode, (2, 2)).save(io.BytesIO(), format=fmt)
    except (OSError, KeyError, ValueError):
        return False
    return True


MODES = {m: fs for m in _MODES if (fs := [f for f in FORMATS if _writable(m, f)])}  # what this Pillow can write
TRAIN_TF = build_transforms(True, 16, randaug_magnitude=10, scale=(0.5, 1.0))


def _pixels(mode, size, rng):
    """Random raw bytes as an image of ``mode`` (for "F": any float32, NaN and Inf included)."""
    n = len(Image.new(mode, size).tobytes())
    return Image.frombytes(mode, size, rng.integers(0, 256, n, dtype=np.uint8).tobytes())


def _encode(image, fmt):
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _load_all(files):
    """Write ``{name: bytes}`` into a class folder; return the dataset's items in file order."""
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "c").mkdir()
        for name, data in files.items():
            (root / "c" / name).write_bytes(data)
        ds = ImageFolderSafe(root)
        raw = [ds[i] for i in range(len(ds))]
        ds.transform = TRAIN_TF
        tensors = [ds[i] for i in range(len(ds))]
        return ds, raw, tensors


def _check(raw, tensors):
    for r, t in zip(raw, tensors):
        assert (r is None) == (t is None)
        if r is not None:
            image, target = r
            assert image.mode == "RGB" and np.asarray(image).dtype == np.uint8 and target == 0
            assert t[0].shape == (3, 16, 16) and t[0].dtype == torch.float32 and torch.isfinite(t[0]).all()
    images, targets, skipped = collate_skip_none(tensors)
    kept = sum(t is not None for t in tensors)
    assert images.shape[0] == targets.shape[0] == kept and skipped == len(tensors) - kept


@FUZZ
@given(data=st.lists(st.tuples(st.sampled_from(SIGNATURES), st.binary(max_size=600), st.sampled_from(EXTENSIONS)),
                     min_size=1, max_size=4))
def test_random_bytes_are_skipped_not_raised(data):
    files = {f"{i}{ext}": sig + body for i, (sig, body, ext) in enumerate(data)}
    ds, raw, tensors = _load_all(files)
    _check(raw, tensors)


@FUZZ
@given(mode=st.sampled_from(sorted(MODES)), pick=st.integers(0, 10), size=st.tuples(st.integers(1, 40), st.integers(1, 40)),
       cut=st.one_of(st.none(), st.floats(0.0, 0.99)), seed=st.integers(0, 2**16))
def test_every_mode_converts_or_truncation_skips(mode, pick, size, cut, seed):
    fmt = MODES[mode][pick % len(MODES[mode])]
    data = _encode(_pixels(mode, size, np.random.default_rng(seed)), fmt)
    if cut is not None:
        data = data[: int(len(data) * cut)]
    ext = {"jpeg": ".jpg", "tiff": ".tif"}.get(fmt, f".{fmt}")
    assert ext in IMG_EXTENSIONS
    ds, raw, tensors = _load_all({f"x{ext}": data})
    _check(raw, tensors)
    if cut is None:  # a complete file always decodes, at its size
        assert raw[0] is not None and raw[0][0].size == size, (mode, fmt)


def test_skips_are_counted_and_logged_once_per_file(tmp_path, caplog):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(50))
    Image.new("RGB", (4, 4)).save(tmp_path / "c" / "good.png")
    ds = ImageFolderSafe(tmp_path, transform=TRAIN_TF)
    with caplog.at_level(logging.WARNING, logger="botnet.data"):
        batch = [ds[i] for i in range(len(ds)) for _ in range(2)]
    images, targets, skipped = collate_skip_none(batch)
    assert (images.shape[0], skipped, ds.num_skipped) == (2, 2, 2)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [f"skipping unreadable image {tmp_path}/c/bad.png"]


@pytest.mark.parametrize("width", [1, 3])
def test_one_pixel_wide_images_train(tmp_path, width):
    (tmp_path / "c").mkdir()
    Image.new("RGB", (width, 50), (9, 9, 9)).save(tmp_path / "c" / "thin.png")
    ds = ImageFolderSafe(tmp_path, transform=TRAIN_TF)
    assert ds[0][0].shape == (3, 16, 16)


def test_float_image_with_nan_and_inf(tmp_path):
    import warnings

    from botnet.data import load_rgb

    Image.fromarray(np.array([[np.nan, np.inf, -np.inf, 200.0]], dtype=np.float32)).save(tmp_path / "f.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "invalid value encountered in cast"
        image = load_rgb(tmp_path / "f.tif")
    assert np.asarray(image)[0, :, 0].tolist() == [0, 255, 0, 200]

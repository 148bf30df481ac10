"""Every common image flavour becomes a correct 3-channel uint8 array."""
import numpy as np
import pytest
from PIL import Image, ImageOps

from studylib.data.images import ImageReadError, read_image


def gradient(mode_max=255, w=40, h=30):
    return (np.linspace(0, mode_max, w)[None, :] * np.ones((h, 1))).round()


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "CMYK", "LA", "I;16", "1"])
def test_modes_become_rgb(tmp_path, mode):
    base = Image.fromarray(gradient().astype(np.uint8)).convert("RGB")
    if mode == "I;16":
        image = Image.fromarray(gradient(65535).astype(np.uint16))
    else:
        image = base.convert(mode)
    path = tmp_path / ("x.tif" if mode in ("CMYK", "I;16") else "x.png")
    image.save(path)
    array, size = read_image(path, 24)
    assert array.shape == (3, 24, 24) and array.dtype == np.uint8
    assert size == (40, 30)
    if mode in ("L", "RGB", "I;16", "P", "LA", "RGBA"):
        assert array[0, 12, 0] < 60 and array[0, 12, -1] > 200  # the gradient survives, left dark to right bright


def test_sixteen_bit_uses_the_full_range(tmp_path):
    Image.fromarray((gradient(4000, w=40, h=40) + 1000).astype(np.uint16)).save(tmp_path / "x.png")
    array, _ = read_image(tmp_path / "x.png", 40)  # square: no crop, so the extremes survive
    assert array.min() <= 5 and array.max() >= 250


def test_exif_rotation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20, 0] = 255  # left half red
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    ImageOps.exif_transpose(Image.open(tmp_path / "rotated.jpg")).save(tmp_path / "upright.png")
    rotated, size = read_image(tmp_path / "rotated.jpg", 16)
    upright, _ = read_image(tmp_path / "upright.png", 16)
    assert np.abs(rotated.astype(int) - upright.astype(int)).max() <= 2
    assert rotated[0, 0, 8] > 200 and rotated[0, -1, 8] < 50  # red is now on top


def test_truncated_file_names_itself(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="t.jpg"):
        read_image(tmp_path / "t.jpg", 32)


def test_not_an_image(tmp_path):
    (tmp_path / "x.png").write_text("hello")
    with pytest.raises(ImageReadError, match="x.png"):
        read_image(tmp_path / "x.png", 32)

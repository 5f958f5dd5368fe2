"""Messy user images -> (R, R, 3) uint8 RGB by the documented policy; non-images None; corrupt: error."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import HydraMixError
from pipeline.data.images import load_image, looks_like_image


def encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (24, 24, 3), dtype=np.uint8)


def test_rgb_at_resolution_is_untouched():
    out = load_image(encode(Image.fromarray(PIXELS), "PNG"), "a.png", 24)
    assert out.dtype == np.uint8 and out.shape == (24, 24, 3)
    np.testing.assert_array_equal(out, PIXELS)


def test_grayscale_becomes_three_equal_channels():
    gray = PIXELS[..., 0]
    out = load_image(encode(Image.fromarray(gray), "PNG"), "g.png", 24)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_rgba_is_composited_on_white():
    rgba = np.zeros((24, 24, 4), np.uint8)
    rgba[..., 0] = 200  # red everywhere, but ...
    rgba[:12, :, 3] = 255  # ... opaque only in the top half
    out = load_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"), "t.png", 24)
    np.testing.assert_array_equal(out[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(out[20, 0], [255, 255, 255])


def test_palette_with_transparency_and_la():
    pal = Image.fromarray(PIXELS).convert("P")
    data = encode(pal, "PNG", transparency=int(np.asarray(pal)[0, 0]))
    out = load_image(data, "p.png", 24)
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
    la = Image.fromarray(np.stack([PIXELS[..., 0], np.zeros((24, 24), np.uint8)], -1), "LA")
    assert (load_image(encode(la, "PNG"), "la.png", 24) == 255).all()


def test_cmyk_jpeg():
    cmyk = Image.new("CMYK", (24, 24), (0, 255, 255, 0))  # pure red in CMYK
    out = load_image(encode(cmyk, "JPEG", quality=95), "c.jpg", 24)
    assert out[12, 12, 0] > 230 and out[12, 12, 1] < 30 and out[12, 12, 2] < 30


def test_sixteen_bit_is_scaled_not_clipped():
    values = np.linspace(0, 65535, 24 * 24).reshape(24, 24).astype(np.uint16)
    im = Image.fromarray(values)
    assert im.mode.startswith("I;16")
    out = load_image(encode(im, "PNG"), "deep.png", 24)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    assert 120 <= out[12, 0, 0] <= 135  # mid-grey stays mid-grey


def test_float_image_in_unit_range():
    values = np.full((24, 24), 0.5, np.float32)
    out = load_image(encode(Image.fromarray(values, "F"), "TIFF"), "f.tif", 24)
    assert (out == 128).all()


def test_multi_frame_takes_first_frame():
    frames = [Image.new("RGB", (24, 24), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    out = load_image(data, "anim.gif", 24)
    assert out[5, 5, 0] > 200 and out[5, 5, 2] < 50


def test_exif_rotation_is_applied():
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = encode(Image.fromarray(wide), "JPEG", exif=exif, quality=95)
    upright = load_image(data, "rot.jpg", 20)  # 20x40 once rotated -> centre 20x20 square
    assert upright.shape == (20, 20, 3)
    # rotated 90 CW: the white left half becomes the top half
    assert upright[2, 10].mean() > 200 and upright[17, 10].mean() < 50


@pytest.mark.parametrize("size", [(7, 5), (300, 40), (33, 33), (1000, 1000)])
def test_any_size_becomes_resolution(size):
    im = Image.fromarray(RNG.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    assert load_image(encode(im, "PNG"), "s.png", 16).shape == (16, 16, 3)


def test_centre_crop_keeps_the_middle():
    wide = np.zeros((32, 96, 3), np.uint8)
    wide[:, 32:64] = 255  # only the middle third is white
    out = load_image(encode(Image.fromarray(wide), "PNG"), "w.png", 32)
    assert out.mean() > 250


def test_other_formats_load():
    for fmt, name in (("BMP", "x.bmp"), ("TIFF", "x.tif"), ("WEBP", "x.webp"), ("PPM", "x.ppm")):
        assert load_image(encode(Image.fromarray(PIXELS), fmt), name, 24).shape == (24, 24, 3)
    one_bit = Image.fromarray(PIXELS[..., 0] > 128)
    assert load_image(encode(one_bit, "PNG"), "b.png", 24).shape == (24, 24, 3)


def test_non_images_are_none():
    assert load_image(b"just some notes\n", "README.txt", 16) is None
    assert load_image(b"", "empty.csv", 16) is None
    assert load_image(b"\x00\x01\x02", ".DS_Store", 16) is None


def test_corrupt_image_is_an_error_naming_the_file():
    data = encode(Image.fromarray(PIXELS), "PNG")
    with pytest.raises(HydraMixError, match=r"cat/0001\.png: unreadable image"):
        load_image(data[: len(data) // 2], "cat/0001.png", 24)
    with pytest.raises(HydraMixError, match=r"broken\.jpg: unreadable image"):
        load_image(b"definitely not a jpeg", "broken.jpg", 24)
    jpeg = encode(Image.fromarray(PIXELS), "JPEG")
    with pytest.raises(HydraMixError, match="noext"):
        load_image(jpeg[:3] + b"\x00" * 20, "noext", 24)  # JPEG signature, no extension, garbage body


def test_looks_like_image():
    assert looks_like_image("a.JPG", b"")
    assert looks_like_image("blob", b"\x89PNG\r\n\x1a\n....")
    assert looks_like_image("blob", b"RIFF\x00\x00\x00\x00WEBPVP8 ")
    assert not looks_like_image("notes.txt", b"hello")

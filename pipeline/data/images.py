"""Turn the bytes of any user image file into (R, R, 3) uint8 RGB by one documented policy.

Policy (see docs/data.md):
- not an image (Pillow cannot identify it, and it has neither an image extension nor an image signature):
  ``None``, and the caller counts it as skipped;
- looks like an image but cannot be decoded (truncated, corrupt): HydraMixError naming the file;
- multi-frame (GIF, APNG, TIFF pages): the first frame;
- EXIF orientation is applied, so the picture is upright as viewers show it;
- transparency (RGBA, LA, palette with a transparent colour) is composited onto white, because fully
  transparent pixels often hold arbitrary colours (commonly black) that are not part of the picture;
- 16-bit and 32-bit integer images are scaled to 8 bits (value / 257 when any value exceeds 255), float images
  in [0, 1] are scaled by 255; CMYK, YCbCr, LAB, palette and 1-bit images are converted to RGB by Pillow
  (CMYK naively, without ICC profiles);
- size: an image already R x R is left untouched; otherwise the centred square of side min(width, height) is
  cut out and resized to R x R with Lanczos (antialiased) filtering: the same as "resize the shorter side
  to R, then centre-crop", without an intermediate image.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.core.errors import HydraMixError

IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .apng .gif .bmp .dib .tif .tiff .webp .ppm .pgm .pbm .pnm .ico .tga .jp2 .j2k"
    " .heic .heif .avif .psd .pcx .sgi .eps .icns .dds .qoi .xbm .im .msp".split()
)
# File signatures of common image formats: a file starting with one of these is an image even if misnamed.
_IMAGE_MAGIC = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",  # TIFF little-endian
    b"MM\x00*",  # TIFF big-endian
    b"\x00\x00\x00\x0cjP  ",  # JPEG 2000
)
_WHITE = (255, 255, 255)


def looks_like_image(name: str, data: bytes) -> bool:
    """True if ``name`` has an image extension or ``data`` starts with a known image signature."""
    dot = name.rfind(".")
    if dot >= 0 and name[dot:].lower() in IMAGE_EXTENSIONS:
        return True
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return True
    return any(data.startswith(magic) for magic in _IMAGE_MAGIC)


def load_image(data: bytes, name: str, resolution: int) -> np.ndarray | None:
    """Decode ``data`` (the bytes of file ``name``) to (resolution, resolution, 3) uint8 RGB.

    Returns None for a file that is not an image; raises HydraMixError naming ``name`` for an image file that
    cannot be decoded.
    """
    try:
        with warnings.catch_warnings():
            # A huge photo is still an image; only Pillow's hard bomb limit (an error) stops us.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                return np.asarray(_fit(_to_rgb(_first_frame_upright(im, resolution)), resolution))
    except UnidentifiedImageError:
        if looks_like_image(name, data):
            raise HydraMixError(f"{name}: unreadable image file (not a format Pillow can decode)") from None
        return None
    except HydraMixError:
        raise
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, ... for corrupt files
        raise HydraMixError(f"{name}: unreadable image file ({type(exc).__name__}: {exc})") from None


def _first_frame_upright(im: Image.Image, resolution: int) -> Image.Image:
    """Frame 0, fully decoded, with its EXIF orientation applied."""
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
    if im.format == "JPEG" and im.mode in ("RGB", "L", "CMYK"):
        # Let the JPEG decoder downscale by 1/2..1/8 in the DCT; the final resize still antialiases.
        side = min(im.size)
        if side >= 2 * resolution:
            im.draft(im.mode, (im.size[0] * resolution // side, im.size[1] * resolution // side))
    im.load()  # decode now so a truncated file fails here, naming the file
    return ImageOps.exif_transpose(im)


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB (alpha composited on white; high bit depths scaled to 8 bits)."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return Image.fromarray(_to_uint8(np.asarray(im)), mode="L").convert("RGB")
    if (im.mode == "P" and "transparency" in im.info) or im.mode in ("PA", "LA", "La", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        background = Image.new("RGB", im.size, _WHITE)
        background.paste(im, mask=im.getchannel("A"))
        return background
    return im.convert("RGB")


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """A single-channel 16/32-bit integer or float array -> uint8 (policy in the module docstring)."""
    if values.dtype.kind == "f":
        finite = np.nan_to_num(values.astype(np.float64))
        scale = 255.0 if finite.max(initial=0.0) <= 1.0 else 1.0
        return np.clip(np.rint(finite * scale), 0, 255).astype(np.uint8)
    values = values.astype(np.int64)
    if values.max(initial=0) > 255:
        values = values // 257  # 65535 -> 255
    return np.clip(values, 0, 255).astype(np.uint8)


def _fit(im: Image.Image, resolution: int) -> Image.Image:
    """RGB image of any size -> resolution x resolution: centred square crop, Lanczos resize."""
    width, height = im.size
    if width == height == resolution:
        return im
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return im.resize((resolution, resolution), Image.Resampling.LANCZOS, box=(left, top, left + side, top + side))

"""QR code images (PNG, SVG) with the pool's logo in the centre, and logo upload checks.

Rendering is deterministic: the same content, logo bytes and options always give
the same bytes, so callers may cache by (content, logo hash, options).
"""

from __future__ import annotations

import base64
import io
import warnings

import segno
from PIL import Image, ImageChops, ImageDraw, ImageOps

LOGO_SIZE = 256  # a normalised logo is a square PNG of at most this side
LOGO_SHAPES = ("square", "round")

# The white pad under the logo spans at most 22% of the symbol's width, i.e. under
# 5% of its modules. Error correction H restores up to ~30% of the codewords, so
# most of that budget is left for glare, moiré and a shaky phone camera. The pad
# is centred and far from the finder, timing and format-information patterns.
_PAD_RATIO = 0.22
_LOGO_INSET = 0.1  # quiet white margin on each side of the logo, share of the pad
_CORNER_RATIO = 0.18  # corner radius of the "square" shape, share of its side
_PNG_WIDTH = (300, 400)  # target pixel width of the PNG, quiet zone included
_SVG_LOGO_PX = 160  # resolution of the logo embedded in the SVG
_MAX_PIXELS = 4096 * 4096

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_TRANSPARENT = (255, 255, 255, 0)
_WHITE = (255, 255, 255, 255)


class LogoError(ValueError):
    """A logo upload was refused; ``code`` is the wire error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def render_png(
    content: str,
    logo: bytes | None = None,
    *,
    logo_shape: str = "square",
    size_hint: int = 8,
    border: int = 4,
) -> bytes:
    """The QR code as PNG. ``size_hint`` is the preferred module size in pixels;
    it is adjusted so the image is about 300-400 px wide."""
    _check_shape(logo_shape)
    qr = _make_qr(content)
    width, pad, offset = _layout(qr, border)
    scale = _png_scale(width, size_hint)
    out = io.BytesIO()
    qr.save(out, kind="png", scale=scale, border=border)  # 1-bit greyscale, zlib level 9
    if logo is None:
        return out.getvalue()

    with Image.open(io.BytesIO(out.getvalue()), formats=["PNG"]) as code:
        img = code.convert("RGBA")
    pad_px = pad * scale
    inset = round(pad_px * _LOGO_INSET)
    tile = Image.new("RGBA", (pad_px, pad_px), _WHITE)
    tile.putalpha(_shape_mask(pad_px, logo_shape))
    tile.alpha_composite(_fit_logo(logo, pad_px - 2 * inset, logo_shape), (inset, inset))
    img.alpha_composite(tile, (offset * scale, offset * scale))
    out = io.BytesIO()
    img.convert("RGB").save(out, "PNG", optimize=True)
    return out.getvalue()


def render_svg(
    content: str,
    logo: bytes | None = None,
    *,
    logo_shape: str = "square",
    border: int = 4,
) -> str:
    """The QR code as a self-contained SVG document (no external references)."""
    _check_shape(logo_shape)
    qr = _make_qr(content)
    width, pad, offset = _layout(qr, border)
    out = io.BytesIO()
    qr.save(
        out,
        kind="svg",
        border=border,
        light="#fff",
        xmldecl=False,
        omitsize=True,  # segno then writes a viewBox in module units
        svgclass=None,
        lineclass=None,
        nl=False,
    )
    svg = out.getvalue().decode()
    # Give it the PNG's size as intrinsic size too: an <img> without CSS would
    # otherwise fall back to 150x150 px. The viewBox still lets CSS scale it.
    px = width * _png_scale(width, 8)
    attrs = f'width="{px}" height="{px}"'
    if logo is None:
        return svg.replace("<svg ", f"<svg {attrs} ", 1)

    logo_png = io.BytesIO()
    _fit_logo(logo, _SVG_LOGO_PX, logo_shape).save(logo_png, "PNG", optimize=True)
    data_uri = "data:image/png;base64," + base64.b64encode(logo_png.getvalue()).decode()
    if logo_shape == "round":
        centre = offset + pad / 2
        backdrop = f'<circle cx="{centre:g}" cy="{centre:g}" r="{pad / 2:g}" fill="#fff"/>'
    else:
        backdrop = (
            f'<rect x="{offset}" y="{offset}" width="{pad}" height="{pad}"'
            f' rx="{pad * _CORNER_RATIO:g}" fill="#fff"/>'
        )
    inset = pad * _LOGO_INSET
    # xlink:href rather than SVG 2's plain href: every browser and rasteriser reads it.
    image = (
        f'<image x="{offset + inset:g}" y="{offset + inset:g}" width="{pad - 2 * inset:g}"'
        f' height="{pad - 2 * inset:g}" xlink:href="{data_uri}"/>'
    )
    attrs += ' xmlns:xlink="http://www.w3.org/1999/xlink"'
    svg = svg.replace("<svg ", f"<svg {attrs} ", 1)
    return svg.removesuffix("</svg>") + backdrop + image + "</svg>"


def normalize_logo(
    data: bytes, *, max_bytes: int = 512_000, max_pixels: int = _MAX_PIXELS
) -> bytes:
    """Check an uploaded logo and re-encode it as a clean square PNG of at most
    ``LOGO_SIZE`` px (aspect kept, transparent padding, no metadata)."""
    if len(data) > max_bytes:
        raise LogoError("logo_too_large", f"The logo must be at most {max_bytes // 1000} kB.")
    im = _decode(data, max_pixels)
    im.thumbnail((LOGO_SIZE, LOGO_SIZE), Image.Resampling.LANCZOS)
    side = max(im.size)
    # A new image carries none of the source's metadata (EXIF, ICC, text chunks).
    canvas = Image.new("RGBA", (side, side), _TRANSPARENT)
    canvas.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
    out = io.BytesIO()
    canvas.save(out, "PNG", optimize=True)
    return out.getvalue()


AVATAR_SIZE = 132  # WeChat's own avatar size


def normalize_avatar(data: bytes, *, max_bytes: int = 1_000_000) -> bytes:
    """An uploaded avatar (PNG or JPEG) as a clean square PNG of ``AVATAR_SIZE``
    px: centre-cropped, flattened on white, without any metadata."""
    if len(data) > max_bytes:
        raise LogoError("avatar_too_large", f"The image must be at most {max_bytes // 1000} kB.")
    im = _decode(data)
    side = min(im.size)
    left, top = (im.width - side) // 2, (im.height - side) // 2
    im = im.crop((left, top, left + side, top + side))
    im = im.resize((AVATAR_SIZE, AVATAR_SIZE), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", im.size, (255, 255, 255))
    canvas.paste(im, mask=im.getchannel("A"))
    out = io.BytesIO()
    canvas.save(out, "PNG", optimize=True)
    return out.getvalue()


def _decode(data: bytes, max_pixels: int = _MAX_PIXELS) -> Image.Image:
    """Decode a PNG or JPEG into RGBA, refusing bombs before decoding pixels."""
    if data.startswith(_PNG_MAGIC):
        fmt = "PNG"
    elif data.startswith(_JPEG_MAGIC):
        fmt = "JPEG"
    else:
        raise LogoError("logo_unsupported_format", "The logo must be a PNG or JPEG image.")
    try:
        # Image.open reads only the header. Pillow merely warns between its
        # MAX_IMAGE_PIXELS and twice that: make that a refusal too.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=[fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_many_pixels(max_pixels) from exc
    except Exception as exc:  # a malformed header may raise about anything
        raise LogoError("logo_invalid", "The logo could not be read as an image.") from exc
    if im.width * im.height > max_pixels:
        raise _too_many_pixels(max_pixels)
    if fmt == "PNG" and getattr(im, "is_animated", False):
        raise LogoError("logo_unsupported_format", "Animated images are not supported.")
    try:
        if fmt == "JPEG":
            im.draft(None, (LOGO_SIZE, LOGO_SIZE))  # libjpeg may decode at 1/2..1/8 scale
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode.startswith("I"):  # 16-bit greyscale: scale down, don't clip to white
            im = im.convert("I").point(lambda v: v / 257).convert("L")
        return im.convert("RGBA")
    except Exception as exc:  # truncated or corrupt pixel data
        raise LogoError("logo_invalid", "The logo could not be read as an image.") from exc


def _too_many_pixels(max_pixels: int) -> LogoError:
    return LogoError("logo_too_large", f"The logo must have at most {max_pixels} pixels.")


def _check_shape(shape: str) -> None:
    if shape not in LOGO_SHAPES:
        raise ValueError(f"logo_shape must be one of {LOGO_SHAPES}, not {shape!r}")


def _make_qr(content: str) -> segno.QRCode:
    # boost_error=False keeps level H; make_qr never makes a Micro QR code.
    return segno.make_qr(content, error="h", boost_error=False)


def _layout(qr: segno.QRCode, border: int) -> tuple[int, int, int]:
    """(image width, logo pad side, pad offset), all in modules."""
    n = qr.symbol_size(border=0)[0]
    pad = int(n * _PAD_RATIO)
    pad -= 1 - pad % 2  # odd, like n: the pad then covers whole modules around the centre
    return n + 2 * border, pad, border + (n - pad) // 2


def _png_scale(width: int, size_hint: int) -> int:
    low, high = (-(-_PNG_WIDTH[0] // width), _PNG_WIDTH[1] // width)
    return max(2, min(max(size_hint, low), high))


def _shape_mask(size: int, shape: str) -> Image.Image:
    """An anti-aliased "L" mask of the shape, drawn at 4x and scaled down."""
    big = size * 4
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    if shape == "round":
        draw.ellipse((0, 0, big - 1, big - 1), fill=255)
    else:
        draw.rounded_rectangle((0, 0, big - 1, big - 1), radius=big * _CORNER_RATIO, fill=255)
    return mask.reduce(4)  # box filter: smooth edges, no ringing inside


def _fit_logo(logo: bytes, size: int, shape: str) -> Image.Image:
    im = ImageOps.pad(_decode(logo), (size, size), Image.Resampling.LANCZOS, _TRANSPARENT)
    im.putalpha(ImageChops.multiply(im.getchannel("A"), _shape_mask(size, shape)))
    return im

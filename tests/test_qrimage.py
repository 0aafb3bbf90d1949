import base64
import hashlib
import io
import os
import random
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
import zlib

import pytest
import resvg_py
import segno
import zxingcpp
from PIL import Image, ImageChops, ImageDraw, ImageFile, ImageFilter, PngImagePlugin

from portal.scan.qrimage import LogoError, normalize_logo, render_png, render_svg

TICKET = "Xq3_k9ZpL0-aB7cD2eF4gH6iJ8kLmN1o"  # 32 URL-safe characters, like a real one
CONTENTS = [
    "https://a.example/q/x",
    f"https://acme.login.example.com/q/{TICKET}",
    f"http://demo.localhost:8000/q/{TICKET}",
    f"https://a-rather-long-tenant-slug.login.some-company.example.com/q/{TICKET}",
]
SHAPES = ["square", "round"]


def png_bytes(im: Image.Image, **params) -> bytes:
    out = io.BytesIO()
    im.save(out, "PNG", **params)
    return out.getvalue()


def jpeg_bytes(im: Image.Image, **params) -> bytes:
    out = io.BytesIO()
    im.save(out, "JPEG", **params)
    return out.getvalue()


def decode(img: Image.Image) -> list[zxingcpp.Barcode]:
    return [r for r in zxingcpp.read_barcodes(img) if r.format == zxingcpp.BarcodeFormat.QRCode]


def assert_decodes(img: Image.Image, content: str) -> None:
    results = decode(img)
    assert [r.text for r in results] == [content]
    if hasattr(results[0], "ec_level"):
        assert results[0].ec_level == "H"


def blocks(cells: int, seed: int) -> Image.Image:
    """Black/white random cells: once scaled into the pad, each cell is about one
    module, so the logo looks like QR data to a decoder."""
    rng = random.Random(seed)
    im = Image.new("L", (cells, cells))
    im.putdata([0 if rng.random() < 0.5 else 255 for _ in range(cells * cells)])
    return im.resize((256, 256), Image.Resampling.NEAREST)


def checkerboard(cells: int) -> Image.Image:
    im = Image.new("L", (cells, cells))
    im.putdata([255 * ((x + y) % 2) for y in range(cells) for x in range(cells)])
    return im.resize((256, 256), Image.Resampling.NEAREST)


def fake_finder() -> Image.Image:
    im = Image.new("L", (7, 7), 0)
    draw = ImageDraw.Draw(im)
    draw.rectangle((1, 1, 5, 5), fill=255)
    draw.rectangle((2, 2, 4, 4), fill=0)
    return im.resize((256, 256), Image.Resampling.NEAREST)


def pixel_noise() -> Image.Image:
    rng = random.Random(7)
    return Image.frombytes("RGB", (256, 256), rng.randbytes(256 * 256 * 3))


HOSTILE_LOGOS = {
    "blocks8": blocks(8, 1),
    "blocks11": blocks(11, 2),
    "checker7": checkerboard(7),
    "checker9": checkerboard(9),
    "finder": fake_finder(),
    "noise": pixel_noise(),
}


@pytest.fixture(scope="module")
def hostile_logos() -> dict[str, bytes]:
    return {name: normalize_logo(png_bytes(im)) for name, im in HOSTILE_LOGOS.items()}


@pytest.fixture(scope="module")
def logo() -> bytes:
    return normalize_logo(png_bytes(blocks(9, 3).convert("RGB")))


def open_png(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    assert im.format == "PNG"
    return im


def rasterise(svg: str, width: int = 400) -> Image.Image:
    return Image.open(io.BytesIO(bytes(resvg_py.svg_to_bytes(svg_string=svg, width=width))))


# --- PNG ---------------------------------------------------------------------


@pytest.mark.parametrize("content", CONTENTS)
def test_png_without_logo_decodes(content):
    im = open_png(render_png(content))
    assert 300 <= im.width <= 400 and im.width == im.height
    assert_decodes(im, content)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("content", CONTENTS)
def test_png_with_hostile_logos_decodes(content, shape, hostile_logos):
    for name, logo in hostile_logos.items():
        im = open_png(render_png(content, logo, logo_shape=shape))
        assert 300 <= im.width <= 400, name
        assert_decodes(im, content)
        # A phone sees a smaller, softer picture than the file.
        assert_decodes(
            im.resize((im.width // 2, im.height // 2), Image.Resampling.BILINEAR), content
        )
        assert_decodes(im.filter(ImageFilter.GaussianBlur(1.5)), content)


@pytest.mark.parametrize("content", CONTENTS)
def test_logo_only_touches_the_centre(content, logo):
    plain = open_png(render_png(content)).convert("RGB")
    square, round_ = (open_png(render_png(content, logo, logo_shape=s)) for s in SHAPES)
    assert square.size == round_.size == plain.size
    # Everything outside the pad (finder, timing and format patterns, most data) is
    # pixel-for-pixel unchanged. The square pad's straight sides cross dark modules,
    # so its difference box is the pad itself.
    left, top, right, bottom = ImageChops.difference(plain, square).getbbox()
    modules = symbol_modules(content)
    symbol_px = plain.width * modules / (modules + 8)  # default border: 4 modules a side
    assert right - left == bottom - top <= 0.22 * symbol_px
    assert abs((left + right) / 2 - plain.width / 2) <= 1
    assert abs((top + bottom) / 2 - plain.height / 2) <= 1
    r_left, r_top, r_right, r_bottom = ImageChops.difference(plain, round_).getbbox()
    assert left <= r_left and top <= r_top and r_right <= right and r_bottom <= bottom
    # A quiet white margin (10% of the pad) between the code and the logo, checked
    # along the axes, away from the square's rounded corners.
    cx, cy, margin = (left + right) // 2, (top + bottom) // 2, round(0.08 * (right - left))
    for img in (square, round_):
        grey = img.convert("L")
        ring = [
            grey.getpixel(xy)
            for k in range(1, margin)
            for d in (-2, 0, 2)
            for xy in (
                (left + k, cy + d),
                (right - 1 - k, cy + d),
                (cx + d, top + k),
                (cx + d, bottom - 1 - k),
            )
        ]
        assert set(ring) == {255}


def symbol_modules(content: str) -> int:
    return segno.make_qr(content, error="h", boost_error=False).symbol_size(border=0)[0]


def test_png_is_optimised_and_deterministic(logo):
    content = CONTENTS[1]
    plain = render_png(content)
    assert open_png(plain).mode == "1"  # 1-bit: a few hundred bytes to a couple of kB
    assert len(plain) < 3_000
    assert render_png(content) == plain
    assert render_png(content, logo) == render_png(content, logo)
    assert render_png(content, logo, logo_shape="round") != render_png(content, logo)
    assert b"tEXt" not in plain and b"tIME" not in render_png(content, logo)


def test_size_hint_is_kept_within_a_sensible_width():
    content = CONTENTS[0]
    assert open_png(render_png(content, size_hint=11)).width > open_png(render_png(content)).width
    for hint in (1, 8, 50):
        assert 300 <= open_png(render_png(content, size_hint=hint)).width <= 400


def test_unknown_shape_is_refused(logo):
    with pytest.raises(ValueError, match="logo_shape"):
        render_png(CONTENTS[0], logo, logo_shape="star")
    with pytest.raises(ValueError, match="logo_shape"):
        render_svg(CONTENTS[0], logo, logo_shape="star")


def test_render_refuses_a_broken_logo():
    with pytest.raises(LogoError) as exc:
        render_png(CONTENTS[0], b"not an image")
    assert exc.value.code == "logo_unsupported_format"


# --- SVG ---------------------------------------------------------------------

XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
SVG_NS = "{http://www.w3.org/2000/svg}"


def parse_svg(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # noqa: S314 (our own output)
    assert root.tag == f"{SVG_NS}svg"
    assert root.get("viewBox")
    for el in root.iter():
        assert not el.tag.endswith(("script", "foreignObject", "use"))
        for attr, value in el.attrib.items():
            if attr.endswith("href"):
                assert value.startswith("data:image/png;base64,"), attr
    return root


@pytest.mark.parametrize("content", CONTENTS)
def test_svg_without_logo(content):
    svg = render_svg(content)
    root = parse_svg(svg)
    assert root.find(f"{SVG_NS}image") is None
    _, _, vw, vh = (float(v) for v in root.get("viewBox").split())
    assert vw == vh
    assert_decodes(rasterise(svg), content)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("content", CONTENTS)
def test_svg_with_hostile_logos_decodes(content, shape, hostile_logos):
    for name, logo in hostile_logos.items():
        svg = render_svg(content, logo, logo_shape=shape)
        root = parse_svg(svg)
        image = root.find(f"{SVG_NS}image")
        assert image is not None, name
        backdrop = root.find(f"{SVG_NS}{'circle' if shape == 'round' else 'rect'}")
        assert backdrop is not None and backdrop.get("fill") == "#fff"
        embedded = Image.open(io.BytesIO(_data_uri_bytes(image.get(XLINK_HREF))))
        assert embedded.format == "PNG" and embedded.mode == "RGBA"
        _, _, vw, _ = (float(v) for v in root.get("viewBox").split())
        assert float(image.get("width")) <= 0.22 * (vw - 8)
        assert_decodes(rasterise(svg), content)
        assert_decodes(rasterise(svg, width=200), content)


def _data_uri_bytes(uri: str) -> bytes:
    return base64.b64decode(uri.removeprefix("data:image/png;base64,"), validate=True)


@pytest.mark.parametrize("shape", SHAPES)
def test_svg_and_png_have_the_same_proportions(shape, logo):
    content = CONTENTS[2]
    png = open_png(render_png(content, logo, logo_shape=shape))
    svg_px = rasterise(render_svg(content, logo, logo_shape=shape), width=png.width).convert("RGB")
    box_png = ImageChops.difference(open_png(render_png(content)).convert("RGB"), png).getbbox()
    plain_svg = rasterise(render_svg(content), width=png.width).convert("RGB")
    box_svg = ImageChops.difference(plain_svg, svg_px).getbbox()
    assert all(abs(a - b) <= 2 for a, b in zip(box_png, box_svg, strict=True))


def test_svg_has_an_intrinsic_size_and_is_deterministic(logo):
    svg = render_svg(CONTENTS[1], logo)
    root = parse_svg(svg)
    assert root.get("width") == root.get("height")
    assert 300 <= int(root.get("width")) <= 400
    assert render_svg(CONTENTS[1], logo) == svg


def test_rendering_is_the_same_in_another_process(logo, tmp_path):
    """Workers cache by (content, logo hash): every process must produce the same bytes."""
    (tmp_path / "logo.png").write_bytes(logo)
    script = (
        "import hashlib, sys; from portal.scan.qrimage import render_png, render_svg;"
        "logo = open(sys.argv[1], 'rb').read();"
        f"print(hashlib.sha256(render_png({CONTENTS[1]!r}, logo)).hexdigest(),"
        f" hashlib.sha256(render_svg({CONTENTS[1]!r}, logo).encode()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "logo.png")],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.split()
    assert out == [
        hashlib.sha256(render_png(CONTENTS[1], logo)).hexdigest(),
        hashlib.sha256(render_svg(CONTENTS[1], logo).encode()).hexdigest(),
    ]


# --- normalize_logo ------------------------------------------------------------


def assert_normalised(data: bytes) -> Image.Image:
    im = open_png(data)
    assert im.mode == "RGBA"
    assert im.width == im.height <= 256
    assert not {"exif", "icc_profile", "comment"} & im.info.keys()
    assert not getattr(im, "text", {})
    return im


def test_png_logo_is_accepted():
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "secret location")
    src = Image.new("RGB", (600, 300), (200, 30, 30))
    im = assert_normalised(normalize_logo(png_bytes(src, pnginfo=info)))
    assert im.size == (256, 256)
    # Aspect kept: a 2:1 picture is centred on a transparent square.
    assert im.getpixel((128, 128)) == (200, 30, 30, 255)
    assert im.getpixel((128, 10))[3] == 0
    assert im.getchannel("A").getbbox() == (0, 64, 256, 192)


def test_small_logo_is_not_upscaled():
    im = assert_normalised(normalize_logo(png_bytes(Image.new("RGB", (40, 40), "navy"))))
    assert im.size == (40, 40)


def test_jpeg_logo_is_accepted_and_exif_dropped():
    src = Image.new("RGB", (2000, 1000), (20, 120, 220))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    exif[0x010F] = "Camera maker"
    im = assert_normalised(normalize_logo(jpeg_bytes(src, exif=exif.tobytes(), quality=95)))
    # The orientation was applied: the picture is now taller than wide.
    assert im.getchannel("A").getbbox() == (64, 0, 192, 256)
    r, g, b, a = im.getpixel((128, 128))
    assert a == 255 and abs(r - 20) < 8 and abs(g - 120) < 8 and abs(b - 220) < 8


def test_cmyk_jpeg_is_converted_to_rgb():
    src = Image.new("CMYK", (300, 300), (0, 255, 255, 0))  # pure red in CMYK
    im = assert_normalised(normalize_logo(jpeg_bytes(src, quality=95)))
    r, g, b, a = im.getpixel((128, 128))
    assert a == 255 and r > 240 and g < 15 and b < 15


@pytest.mark.parametrize(
    ("mode", "colour", "expected"),
    [
        ("P", None, None),
        ("LA", (100, 128), (100, 100, 100, 128)),
        ("1", 1, (255, 255, 255, 255)),
        ("I;16", 40000, (155, 155, 155, 255)),
    ],
)
def test_png_modes_are_converted(mode, colour, expected):
    if mode == "P":
        src = Image.new("P", (64, 64), 1)
        src.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
        src.info["transparency"] = 0
        ImageDraw.Draw(src).rectangle((0, 0, 31, 63), fill=0)
        im = assert_normalised(normalize_logo(png_bytes(src)))
        assert im.getpixel((10, 10))[3] == 0
        assert im.getpixel((50, 10)) == (0, 200, 0, 255)
        return
    im = assert_normalised(normalize_logo(png_bytes(Image.new(mode, (64, 64), colour))))
    assert im.getpixel((10, 10)) == expected


def test_normalised_logo_is_deterministic_and_idempotent():
    data = jpeg_bytes(blocks(9, 5).convert("RGB"))
    once = normalize_logo(data)
    assert normalize_logo(data) == once
    assert normalize_logo(once) == once


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "logo_unsupported_format"),
        (b"hello, this is not an image", "logo_unsupported_format"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "logo_unsupported_format"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "logo_invalid"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 40, "logo_invalid"),
    ],
)
def test_non_images_are_refused(data, code):
    with pytest.raises(LogoError) as exc:
        normalize_logo(data)
    assert exc.value.code == code
    assert exc.value.message


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "BMP", "TIFF"])
def test_other_formats_are_refused(fmt):
    out = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(out, fmt)
    with pytest.raises(LogoError) as exc:
        normalize_logo(out.getvalue())
    assert exc.value.code == "logo_unsupported_format"


def test_truncated_png_is_refused():
    data = png_bytes(pixel_noise())
    with pytest.raises(LogoError) as exc:
        normalize_logo(data[: len(data) // 2])
    assert exc.value.code == "logo_invalid"


def test_animated_png_is_refused():
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    out = io.BytesIO()
    frames[0].save(out, "PNG", save_all=True, append_images=frames[1:])
    with pytest.raises(LogoError) as exc:
        normalize_logo(out.getvalue())
    assert exc.value.code == "logo_unsupported_format"


def test_oversized_file_is_refused():
    data = png_bytes(pixel_noise())
    assert len(data) > 100_000
    with pytest.raises(LogoError) as exc:
        normalize_logo(data, max_bytes=100_000)
    assert exc.value.code == "logo_too_large"


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of one colour, compressed row by row: tiny on disk, huge in memory."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed pixels
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "side",
    [
        20_000,  # beyond twice Pillow's MAX_IMAGE_PIXELS: Pillow raises
        10_000,  # between Pillow's limit and twice that: Pillow would only warn
        5_000,  # under Pillow's limit, over ours
    ],
)
def test_decompression_bomb_is_refused_without_decoding(side, monkeypatch):
    data = bomb_png(side, side)
    assert len(data) < 512_000

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(LogoError) as exc:
        normalize_logo(data)
    assert exc.value.code == "logo_too_large"


def test_large_but_allowed_jpeg_is_accepted():
    im = assert_normalised(normalize_logo(jpeg_bytes(Image.new("RGB", (4000, 3000), "teal"))))
    assert im.size == (256, 256)

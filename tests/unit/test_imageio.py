"""decode_image on real encoded files: every odd input decodes to BGR uint8 or fails classified."""

from __future__ import annotations

import io
import pickle
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from arcflow import imageio
from arcflow.errors import DataFormatError
from arcflow.imageio import BadImage, decode_image

pytestmark = pytest.mark.unit


def _frame(h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth BGR test image (compresses and round-trips through JPEG well)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (h + w)], -1).astype(np.uint8)


def _cv2(ext: str, image: np.ndarray, params: tuple[int, ...] = ()) -> bytes:
    ok, buf = cv2.imencode(ext, image, list(params))
    assert ok
    return buf.tobytes()


def _pil(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kwargs)
    return out.getvalue()


def _reason(buf: bytes, **kwargs: object) -> str:
    with pytest.raises(BadImage) as err:
        decode_image(buf, where="in/x.img", **kwargs)  # type: ignore[arg-type]
    assert str(err.value).startswith("in/x.img: ")
    assert isinstance(err.value, DataFormatError)
    return err.value.reason


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def _bilevel_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit greyscale PNG, written chunk by chunk (never held decoded)."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte 0 + packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


# -- ordinary images -------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tiff", ".webp"])
def test_lossless_colour_roundtrips(ext: str) -> None:
    frame = _frame()
    params = (cv2.IMWRITE_WEBP_QUALITY, 101) if ext == ".webp" else ()
    out = decode_image(_cv2(ext, frame, params), where="x")
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, frame)


def test_jpeg_matches_opencv_and_numpy_buffers_work() -> None:
    jpeg = _cv2(".jpg", _frame(), (cv2.IMWRITE_JPEG_QUALITY, 95))
    ref = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(decode_image(jpeg, where="x"), ref)
    np.testing.assert_array_equal(decode_image(np.frombuffer(jpeg, np.uint8), where="x"), ref)
    np.testing.assert_array_equal(
        decode_image(cv2.imencode(".jpg", _frame())[1], where="x").shape, ref.shape
    )
    np.testing.assert_array_equal(decode_image(bytearray(jpeg), where="x"), ref)
    with pytest.raises(TypeError, match="uint8"):
        decode_image(np.frombuffer(jpeg, np.uint8).astype(np.int16), where="x")


def test_trailing_zeros_after_jpeg_eoi_are_allowed() -> None:
    jpeg = _cv2(".jpg", _frame())
    np.testing.assert_array_equal(
        decode_image(jpeg + b"\x00" * 300, where="x"), decode_image(jpeg, where="x")
    )


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_grayscale_becomes_three_equal_channels(ext: str) -> None:
    grey = _frame()[:, :, 0]
    out = decode_image(_cv2(ext, grey), where="x")
    assert out.shape == (*grey.shape, 3)
    assert (out[:, :, 0] == out[:, :, 1]).all() and (out[:, :, 1] == out[:, :, 2]).all()
    if ext == ".png":
        np.testing.assert_array_equal(out[:, :, 0], grey)


def test_rgba_is_composited_on_black() -> None:
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[...] = (10, 20, 30, 255)
    rgba[0, 0] = (200, 100, 50, 128)  # half transparent
    rgba[0, 1] = (200, 100, 50, 0)  # fully transparent
    out = decode_image(_pil(Image.fromarray(rgba, "RGBA"), "PNG"), where="x")
    assert out.shape == (4, 5, 3)
    # BGR, each channel round(c * 128 / 255): 50 -> 25, 100 -> 50, 200 -> 100
    assert out[0, 0].tolist() == [25, 50, 100]
    assert out[0, 1].tolist() == [0, 0, 0]
    assert out[1, 1].tolist() == [30, 20, 10]


def test_grey_alpha_is_composited_on_black() -> None:
    la = np.zeros((3, 3, 2), np.uint8)
    la[...] = (200, 255)
    la[1, 1] = (200, 64)  # round(200 * 64 / 255) = 50
    out = decode_image(_pil(Image.fromarray(la, "LA"), "PNG"), where="x")
    assert out[1, 1].tolist() == [50, 50, 50] and out[0, 0].tolist() == [200, 200, 200]


@pytest.mark.parametrize("ext", [".png", ".tiff"])
def test_16_bit_is_scaled_not_clipped(ext: str) -> None:
    img = np.zeros((2, 3, 3), np.uint16)
    img[0, 0], img[0, 1], img[0, 2] = 65535, 32768, 255
    img[1, 0] = (256, 512, 1024)
    out = decode_image(_cv2(ext, img), where="x")
    assert out.dtype == np.uint8
    assert out[0, 0].tolist() == [255] * 3
    assert out[0, 1].tolist() == [128] * 3
    assert out[0, 2].tolist() == [0] * 3  # clipping would give 255
    assert out[1, 0].tolist() == [1, 2, 4]


def test_16_bit_grey_png() -> None:
    grey = np.array([[65535, 32768, 0]], np.uint16)
    out = decode_image(_cv2(".png", grey), where="x")
    assert out[0, :, 0].tolist() == [255, 128, 0] and out.shape == (1, 3, 3)


def test_palette_png_expands_to_its_colours() -> None:
    index = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    im = Image.fromarray(index, "P")
    im.putpalette([255, 0, 0, 0, 128, 0, 10, 20, 30])  # RGB entries
    out = decode_image(_pil(im, "PNG"), where="x")
    assert out[0].tolist() == [[0, 0, 255], [0, 128, 0], [30, 20, 10]]
    assert out[1].tolist() == [[30, 20, 10], [0, 128, 0], [0, 0, 255]]


def test_palette_png_with_transparency_is_composited() -> None:
    im = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    im.putpalette([255, 255, 255, 0, 0, 200])
    out = decode_image(_pil(im, "PNG", transparency=0), where="x")
    assert out[0].tolist() == [[0, 0, 0], [200, 0, 0]]


def test_exif_orientation_is_not_applied() -> None:
    frame = _frame(40, 70)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° CW to display"
    jpeg = _pil(Image.fromarray(frame[:, :, ::-1]), "JPEG", exif=exif.tobytes(), quality=95)
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (70, 40)
    out = decode_image(jpeg, where="x")
    assert out.shape == (40, 70, 3)  # the stored pixel grid the landmarks refer to


def test_gif_first_frame() -> None:
    im = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    im.putpalette([0, 0, 0, 0, 255, 0])
    assert decode_image(_pil(im, "GIF"), where="x")[0, 1].tolist() == [0, 255, 0]


# -- failures --------------------------------------------------------------------------------


def test_empty() -> None:
    assert _reason(b"") == "empty"
    assert _reason(np.zeros(0, np.uint8)) == "empty"  # type: ignore[arg-type]


def test_corrupt_bytes() -> None:
    assert _reason(b"\xff\xd8 not really a jpeg") == "corrupt"
    png = bytearray(_cv2(".png", _frame()))
    idat = png.index(b"IDAT")
    png[idat + 40 : idat + 60] = b"\x00" * 20  # damaged compressed data, CRC now wrong
    assert _reason(bytes(png)) == "corrupt"
    assert _reason(b"II*\x00garbage") == "corrupt"  # TIFF signature, broken header
    assert _reason(b"\x89PNG\r\n\x1a\n") == "corrupt"  # signature only


def test_unknown_formats_are_unsupported() -> None:
    assert _reason(b"hello, this is text, not an image") == "unsupported"
    ico = _pil(Image.new("RGB", (16, 16)), "ICO")  # Pillow reads it, OpenCV does not
    assert _reason(ico) == "unsupported"


def test_float_samples_are_unsupported() -> None:
    assert _reason(_cv2(".tiff", np.ones((3, 3), np.float32))) == "unsupported"


@pytest.mark.parametrize("cut", [2, 1, 10, 500])
def test_truncated_jpeg_is_corrupt(cut: int) -> None:
    jpeg = _cv2(".jpg", _frame(96, 128), (cv2.IMWRITE_JPEG_QUALITY, 95))
    assert jpeg.endswith(b"\xff\xd9")
    with pytest.raises(BadImage, match="truncated") as err:
        decode_image(jpeg[:-cut] + b"\x00" * 8, where="x")  # zero padding does not hide it
    assert err.value.reason == "corrupt"


def test_truncated_progressive_jpeg_is_corrupt() -> None:
    jpeg = _cv2(".jpg", _frame(96, 128), (cv2.IMWRITE_JPEG_PROGRESSIVE, 1))
    assert decode_image(jpeg, where="x").shape == (96, 128, 3)
    assert _reason(jpeg[: len(jpeg) * 2 // 3]) == "corrupt"


def test_truncated_jpeg_header_is_corrupt() -> None:
    jpeg = _cv2(".jpg", _frame())
    assert _reason(jpeg[:30]) == "corrupt"


@pytest.mark.parametrize("cut", [12, 4, 300])
def test_truncated_png_is_corrupt(cut: int) -> None:
    png = _cv2(".png", _frame())
    with pytest.raises(BadImage, match="truncated") as err:
        decode_image(png[:-cut], where="x")
    assert err.value.reason == "corrupt"


def test_bytes_after_png_iend_are_allowed() -> None:
    png = _cv2(".png", _frame())
    np.testing.assert_array_equal(decode_image(png + b"trailer", where="x"), _frame())


def test_max_pixels_boundary() -> None:
    png = _cv2(".png", _frame(10, 20))
    assert decode_image(png, where="x", max_pixels=200).shape == (10, 20, 3)
    assert _reason(png, max_pixels=199) == "too_large"
    assert _reason(_cv2(".jpg", _frame(10, 20)), max_pixels=199) == "too_large"
    assert _reason(_cv2(".tiff", _frame(10, 20)), max_pixels=199) == "too_large"


def test_bomb_png_is_refused_from_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    small = _bilevel_png(200, 100)  # same writer: its output is a valid PNG
    assert decode_image(small, where="x").shape == (100, 200, 3)
    bomb = _bilevel_png(20000, 20000)  # 400 M pixels (1.2 GB as BGR) in ~50 KB
    assert len(bomb) < 100_000

    def no_decoding(*_args: object) -> None:
        raise AssertionError("the bomb reached the decoder")

    monkeypatch.setattr(imageio.cv2, "imdecode", no_decoding)
    start = time.perf_counter()
    with pytest.raises(BadImage, match="20000x20000") as err:
        decode_image(bomb, where="bomb.png")
    assert time.perf_counter() - start < 1.0
    assert err.value.reason == "too_large" and "bomb.png" in str(err.value)


def test_bomb_jpeg_header_is_refused() -> None:
    jpeg = bytearray(_cv2(".jpg", _frame()))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    assert _reason(bytes(jpeg)) == "too_large"


@pytest.mark.parametrize("side", [10_000, 20_000])  # below / above Pillow's own hard limit
def test_bomb_bmp_header_is_refused(side: int) -> None:
    """Other formats are sized through Pillow's lazy open, which reads the header only."""
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 24, 0, 0, 0, 0, 0, 0)
    bmp = b"BM" + struct.pack("<IHHI", 14 + 40, 0, 0, 14 + 40) + info
    start = time.perf_counter()
    assert _reason(bmp) == "too_large"
    assert time.perf_counter() - start < 1.0


def test_bad_image_pickles_with_its_reason() -> None:
    try:
        decode_image(b"", where="x")
    except BadImage as exc:
        back = pickle.loads(pickle.dumps(exc))
        assert back.reason == "empty" and str(back) == str(exc)
    with pytest.raises(ValueError, match="reason"):
        BadImage("x", "nonsense")

"""Decode arbitrary input images for alignment: BGR uint8, or one clear, classified error.

:func:`decode_image` turns encoded bytes (JPEG, PNG, TIFF, BMP, WebP, GIF, … whatever this
OpenCV build reads) into an ``H x W x 3`` BGR ``uint8`` array, or raises :class:`BadImage`
whose ``reason`` is one of:

- ``"empty"``: zero bytes;
- ``"corrupt"``: a recognised format whose bytes are damaged or cut short;
- ``"too_large"``: the header declares more than ``max_pixels`` pixels, or more than
  ``max_bytes`` would be needed to decode it (refused before any pixel is decoded, so a
  decompression bomb — a few KB declaring 20000x20000 — costs nothing), or decoding ran out of
  memory all the same;
- ``"unsupported"``: not a recognised image format, or pixels this module cannot represent
  as 8-bit BGR (e.g. floating-point samples).

Decisions (the same for every format):

- **Truncation is corrupt.** libjpeg can decode a JPEG cut short, filling the missing rows
  with grey (OpenCV 4.x returns such an image without an error), which would put a silently
  damaged face into a dataset. A JPEG must therefore have an EOI marker (``FF D9``) after its
  first scan header (trailing bytes after it, such as padding zeros, are allowed; an EOI inside
  an EXIF thumbnail, which comes before the scan, does not count), and a PNG's chunks must
  run, each within the buffer, up to an ``IEND`` chunk. Other formats rely on their decoder.
- **Alpha is composited on black**: ``out = colour * alpha / max``, rounded. Black is the
  colour the aligner gives pixels outside the frame, so a transparent region looks like a
  missing one.
- **Grey becomes BGR** by replicating the channel; palette images are expanded.
- **16-bit samples become 8-bit by scaling** (``v >> 8``, i.e. 65535 -> 255, 32768 -> 128),
  never by clipping (which would turn almost every 16-bit image white).
- **EXIF orientation is not applied.** Landmark annotations (RecordIO labels, 5-point files)
  and benchmark protocols address the stored pixel grid; rotating the pixels would move the
  face away from its landmarks. (OpenCV's ``IMREAD_COLOR`` would apply it; this module decodes
  with ``IMREAD_UNCHANGED``, which does not.)
- The first frame/page of a multi-frame file is used.

Pixel counts come from the header without decoding: PNG's IHDR and JPEG's SOF are parsed
here; other formats use Pillow's lazy ``Image.open`` (which reads only the header). Pillow
itself refuses headers above ``2 * PIL.Image.MAX_IMAGE_PIXELS`` (about 179 M); those are
reported as ``too_large`` whatever ``max_pixels`` is.
"""

from __future__ import annotations

import io
import struct
import warnings

import cv2
import numpy as np

from arcflow.errors import DataFormatError, first_line

#: At most what decoding needs per pixel: the decoder's 16-bit RGBA (8 bytes) and the 8-bit BGR
#: output (3); alpha compositing and 16-bit scaling add one band of rows (:data:`_BAND_PIXELS`).
BYTES_PER_PIXEL = 11
DEFAULT_MAX_BYTES = 1 << 30
_BAND_PIXELS = 1 << 20

#: The values of :attr:`BadImage.reason`.
REASONS = ("empty", "corrupt", "too_large", "unsupported")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
# JPEG markers without a length field: TEM, RST0-7, SOI (EOI ends the walk).
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD9)}
# Start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Signatures of other formats OpenCV reads: a damaged one is corrupt, not unsupported.
_OTHER_SIGNATURES = {
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"BM": "BMP",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
}
#: Pillow format names of the formats every OpenCV build this project supports decodes; when
#: OpenCV fails on any other format Pillow recognises, the file is reported unsupported.
_OPENCV_FORMATS = {"BMP", "GIF", "PPM", "TIFF", "WEBP"}


class BadImage(DataFormatError):
    """An image that cannot be decoded; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, message: str, reason: str = "corrupt", *, hint: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"reason must be one of {REASONS}, got {reason!r}")
        super().__init__(message, hint=hint)
        self.reason = reason


def _bad(where: str, reason: str, detail: str) -> BadImage:
    return BadImage(f"{where}: {reason} image: {detail}", reason)


def _as_bytes(buf: bytes | bytearray | memoryview | np.ndarray) -> bytes:
    if isinstance(buf, np.ndarray):
        if buf.dtype != np.uint8:
            raise TypeError(f"an encoded image buffer must be uint8, got {buf.dtype}")
        return buf.tobytes()
    if isinstance(buf, bytes):
        return buf
    if isinstance(buf, (bytearray, memoryview)):
        return bytes(buf)
    raise TypeError(f"expected bytes or a uint8 numpy array, got {type(buf).__name__}")


def _png_size(data: bytes, where: str, complete: bool = True) -> tuple[int, int]:
    """(width, height) from IHDR; ``complete``: checks the chunk structure reaches IEND (no
    decoding)."""
    if len(data) < 33 or data[12:16] != b"IHDR" or data[8:12] != b"\x00\x00\x00\x0d":
        raise _bad(where, "corrupt", "PNG without a valid IHDR chunk")
    width, height = struct.unpack_from(">II", data, 16)
    if complete and not data.endswith(_PNG_IEND):  # trailing bytes after IEND: walk the chunks
        pos = 8
        while True:
            if pos + 8 > len(data):
                raise _bad(where, "corrupt", "PNG truncated (no IEND chunk)")
            (length,) = struct.unpack_from(">I", data, pos)
            end = pos + 12 + length  # length, type, data, CRC
            if end > len(data):
                raise _bad(where, "corrupt", "PNG truncated (a chunk runs past the end)")
            if data[pos + 4 : pos + 8] == b"IEND":
                break
            pos = end
    return width, height


def _jpeg_size(data: bytes, where: str, complete: bool = True) -> tuple[int, int]:
    """(width, height) from the SOF segment; ``complete``: checks an EOI follows the scan
    (no decoding)."""
    pos, size = 2, None
    while True:
        if pos + 2 > len(data) or data[pos] != 0xFF:
            raise _bad(where, "corrupt", f"JPEG marker expected at byte {pos}")
        while pos + 1 < len(data) and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        if pos + 2 > len(data):
            raise _bad(where, "corrupt", "JPEG truncated in its header")
        marker = data[pos + 1]
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker == 0xD9:
            raise _bad(where, "corrupt", "JPEG ends before any image data")
        if pos + 4 > len(data):
            raise _bad(where, "corrupt", "JPEG truncated in its header")
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2 or pos + 2 + length > len(data):
            raise _bad(where, "corrupt", f"JPEG segment at byte {pos} runs past the end")
        if marker in _JPEG_SOF and size is None:
            if length < 8:
                raise _bad(where, "corrupt", "JPEG frame header too short")
            height, width = struct.unpack_from(">HH", data, pos + 5)
            size = (width, height)
            if not complete:
                break
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        pos += 2 + length
    if size is None:
        raise _bad(where, "corrupt", "JPEG without a frame header before its scan")
    if complete and data.rfind(b"\xff\xd9", pos) < 0:
        raise _bad(where, "corrupt", "JPEG truncated (no EOI marker after the image data)")
    if size[1] == 0:
        raise _bad(where, "unsupported", "JPEG with its height deferred to a DNL marker")
    return size


def _other_size(data: bytes, where: str) -> tuple[int, int, str]:
    """(width, height, Pillow's format name) via Pillow's lazy open: reads the header only."""
    from PIL import Image, UnidentifiedImageError

    known = next((name for sig, name in _OTHER_SIGNATURES.items() if data.startswith(sig)), None)
    if known is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        known = "WebP"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bomb and corrupt-metadata warnings: decided here
            with Image.open(io.BytesIO(data)) as im:
                return im.size[0], im.size[1], str(im.format)
    except Image.DecompressionBombError as exc:
        raise _bad(where, "too_large", str(exc)) from None
    except UnidentifiedImageError:
        if known:
            raise _bad(where, "corrupt", f"{known} with an unreadable header") from None
        raise _bad(where, "unsupported", "not a recognised image format") from None
    except (OSError, ValueError, SyntaxError, struct.error, EOFError) as exc:
        raise _bad(where, "corrupt", f"unreadable header ({exc})") from None


def _to_bgr8(image: np.ndarray, where: str) -> np.ndarray:
    """Grey/grey+alpha/BGR/BGRA, 8 or 16 bit -> BGR uint8 (alpha composited on black).

    Compositing and 16-to-8-bit scaling run in bands of rows written into the output, so the
    extra memory is the output plus one band, whatever the image's size.
    """
    if image.dtype == np.uint8:
        top = 255
    elif image.dtype == np.uint16:
        top = 65535
    else:
        raise _bad(where, "unsupported", f"{image.dtype} samples (only 8- and 16-bit decode)")
    if image.ndim == 2:
        image = image[:, :, None]
    height, width, channels = image.shape
    if channels not in (1, 2, 3, 4):
        raise _bad(where, "unsupported", f"{channels} channels")
    if top == 255 and channels in (1, 3):
        return _grey_to_bgr(np.ascontiguousarray(image))
    out = np.empty((height, width, 1 if channels <= 2 else 3), np.uint8)
    rows = max(1, _BAND_PIXELS // max(1, width))
    for start in range(0, height, rows):
        band = image[start : start + rows]
        if channels in (2, 4):
            wide = band.astype(np.uint32)
            band = (wide[:, :, :-1] * wide[:, :, -1:] + top // 2) // top
        out[start : start + rows] = band >> 8 if top == 65535 else band
    return _grey_to_bgr(out)


def _grey_to_bgr(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.shape[2] == 1 else image


def image_header(data: bytes, where: str, *, complete: bool = True) -> tuple[int, int, str]:
    """``(width, height, format)`` from the header alone (PNG IHDR, JPEG SOF, else Pillow's
    lazy open); ``complete`` also requires the file to run to its end marker."""
    if data.startswith(_PNG_SIGNATURE):
        (width, height), fmt = _png_size(data, where, complete), "PNG"
    elif data.startswith(b"\xff\xd8"):
        (width, height), fmt = _jpeg_size(data, where, complete), "JPEG"
    else:
        width, height, fmt = _other_size(data, where)
    if width <= 0 or height <= 0:
        raise _bad(where, "corrupt", f"header declares a {width}x{height} image")
    return width, height, fmt


def check_budget(width: int, height: int, where: str, *, max_pixels: int, max_bytes: int) -> None:
    """Refuse (``too_large``) an image whose declared size exceeds either budget: pixels, or
    the bytes decoding may need (:data:`BYTES_PER_PIXEL` per pixel at worst)."""
    pixels = width * height
    if pixels > max_pixels:
        raise _bad(
            where, "too_large", f"{width}x{height} = {pixels:,} pixels > max_pixels={max_pixels:,}"
        )
    if pixels * BYTES_PER_PIXEL > max_bytes:
        raise _bad(
            where,
            "too_large",
            f"{width}x{height} may need {pixels * BYTES_PER_PIXEL:,} bytes to decode > "
            f"max_bytes={max_bytes:,}",
        )


def imdecode(data: bytes, flags: int, where: str) -> np.ndarray | None:
    """``cv2.imdecode`` whose failures are :class:`BadImage`, never a raw MemoryError."""
    try:
        return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except MemoryError:
        raise _bad(where, "too_large", "out of memory while decoding") from None
    except cv2.error as exc:
        raise _bad(where, "corrupt", f"the decoder failed ({first_line(exc, 120)})") from None


def decode_image(
    buf: bytes | bytearray | memoryview | np.ndarray,
    *,
    where: str,
    max_pixels: int = 64_000_000,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> np.ndarray:
    """Decode an encoded image to ``H x W x 3`` BGR ``uint8``; raise :class:`BadImage`.

    ``buf`` is the file's bytes (or a ``uint8`` numpy array of them, e.g. from
    ``np.frombuffer`` or ``cv2.imencode``); ``where`` names it in the error message. Images
    whose header declares more than ``max_pixels`` pixels, or that may need more than
    ``max_bytes`` to decode, are refused before decoding. See the module docstring for
    truncation, alpha, 16-bit and EXIF handling.
    """
    data = _as_bytes(buf)
    if not data:
        raise _bad(where, "empty", "zero bytes")
    width, height, fmt = image_header(data, where)
    check_budget(width, height, where, max_pixels=max_pixels, max_bytes=max_bytes)
    image = imdecode(data, cv2.IMREAD_UNCHANGED, where)
    if image is None or image.size == 0:
        if fmt in ("PNG", "JPEG") or fmt in _OPENCV_FORMATS:
            raise _bad(where, "corrupt", f"damaged {fmt} data (the decoder rejected it)")
        raise _bad(where, "unsupported", f"{fmt} images are not decoded by this OpenCV build")
    try:
        return _to_bgr8(image, where)
    except MemoryError:
        raise _bad(where, "too_large", "out of memory while converting to 8-bit BGR") from None

"""Turning a ``POST /v1/read`` request into decoded images, or into a clear 4xx.

Two forms are accepted: ``multipart/form-data`` with one or more files in the field
``images``, and JSON ``{"images": ["<base64>", ...]}`` (a ``data:`` URL prefix is
allowed). Every limit of :class:`~persec.serve.config.ServeConfig` is checked before
the images are decoded, and each image is decoded with the pixel limit.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from PIL import Image
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from persec.image import ImageDecodeError, decode_image
from persec.serve.config import ServeConfig

FIELD = "images"


@dataclass
class RequestError(Exception):
    """A request the server refuses: HTTP ``status`` and a one-line ``message``."""

    status: int
    message: str


@dataclass
class Upload:
    """One image of a request: its name (file name or index) and encoded bytes."""

    name: str
    data: bytes


def _check_count(n: int, limits: ServeConfig) -> None:
    if n > limits.max_files:
        raise RequestError(413, f"{n} images in one request; at most {limits.max_files}")


async def read_uploads(request: Request, limits: ServeConfig) -> list[Upload]:
    """The images of a request, as sent.

    The body size limit itself is enforced by the app (``FastAPI(max_body_size=...)``),
    whatever the transfer encoding.

    Raises:
        RequestError: 413 for a body, file or file count over the limits; 400 for no
            image, a wrong field name or malformed JSON/base64; 415 for another
            content type.
    """
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limits.max_request_bytes:
        raise RequestError(413, f"request of {length} bytes exceeds {limits.max_request_bytes}")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        uploads = await _multipart(request, limits)
    elif kind == "application/json":
        uploads = await _json(request, limits)
    else:
        raise RequestError(
            415,
            f"send multipart/form-data (field '{FIELD}') or application/json, not {kind or 'nothing'}",
        )
    if not uploads:
        raise RequestError(400, f"no image: send one or more in the field '{FIELD}'")
    _check_count(len(uploads), limits)
    for upload in uploads:
        if len(upload.data) > limits.max_file_bytes:
            raise RequestError(
                413, f"{upload.name}: {len(upload.data)} bytes exceeds {limits.max_file_bytes}"
            )
    return uploads


async def _multipart(request: Request, limits: ServeConfig) -> list[Upload]:
    try:
        form = await request.form(
            max_files=limits.max_files,
            max_fields=limits.max_files + 16,
            max_part_size=limits.max_file_bytes + 1,
        )
    except HTTPException as e:  # starlette's own limits and malformed bodies
        status = 413 if e.status_code == 413 or "Too many" in str(e.detail) else 400
        detail = f"{e.detail}; at most {limits.max_files} images" if status == 413 else e.detail
        raise RequestError(status, f"multipart body refused: {detail}") from e
    except Exception as e:
        raise RequestError(400, f"unreadable multipart body: {e}") from e
    try:
        files = [v for v in form.getlist(FIELD) if isinstance(v, UploadFile)]
        if not files:
            others = sorted({k for k in form.keys() if k != FIELD})
            hint = f" (got the field(s) {', '.join(others)})" if others else ""
            raise RequestError(400, f"no file in the multipart field '{FIELD}'{hint}")
        _check_count(len(files), limits)
        uploads = []
        for i, f in enumerate(files):
            name = f.filename or f"image {i}"
            if f.size is not None and f.size > limits.max_file_bytes:  # before reading it
                raise RequestError(413, f"{name}: {f.size} bytes exceeds {limits.max_file_bytes}")
            uploads.append(Upload(name, await f.read()))
        return uploads
    finally:
        await form.close()  # the spooled temporary files


async def _json(request: Request, limits: ServeConfig) -> list[Upload]:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise RequestError(400, f"malformed JSON: {type(e).__name__}") from e
    items = body.get(FIELD) if isinstance(body, dict) else None
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise RequestError(400, f'JSON must be {{"{FIELD}": ["<base64>", ...]}}')
    _check_count(len(items), limits)
    uploads = []
    for i, text in enumerate(items):
        payload = text
        if text.startswith("data:"):
            head, comma, payload = text.partition(",")
            if not comma:
                raise RequestError(400, f"image {i}: a data URL without its comma and data")
        try:
            uploads.append(Upload(f"image {i}", base64.b64decode(payload, validate=True)))
        except (binascii.Error, ValueError) as e:
            raise RequestError(400, f"image {i}: not base64 ({e})") from e
    return uploads


def decode_upload(upload: Upload, limits: ServeConfig) -> Image.Image:
    """The RGB image of an upload.

    Raises:
        RequestError: 413 over the pixel limit, 422 for an empty, truncated or
            unknown-format file or a zero-size image.
    """
    try:
        image = decode_image(upload.data, limits.max_pixels)
    except ImageDecodeError as e:
        # Over the server's pixel limit, or PIL's own decompression-bomb guard.
        bomb = "exceeds the limit" in str(e) or "DecompressionBomb" in str(e)
        raise RequestError(413 if bomb else 422, f"{upload.name}: {e}") from e
    if image.width == 0 or image.height == 0:
        raise RequestError(422, f"{upload.name}: zero-size image")
    return image

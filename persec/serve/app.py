"""The ASGI app of ``persec serve``: the page, ``POST /v1/read``, ``GET /v1/health``,
``GET /v1/model``, the example images, and an OpenAPI description at
``/openapi.json``. Nothing is fetched from the network: the page's files are package
data, and FastAPI's documentation pages (which load scripts from a CDN) are off.

Errors are JSON ``{"error": "..."}`` with a 4xx status; anything unexpected is a 500
with ``{"error": "internal error"}`` and is logged, never a traceback in the response.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from persec._version import __version__
from persec.decoding.settings import describe_decoding
from persec.image import pad_to_width
from persec.inference.details import read_detailed
from persec.models.recognizer import Recognizer
from persec.serve.batcher import Batcher
from persec.serve.codes import CodePictures
from persec.serve.config import ServeConfig
from persec.serve.inputs import FIELD, RequestError, decode_upload, read_uploads
from persec.serve.pictures import model_picture

logger = logging.getLogger("persec.serve")

STATIC = Path(__file__).with_name("static")
EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def model_info(model: Recognizer) -> dict:
    """What ``GET /v1/model`` says about the model."""
    image = model.config.image
    return {
        "charset": "".join(model.charset.chars),
        "charset_size": len(model.charset),
        "input": {
            "height": image.height,
            "width": image.width,  # the largest width when the aspect ratio is kept
            "channels": image.channels,
            "keep_aspect": image.keep_aspect,
        },
        "decoder": model.config.decoder.name,
        "decoding": describe_decoding(model.config.decoder),
        "version": __version__,
    }


def example_images(folder: str) -> dict[str, Path]:
    """The example images the page offers, by file name (none when unset or absent)."""
    root = Path(folder) if folder else None
    if root is None or not root.is_dir():
        return {}
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXAMPLE_SUFFIXES)
    return {p.name: p for p in files}


def create_app(
    model: Recognizer, config: ServeConfig | None = None, work: Callable | None = None
) -> FastAPI:
    """The app serving ``model`` (put in eval mode) under ``config``'s limits.

    ``work`` reads a list of preprocessed images (C, H, W) into
    :class:`~persec.inference.details.DetailedReading` s, e.g. a
    :class:`~persec.serve.worker.ModelProcess`; by default ``model`` reads them in a
    thread of this process.
    """
    config = config or ServeConfig()
    model.eval()

    def in_thread(images: list[torch.Tensor]) -> list:
        return read_detailed(model, pad_to_width(images), config.top_k)  # (B, C, H, W) in

    work = work or in_thread
    code_pictures = CodePictures(config.codes) if config.codes else None

    batcher: Batcher = Batcher(work, config.max_batch, config.max_wait_ms)
    examples = example_images(config.examples)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="persec",
        version=__version__,
        description="Read text in word and line crops with a persec recognizer.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        max_body_size=config.max_request_bytes,  # whatever the transfer encoding
        telemetry={"auto_configure": False, "tracing": False, "metrics": False, "logs": False},
    )
    app.state.batcher = batcher
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(RequestError)
    async def refused(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"error": error.message}, status_code=error.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        where = "; ".join(
            f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in error.errors()
        )
        return JSONResponse({"error": f"invalid request: {where}"}, status_code=422)

    @app.exception_handler(Exception)
    async def failed(request: Request, error: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": "internal error"}, status_code=500)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/v1/health", summary="Is the server up (503 when its model process is down)")
    async def health() -> JSONResponse:
        if not getattr(work, "alive", True):
            return JSONResponse({"status": "model process down"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/v1/model", summary="The model: charset, input size, decoder, version")
    async def model_card() -> dict:
        return {**model_info(model), "codes": code_pictures is not None}

    @app.get("/v1/examples", summary="Names of the example images the page offers")
    async def example_list() -> list[str]:
        return list(examples)

    @app.get("/examples/{name}", include_in_schema=False)
    async def example(name: str) -> FileResponse:
        if name not in examples:
            raise RequestError(404, f"no example image {name!r}")
        return FileResponse(examples[name])

    @app.post(
        "/v1/read",
        summary="Read one or more images",
        description=(
            "multipart/form-data with files in the field 'images', or JSON "
            '{"images": ["<base64>", ...]}. Returns one object per image, in order: '
            "text, confidence, char_confidences, alternatives (and, with "
            "?pictures=true, 'input': the image as the model sees it, a PNG data URL, "
            "and with a server started with --codes, 'stroke_codes' and 'semantic_codes')."
        ),
        openapi_extra={"requestBody": _READ_BODY, "responses": _READ_ERRORS},
    )
    async def read(request: Request, pictures: bool = False) -> JSONResponse:
        uploads = await read_uploads(request, config)
        images, tensors = await asyncio.to_thread(_prepare, uploads)  # off the event loop
        readings = await batcher.submit(tensors)
        out = []
        for upload, image, tensor, reading in zip(uploads, images, tensors, readings, strict=True):
            row = {"name": upload.name, **reading.as_dict()}
            if pictures:
                row["input"] = model_picture(tensor)
                if code_pictures is not None:
                    row.update(await asyncio.to_thread(code_pictures.draw, image))
            out.append(row)
        return JSONResponse(out)  # plain JSON: FastAPI's generic encoder costs ~1 ms a row

    def _prepare(uploads: list) -> tuple[list, list[torch.Tensor]]:
        images = [decode_upload(u, config) for u in uploads]
        tensors = [model.preprocess(image) for image in images]  # (C, H, W)
        if code_pictures is None:
            images = [None] * len(images)  # the decoded pixels are not needed any longer
        return images, tensors

    return app


_READ_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    FIELD: {"type": "array", "items": {"type": "string", "format": "binary"}}
                },
                "required": [FIELD],
            }
        },
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    FIELD: {"type": "array", "items": {"type": "string", "format": "byte"}}
                },
                "required": [FIELD],
            }
        },
    },
}
_ERROR = {
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"error": {"type": "string"}}}
        }
    }
}
_READ_ERRORS = {
    "400": {"description": "no image, a wrong field, malformed JSON or base64", **_ERROR},
    "413": {"description": "too many images, or a body, file or image over the limits", **_ERROR},
    "415": {"description": "neither multipart/form-data nor application/json", **_ERROR},
    "422": {"description": "not an image, truncated or empty", **_ERROR},
}

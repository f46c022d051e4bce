"""The ASGI app of ``persec serve``: the page, ``POST /v1/read``, ``GET /v1/health``,
``GET /v1/model``, the example images, and an OpenAPI description at
``/openapi.json``. Nothing is fetched from the network: the page's files are package
data, and FastAPI's documentation pages (which load scripts from a CDN) are off.

Errors are JSON ``{"error": "..."}`` with a 4xx status; anything unexpected is a 500
with ``{"error": "internal error"}`` and is logged, never a traceback in the response.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image

from persec._version import __version__
from persec.decoding.settings import describe_decoding
from persec.inference.details import read_detailed
from persec.models.recognizer import Recognizer
from persec.serve.batcher import Batcher
from persec.serve.codes import CodePictures
from persec.serve.config import ServeConfig
from persec.serve.inputs import RequestError, decode_upload, read_uploads

logger = logging.getLogger("persec.serve")

STATIC = Path(__file__).with_name("static")
EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def model_picture(image: torch.Tensor) -> str:
    """A PNG data URL of a preprocessed image (C, H, W) in [-1, 1]: what the model sees."""
    pixels = ((image.float().clamp(-1, 1) + 1) * 127.5).round().byte()  # (C, H, W)
    array = pixels.permute(1, 2, 0).squeeze(-1).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def model_info(model: Recognizer) -> dict:
    """What ``GET /v1/model`` says about the model."""
    image = model.config.image
    return {
        "charset": "".join(model.charset.chars),
        "charset_size": len(model.charset),
        "input": {"height": image.height, "width": image.width, "channels": image.channels},
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
        return read_detailed(model, torch.stack(images), config.top_k)  # (B, C, H, W) in

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
    )
    app.state.batcher = batcher
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(RequestError)
    async def refused(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"error": error.message}, status_code=error.status)

    @app.exception_handler(Exception)
    async def failed(request: Request, error: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": "internal error"}, status_code=500)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/v1/health", summary="Is the server up")
    async def health() -> dict:
        return {"status": "ok"}

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
    )
    async def read(request: Request, pictures: bool = False) -> JSONResponse:
        uploads = await read_uploads(request, config)
        images = [decode_upload(u, config) for u in uploads]
        tensors = [model.preprocess(image) for image in images]  # (C, H, W)
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

    return app

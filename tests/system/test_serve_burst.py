"""A burst of 200 requests from 20 concurrent clients against `persec serve`'s app (in
process, through httpx's ASGI transport): every answer is a 200, belongs to its own
image, and the requests shared model calls."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import torch

from persec.data.layouts import open_dataset
from persec.image import decode_image
from persec.inference.details import read_detailed
from persec.inference.model import load_model
from persec.serve.app import create_app
from persec.serve.config import ServeConfig


def test_burst_of_200_requests_from_20_clients_shares_model_calls(learned):
    words = open_dataset(learned.words, charset="36_lowercase")
    blobs = [words.read_bytes(i % len(words)) for i in range(200)]  # 64 distinct images
    model = load_model(learned.model)
    app = create_app(model, ServeConfig(max_batch=32, max_wait_ms=20))

    async def burst() -> dict[int, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as http,
        ):

            async def one_client(k: int) -> list[tuple[int, httpx.Response]]:
                return [
                    (i, await http.post("/v1/read", files=[("images", ("w.png", blobs[i]))]))
                    for i in range(k, 200, 20)
                ]

            parts = await asyncio.gather(*(one_client(k) for k in range(20)))
        return {i: r for part in parts for i, r in part}

    responses = asyncio.run(burst())
    assert sorted(responses) == list(range(200))
    assert [r.text for r in responses.values() if r.status_code != 200] == []
    batcher = app.state.batcher
    assert batcher.items == 200 and batcher.calls < 100  # requests shared model calls
    # Each answer belongs to its own image: all 200 against reading them here in one batch.
    batch = torch.stack([model.preprocess(decode_image(blob)) for blob in blobs])
    alone = read_detailed(model, batch)
    got = [responses[i].json()[0] for i in range(200)]
    assert [g["text"] for g in got] == [a.text for a in alone]
    assert [g["confidence"] for g in got] == pytest.approx([a.confidence for a in alone], rel=1e-3)
    assert len({a.text for a in alone}) > 30  # the learned model tells the words apart

"""`persec serve`'s API with the framework's test client: every bad input gets a clear
4xx and the server keeps serving; a real crop reads as `persec read` reads it. The
concurrent burst is in tests/system/test_serve_burst.py."""

from __future__ import annotations

import base64

import pytest
import torch
from factories import bomb_png, jpeg, png, truncated_png
from fastapi.testclient import TestClient
from tiny import REPO, tiny_recognizer

import persec
from persec.inference.details import read_detailed
from persec.serve.app import create_app
from persec.serve.config import ServeConfig

LIMITS = ServeConfig(
    max_files=3, max_file_bytes=20_000, max_request_bytes=100_000, max_pixels=40_000, max_wait_ms=20
)
IIIT5K = REPO.parent / "shared" / "data" / "IIIT5K_train"


@pytest.fixture(scope="module")
def model():
    return tiny_recognizer(seed=3)


@pytest.fixture
def client(model, tmp_path):
    (tmp_path / "ex.png").write_bytes(png(seed=9))
    config = ServeConfig(**{**vars(LIMITS), "examples": str(tmp_path)})
    with TestClient(create_app(model, config)) as client:  # runs the lifespan (batcher)
        yield client


def _files(*blobs: bytes, field: str = "images") -> list:
    return [(field, (f"f{i}.png", blob, "image/png")) for i, blob in enumerate(blobs)]


def test_read_answers_each_image_in_order(client, model):
    images = [png(seed=1), jpeg(), png(64, 20, seed=2)]
    response = client.post("/v1/read", files=_files(*images))
    assert response.status_code == 200, response.text
    rows = response.json()
    assert [r["name"] for r in rows] == ["f0.png", "f1.png", "f2.png"]
    for row in rows:
        assert set(row) == {"name", "text", "confidence", "char_confidences", "alternatives"}
        assert len(row["char_confidences"]) == len(row["text"])
        assert 1 <= len(row["alternatives"]) <= LIMITS.top_k
    # The same numbers as reading the images here, one by one.
    from persec.image import decode_image

    for blob, row in zip(images, rows, strict=True):
        alone = read_detailed(model, model.preprocess(decode_image(blob))[None])[0]
        assert row["text"] == alone.text
        assert row["confidence"] == pytest.approx(alone.confidence, rel=1e-4, abs=1e-6)


def test_json_base64_and_pictures(client):
    blob = base64.b64encode(png(seed=4)).decode()
    response = client.post(
        "/v1/read?pictures=true", json={"images": [blob, f"data:image/png;base64,{blob}"]}
    )
    assert response.status_code == 200, response.text
    rows = response.json()
    assert rows[0]["text"] == rows[1]["text"]
    assert rows[0]["input"].startswith("data:image/png;base64,")


@pytest.mark.parametrize(
    ("request_kwargs", "status", "says"),
    [
        ({"files": _files(b"this is not an image")}, 422, "cannot decode"),
        ({"files": _files(truncated_png())}, 422, "cannot decode"),
        ({"files": _files(b"")}, 422, "zero-byte"),
        ({"files": _files(jpeg(400, 200))}, 413, "exceeds the limit of 40000 pixels"),
        ({"files": _files(*[png(seed=i) for i in range(4)])}, 413, "at most 3"),
        ({"files": _files(*[png(seed=i) for i in range(9)])}, 413, "at most 3"),
        ({"files": _files(bomb_png())}, 413, "DecompressionBomb"),
        ({"json": {"images": ["data:image/png;base64"]}}, 400, "without its comma"),
        ({"content": b"[" * 5000, "headers": {"content-type": "application/json"}}, 400, "malformed"),
        ({"content": iter([b"x" * 50_000] * 4), "headers": {"content-type": "application/json"}}, 413, ""),
        ({"files": _files(b"\x89PNG" + b"0" * 30_000)}, 413, "exceeds 20000"),
        ({"files": _files(png(), field="image")}, 400, "field 'images' (got the field(s) image)"),
        ({"json": {"images": ["@@@"]}}, 400, "not base64"),
        ({"json": {"pictures": []}}, 400, "JSON must be"),
        ({"content": b"raw bytes", "headers": {"content-type": "image/png"}}, 415, "multipart"),
        ({"data": {"images": "text, not a file"}}, 415, "multipart"),
    ],
    ids=[
        "not-an-image", "truncated", "zero-size", "pixel-limit", "too-many", "far-too-many",
        "bomb", "data-url-no-comma", "deep-json", "chunked-over-limit", "too-large",
        "wrong-field", "bad-base64", "bad-json", "wrong-type", "form-not-multipart",
    ],
)  # fmt: skip
def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving(
    client, request_kwargs, status, says
):
    response = client.post("/v1/read", **request_kwargs)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]
    assert "Traceback" not in response.text
    assert client.get("/v1/health").json() == {"status": "ok"}
    assert client.post("/v1/read", files=_files(png())).status_code == 200


def test_model_description_examples_page_and_openapi(client, model):
    card = client.get("/v1/model").json()
    assert card["charset"] == "".join(model.charset.chars) and card["decoder"] == "ctc"
    assert card["input"] == {"height": 32, "width": 128, "channels": 3, "keep_aspect": False}
    assert card["version"] == persec.__version__
    assert client.get("/v1/examples").json() == ["ex.png"]
    assert client.get("/examples/ex.png").content == png(seed=9)
    assert client.get("/examples/..%2Fsecret").status_code == 404
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    for name in ("index.html", "app.js", "style.css"):  # nothing loaded from elsewhere
        text = client.get(f"/static/{name}").text
        assert "http" not in text and "//cdn" not in text and "@import" not in text, name
    schema = client.get("/openapi.json").json()
    assert {"/v1/read", "/v1/health", "/v1/model"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 404  # its page would load a CDN's scripts
    assert "error" in client.get("/docs").json()  # errors keep their shape
    bad_flag = client.post("/v1/read?pictures=maybe", files=_files(png()))
    assert bad_flag.status_code == 422 and "pictures" in bad_flag.json()["error"]
    body = schema["paths"]["/v1/read"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)


@pytest.mark.skipif(not IIIT5K.is_dir(), reason="needs ../shared/data/IIIT5K_train")
def test_real_crop_reads_as_persec_read_reads_it(monkeypatch):
    monkeypatch.delenv("PERSEC_MODEL", raising=False)
    path = IIIT5K / (IIIT5K / "gt.txt").read_text().splitlines()[0].split("\t")[0]
    model = persec.load_model()
    expected = persec.read(model, [path])[0]
    with TestClient(create_app(model)) as client:
        row = client.post("/v1/read", files=_files(path.read_bytes())).json()[0]
    assert row["text"] == expected.text
    assert f"{row['confidence']:.4f}" == f"{expected.confidence:.4f}"
    assert torch.tensor(row["char_confidences"]).min() > 0


def test_model_process_reads_as_the_server_thread_does(model, tmp_path):
    from persec.serve.worker import ModelProcess

    saved = model.save(tmp_path / "model")
    worker = ModelProcess(str(saved), "cpu", top_k=3, threads=1)
    try:
        with TestClient(create_app(model, LIMITS, worker)) as client:
            rows = client.post("/v1/read", files=_files(png(seed=1), jpeg())).json()
    finally:
        worker.close()
    with TestClient(create_app(model, LIMITS)) as client:
        expected = client.post("/v1/read", files=_files(png(seed=1), jpeg())).json()
    assert [r["text"] for r in rows] == [r["text"] for r in expected]
    assert [r["confidence"] for r in rows] == pytest.approx(
        [r["confidence"] for r in expected], rel=1e-4
    )
    with pytest.raises(RuntimeError, match="could not start"):
        ModelProcess(str(tmp_path / "none"))

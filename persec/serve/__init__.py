"""``persec serve``: a local web page and HTTP API that read images (FastAPI + uvicorn)."""

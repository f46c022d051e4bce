"""The page of `persec serve` in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by Selenium) opens the page served by uvicorn, uploads a real
crop, and sees the shipped model's reading and both pictures rendered. Skipped with the
reason where Chromium is not installed; on CI (CI=true) it must run.

``PERSEC_SCREENSHOT=docs/images/serve.png pytest tests/system/test_serve_browser.py``
also saves the page as the README shows it."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from tiny import REPO

import persec
from persec.serve.app import create_app
from persec.serve.config import ServeConfig

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
DEMO = REPO.parent / "shared" / "data" / "real_demo"


def _missing() -> str | None:
    if not CHROMIUM or not DRIVER:
        return (
            "Chromium or chromedriver not installed (make test installs them as root: make browser)"
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (pip install -e '.[test]')"
    if not DEMO.is_dir():
        return f"needs the real crops of {DEMO}"
    return None


REASON = _missing()
if REASON and os.environ.get("CI") == "true":
    raise RuntimeError(f"the browser test must run on CI: {REASON}")
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(monkeypatch):
    """The shipped model's page on a free local port, served by uvicorn in a thread."""
    import uvicorn

    monkeypatch.delenv("PERSEC_MODEL", raising=False)
    model = persec.load_model()
    port = _free_port()
    app = create_app(model, ServeConfig(port=port, examples=str(DEMO / "images")))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield model, f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    options.add_argument("--window-size=1100,800")
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_page_reads_an_uploaded_crop_and_shows_the_pictures(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    model, url = server
    crop = DEMO / "images" / "clovaai_demo_1.png"
    expected = model.read([crop])[0][0]
    browser.get(url)
    wait = WebDriverWait(browser, 60)
    wait.until(seen.text_to_be_present_in_element((By.ID, "model"), "characters"))
    browser.find_element(By.ID, "files").send_keys(str(crop))
    card = wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, "#results .card")))
    assert card.find_element(By.CSS_SELECTOR, ".text").text == expected
    assert "confidence" in card.find_element(By.CSS_SELECTOR, ".confidence").text
    assert card.find_elements(By.CSS_SELECTOR, ".alternatives li")
    rendered = "const i = arguments[0]; return i.complete && i.naturalWidth > 0;"
    for picture in card.find_elements(By.CSS_SELECTOR, "img.original, img.input"):
        wait.until(lambda _, img=picture: browser.execute_script(rendered, img))
    assert len(card.find_elements(By.CSS_SELECTOR, "img.original, img.input")) == 2
    # An example image is one click away.
    buttons = browser.find_elements(By.CSS_SELECTOR, "#examples button")
    assert buttons
    buttons[0].click()
    wait.until(lambda _: len(browser.find_elements(By.CSS_SELECTOR, "#results .card")) == 2)
    if os.environ.get("PERSEC_SCREENSHOT"):
        target = Path(os.environ["PERSEC_SCREENSHOT"])
        target.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(target))

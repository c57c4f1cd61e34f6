"""The latent explorer in a real headless Chromium (Debian's) against the live server.

Selenium drives /usr/bin/chromium through Debian's /usr/bin/chromedriver (the
Makefile's `chromium` target installs both with apt-get; nothing is downloaded).
"""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from client import LatentClient
from client.inputs import read_idx
from paths import EXPLORER, ROOT
from tests.client.conftest import EXPLORER_MODEL

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
POINTS = EXPLORER / "data" / f"{EXPLORER_MODEL}.json"
SCREENSHOT = ROOT / "docs" / "figures" / "explorer.png"
INSTALL = "run `make chromium` (apt-get install chromium chromium-driver)"


@pytest.fixture(scope="module")
def points() -> dict:
    if not POINTS.exists():
        pytest.fail(f"{POINTS} missing: run `make serve` then `make explorer-points`")
    return json.loads(POINTS.read_text())


def test_shipped_points_come_from_the_served_encoder(server, points, fashion_test_path):
    manifest = server.models[0].manifest
    assert points["encoder_sha256"] == manifest["files"]["encoder.pt"], (
        f"{POINTS} was made by another {EXPLORER_MODEL} encoder: run `make explorer-points`"
    )
    assert len(points["x"]) == len(points["y"]) == len(points["label"]) == 10_000
    assert len(points["classes"]) == 10
    with LatentClient(server.url, model=EXPLORER_MODEL) as client:
        live = client.encode(read_idx(fashion_test_path)[:200]).z_mean
    shipped = np.stack([points["x"][:200], points["y"][:200]], axis=1)
    np.testing.assert_allclose(shipped, live, atol=2e-3)  # stored with 3 decimals


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: {INSTALL}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: run `make setup` (pyproject extra 'dev')")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1180,880",
        "--force-device-scale-factor=1",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def png_pixels(src: str) -> np.ndarray:
    assert src.startswith("data:image/png;base64,"), src[:60]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))


def test_click_two_points_decodes_two_images_live(browser, server, page_origin, points):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    browser.get(f"{page_origin}/index.html?api={server.url}")
    wait_for(lambda: browser.execute_script("return document.body.dataset.ready"), what="page")
    assert browser.find_element(By.ID, "model-name").text == EXPLORER_MODEL
    # the model's image shape, from the points file (the server's, recorded by make_points)
    assert browser.find_element(By.ID, "model-image").text == "image 1×28×28 grayscale"

    # two far-apart classes: the centres of Trouser (1) and Bag (8) points
    labels = np.asarray(points["label"])
    xy = np.stack([points["x"], points["y"]], axis=1)
    targets = [xy[labels == c].mean(axis=0).tolist() for c in (1, 8)]
    canvas = browser.find_element(By.ID, "plane")
    size = canvas.size["width"]
    decoded = []
    for k, (zx, zy) in enumerate(targets, start=1):
        px, py = browser.execute_script(
            "return state.view.toPx(arguments[0], arguments[1])", zx, zy
        )
        ActionChains(browser).move_to_element_with_offset(
            canvas, int(px - size / 2), int(py - size / 2)
        ).click().perform()
        wait_for(
            lambda k=k: len(browser.find_elements(By.CSS_SELECTOR, "#history img")) == k,
            what=f"decoded image {k}",
        )
        src = browser.find_element(By.ID, "decoded").get_attribute("src")
        z = json.loads(browser.find_element(By.ID, "decoded").get_attribute("data-z"))
        decoded.append((png_pixels(src), z))

    (img_a, z_a), (img_b, z_b) = decoded
    assert img_a.shape == img_b.shape == (28, 28)
    # shown at the PNG's own size, scaled into the box (no size assumed by the page)
    natural = browser.execute_script(
        "const i = document.getElementById('decoded'); return [i.naturalWidth, i.naturalHeight]"
    )
    assert natural == [28, 28]
    assert np.abs(img_a.astype(int) - img_b.astype(int)).mean() > 10, "the two images look alike"
    # the page shows exactly what the service decodes for the clicked points
    with LatentClient(server.url, model=EXPLORER_MODEL) as client:
        for img, z in decoded:
            np.testing.assert_array_equal(np.asarray(client.decode([z])[0]), img)
    per_px = browser.execute_script("return state.view.span / state.view.size")
    for (zx, zy), z in zip(targets, (z_a, z_b), strict=True):
        assert abs(zx - z[0]) <= 2 * per_px and abs(zy - z[1]) <= 2 * per_px, (zx, zy, z)

    # second panel: seeded samples
    browser.find_element(By.ID, "seed").clear()
    browser.find_element(By.ID, "seed").send_keys("7")
    browser.find_element(By.ID, "sample-button").click()
    wait_for(
        lambda: len(browser.find_elements(By.CSS_SELECTOR, "#samples img")) == 16, what="samples"
    )
    first = browser.find_element(By.CSS_SELECTOR, "#samples img").get_attribute("src")
    with LatentClient(server.url, model=EXPLORER_MODEL) as client:
        np.testing.assert_array_equal(png_pixels(first), np.asarray(client.sample(16, seed=7)[0]))
    assert "error" not in browser.find_element(By.ID, "status").get_attribute("class")

    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))
    assert Image.open(SCREENSHOT).size[0] >= 1000


def test_server_errors_show_on_the_page(browser, server, page_origin):
    """A page pointed at a model the server does not have says so (and logs it)."""
    from selenium.webdriver.common.by import By

    browser.get(f"{page_origin}/index.html?api={server.url}&model=no-such-model")
    wait_for(lambda: browser.execute_script("return document.body.dataset.ready"), what="page")
    browser.find_element(By.ID, "sample-button").click()
    status = browser.find_element(By.ID, "status")
    wait_for(lambda: "error" in status.get_attribute("class"), what="error status")
    assert "HTTP 404 ModelNotFoundException" in status.text
    logged = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert any("ModelNotFoundException" in m for m in logged), logged


# ---- a colour model of another size, from a stand-in API ------------------------
COLOUR_SHAPE = (3, 24, 40)  # C, H, W: colour, not square, not 28 x 28


def colour_png(z) -> str:
    """A 40 x 24 RGB PNG whose colour tells the point it was decoded at."""
    c, h, w = COLOUR_SHAPE
    pixels = np.zeros((h, w, c), np.uint8)
    pixels[..., 0] = int(abs(z[0]) * 40) % 256
    pixels[..., 1] = int(abs(z[1]) * 40) % 256
    pixels[..., 2] = 200
    pixels[:, : w // 2, 2] = 30  # left and right halves differ: not a plain fill
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def colour_api():
    """The JSON API of a 2-D colour model, `cats-vae-2d`, as the handlers answer it, and
    its points file (with CORS for any origin, as TorchServe adds its own)."""
    import http.server
    import threading

    points = {
        "model": "cats-vae-2d",
        "dataset": "stand-in",
        "classes": ["cat", "dog"],
        "image_shape": list(COLOUR_SHAPE),
        "encoder_sha256": None,
        "generated_by": "a test",
        "x": np.linspace(-2, 2, 50).round(3).tolist(),
        "y": np.linspace(2, -2, 50).round(3).tolist(),
        "label": [i % 2 for i in range(50)],
    }

    class Api(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, doc):
            body = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._send(points)

        def do_POST(self):
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/predictions/cats-vae-2d-decode":
                preds = [{"image_b64": colour_png(inst["z"])} for inst in req["instances"]]
                self._send({"predictions": preds})
            else:
                preds = [{"image_b64": colour_png([i, req["seed"]])} for i in range(req["n"])]
                self._send({"predictions": preds, "seed": req["seed"]})

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_colour_model_of_another_size_shows_its_own_pngs(browser, page_origin, colour_api):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    browser.get_log("browser")  # drop what earlier tests logged
    browser.get(f"{page_origin}/index.html?api={colour_api}&points={colour_api}/points.json")
    wait_for(lambda: browser.execute_script("return document.body.dataset.ready"), what="page")
    assert browser.find_element(By.ID, "model-name").text == "cats-vae-2d"
    assert browser.find_element(By.ID, "model-image").text == "image 3×24×40 colour"

    canvas = browser.find_element(By.ID, "plane")
    ActionChains(browser).move_to_element_with_offset(canvas, 40, -60).click().perform()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#history img"), what="decoded")
    decoded = browser.find_element(By.ID, "decoded")
    z = json.loads(decoded.get_attribute("data-z"))
    img = png_pixels(decoded.get_attribute("src"))
    assert img.shape == (24, 40, 3)  # RGB, H x W as the model makes them
    assert np.array_equal(img, png_pixels("data:image/png;base64," + colour_png(z)))
    natural = browser.execute_script(
        "const i = document.getElementById('decoded'); return [i.naturalWidth, i.naturalHeight]"
    )
    assert natural == [40, 24]
    # kept in its aspect inside the square box
    fit = browser.execute_script("return getComputedStyle(arguments[0]).objectFit", decoded)
    assert fit == "contain"

    browser.find_element(By.ID, "sample-button").click()
    wait_for(
        lambda: len(browser.find_elements(By.CSS_SELECTOR, "#samples img")) == 16, what="samples"
    )
    first = browser.find_element(By.CSS_SELECTOR, "#samples img").get_attribute("src")
    assert png_pixels(first).shape == (24, 40, 3)
    assert "error" not in browser.find_element(By.ID, "status").get_attribute("class")
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors

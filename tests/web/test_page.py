"""The static web page (clients/js/web) in Debian's headless Chromium: it loads an exported ONNX
model and its front-end files from a plain file server, classifies what is typed, and
reproduces every test vector. Run by `make test-web` (not `make test`: it needs a browser)."""

import functools
import shutil
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from eelbert_export.front_end import VECTOR_TEXTS, vectors_path

from ..exports import STEM, export_modes

pytestmark = pytest.mark.web
ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "js"
SCREENSHOTS = ROOT / "build" / "web"


class Quiet(SimpleHTTPRequestHandler):
    extensions_map = SimpleHTTPRequestHandler.extensions_map | {
        ".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm"}

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A folder served over HTTP: the client (page, front end, onnxruntime-web) and a fresh
    int8 ONNX export beside it."""
    root = tmp_path_factory.mktemp("site")
    (root / "client").symlink_to(CLIENT)
    (root / "model").mkdir()
    export_modes("onnx", ("none", "int8"), root / "model")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=root))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


# onnxruntime-web's int8 kernels round activations unlike onnxruntime's CPU build: int8 logits
# differ by up to 1.2e-2 on the vectors (measured), labels never; float32 matches within 1e-4.
@pytest.mark.parametrize("mode,tolerance", [("none", "1e-4"), ("int8", "2e-2")])
def test_page_classifies_typed_text_and_every_vector(site, mode, tolerance):
    root, url = site
    if not (CLIENT / "node_modules" / "playwright-core").is_dir() or not shutil.which("chromium"):
        pytest.fail("run `make test-web`: it installs the client and Chromium")
    artifact = root / "model" / (STEM + ("" if mode == "none" else f".{mode}") + ".onnx")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    screenshot = SCREENSHOTS / f"page.{mode}.png"
    page = f"{url}/client/web/index.html?model=../../model/{artifact.name}"
    done = subprocess.run(["node", "test/web.mjs", page, str(vectors_path(artifact)),
                           str(screenshot), tolerance], cwd=CLIENT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    count = len(VECTOR_TEXTS)
    assert f"{count} of {count} vectors reproduced in Chromium" in done.stdout
    assert 'page shows "fresh"' in done.stdout
    assert screenshot.read_bytes()[:4] == b"\x89PNG"

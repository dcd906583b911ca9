"""The demo page in a real headless browser (Debian's chromium through Selenium and chromium-driver): upload a
photograph and read the caption from the page, upload a non-image and read the page's message. Skipped, with the
reason, where no browser is installed; .ci/run installs one."""
from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from captioning.inference.captioner import Captioner
from tests.conftest import FLICKR

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra)")
CHROMIUM, DRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="no chromium and chromedriver on PATH "
                                "(apt-get install chromium chromium-driver; .ci/run does)")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ready  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from captioning.inference.demo import build_demo  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def page(learned_run):
    """(url, captioner): the demo of the built-in experiment's checkpoint, served on a free local port."""
    pytest.importorskip("gradio", reason="gradio is not installed (the demo extra)")  # seconds to import: here, not at collection
    captioner = Captioner.from_checkpoint(learned_run / "checkpoints" / "best.pt", "cpu")
    port = free_port()
    demo = build_demo(captioner, [], "test checkpoint")
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, max_file_size="5mb",
                quiet=True)
    yield f"http://127.0.0.1:{port}", captioner
    demo.close()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1100"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    yield driver
    driver.quit()


def photograph(tmp_path: Path) -> Path:
    """A real photograph: one of the Flickr8k sample's, else a photo-like JPEG (the sample is not here)."""
    photos = sorted((FLICKR / "images").glob("*.jpg"))[:1]
    if photos:
        return photos[0]
    from PIL import Image

    path = tmp_path / "photo.jpg"
    Image.effect_mandelbrot((320, 240), (-2, -1.2, 1, 1.2), 60).convert("RGB").save(path, quality=90)
    return path


def submit(browser, url: str, path: Path) -> None:
    """Open the page, upload `path` through its file input, wait for the upload, press Caption."""
    browser.get(url)
    wait = WebDriverWait(browser, 60)
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#upload input[type=file]"))).send_keys(str(path))
    wait.until(ready.text_to_be_present_in_element((By.ID, "upload"), path.stem))  # the page breaks name and suffix
    browser.find_element(By.CSS_SELECTOR, "#run").click()


def best_caption(browser) -> str:
    box = browser.find_element(By.CSS_SELECTOR, "#best textarea")
    WebDriverWait(browser, 120).until(lambda _: box.get_attribute("value"))
    return box.get_attribute("value")


def test_the_page_captions_an_uploaded_photograph_as_the_captioner_does(page, browser, tmp_path):
    url, captioner = page
    path = photograph(tmp_path)
    expected = captioner.caption(path, beam_size=3, n_best=3, length_penalty="none")
    submit(browser, url, path)
    assert best_caption(browser) == expected.caption
    table = browser.find_element(By.ID, "nbest").text
    assert all(item["caption"] in table for item in expected.alternatives)


def test_a_non_image_gets_a_message_and_the_page_keeps_serving(page, browser, tmp_path):
    url, captioner = page
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    submit(browser, url, notes)
    WebDriverWait(browser, 60).until(ready.text_to_be_present_in_element((By.ID, "status"), "Could not read this upload"))
    assert "notes.txt" in browser.find_element(By.ID, "status").text
    assert "Traceback" not in browser.page_source
    path = photograph(tmp_path)
    submit(browser, url, path)  # the server still serves
    assert best_caption(browser) == captioner.caption(path, beam_size=3, n_best=3).caption

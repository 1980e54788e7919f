"""End-to-end browser test of the inspector: `mmboundary serve` in a subprocess, Debian's chromium
(/usr/bin/chromium) driven headless by Playwright. Uploads an image, asks, reads the coloured
steps and checks them against the JSON API's answer for the same input, takes screenshots; a bad
upload shows an error on the page and the next good ask still works; the results browser shows
the metrics, the figures and the examples sorted by calibration error, and an example id made of
HTML stays text.

    HF_HUB_OFFLINE=1 python -m pytest -q tests/test_browser.py

Skipped when /usr/bin/chromium or Playwright is missing (install: `apt-get install chromium
chromium-driver`, `pip install playwright`; never `playwright install`, which downloads a
browser), unless `MMBOUNDARY_REQUIRE_BROWSER=1` (set by `.ci/run`), where it fails instead.
`MMBOUNDARY_SCREENSHOT_DIR=dir` also copies the screenshots there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from _helpers import QUESTION, Server, build_tiny_run, post_ask, write_results
from mmboundary.serve.app import LEVEL_COLOURS, NO_LEVEL_COLOUR

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
XSS_ID = '<img src=x onerror="window.__xss=1">'


def _require_browser():
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing (apt-get install chromium chromium-driver)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "playwright is not installed (pip install playwright)"
    if problem is None:
        return
    if os.environ.get("MMBOUNDARY_REQUIRE_BROWSER") == "1":
        pytest.fail(f"MMBOUNDARY_REQUIRE_BROWSER=1 but {problem}")
    pytest.skip(problem)


def _rgb(hex_colour: str) -> str:
    h = hex_colour.lstrip("#")
    return "rgb({}, {}, {})".format(*(int(h[i:i + 2], 16) for i in (0, 2, 4)))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _require_browser()
    root, examples = build_tiny_run(tmp_path_factory.mktemp("run") / "r", tmp_path_factory.mktemp("images"))
    write_results(root, first_id=XSS_ID)
    with Server(root) as s:
        s.examples = examples
        yield s


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 860})
            yield context.new_page()
        finally:
            browser.close()


def _screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    with Image.open(path) as im:
        assert im.size[0] == 1280 and im.size[1] >= 400
        assert len(set(im.convert("RGB").resize((64, 64)).getdata())) > 20  # not a blank page
    out = os.environ.get("MMBOUNDARY_SCREENSHOT_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(out) / name)
    return path


def _ask(page, image: Path, question: str, choices: str = "") -> str:
    page.set_input_files("#image", str(image))
    page.fill("#question", question)
    page.fill("#choices", choices)
    page.click("#ask-button")
    page.wait_for_function("() => document.body.dataset.state === 'answered' "
                           "|| document.body.dataset.state === 'error'", timeout=60_000)
    return page.evaluate("document.body.dataset.state")


def test_ask_page_shows_the_coloured_chain_and_errors(server, page, tmp_path):
    image = Path(server.examples[0].image)
    page.goto(server.base + "/")
    page.wait_for_function("() => document.body.dataset.state === 'ready'")
    assert "model: sft" in page.inner_text("#model-info")
    assert "8 MiB" in page.inner_text("#limits")

    assert _ask(page, image, QUESTION) == "answered"
    status, _, expected = post_ask(server.base, image.read_bytes())
    assert status == 200 and expected["steps"]
    shown = page.eval_on_selector_all("#steps li.step", """els => els.map(e => ({
        shown: e.dataset.shown, expressed: e.dataset.expressed, internal: e.dataset.internal,
        colour: getComputedStyle(e).backgroundColor,
        text: e.querySelector('.step-text').textContent,
        badges: Array.from(e.querySelectorAll('.chip')).map(c => [c.textContent, getComputedStyle(c).backgroundColor])
    }))""")
    assert len(shown) == len(expected["steps"])
    for got, want in zip(shown, expected["steps"]):
        level = want["expressed_level"] if want["expressed_level"] is not None else want["internal_level"]
        assert got["text"] == want["text"]
        assert got["shown"] == ("" if level is None else str(level))
        assert got["expressed"] == ("" if want["expressed_level"] is None else str(want["expressed_level"]))
        assert got["internal"] == ("" if want["internal_level"] is None else str(want["internal_level"]))
        assert got["colour"] == _rgb(LEVEL_COLOURS[level] if level is not None else NO_LEVEL_COLOUR)
        (etext, ecol), (itext, icol) = got["badges"]
        assert etext == f"expressed {want['expressed_level'] if want['expressed_level'] is not None else '–'}"
        assert itext == f"internal {want['internal_level']}"
        assert icol == _rgb(LEVEL_COLOURS[want["internal_level"]])
    assert page.inner_text("#answer") == (expected["answer"] if expected["answer"] is not None else "(none stated)")
    assert page.is_hidden("#error")
    _screenshot(page, tmp_path, "inspector.png")

    # a bad upload: an error on the page, no chain
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image\n" * 20)
    assert _ask(page, bad, QUESTION) == "error"
    assert page.is_visible("#error") and page.is_hidden("#result")
    message = page.inner_text("#error")
    assert "415" in message and "notes.png: not an image" in message
    page.wait_for_function("() => document.getElementById('preview').hidden")  # no broken preview
    _screenshot(page, tmp_path, "inspector-error.png")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(image.read_bytes()[:200])
    assert _ask(page, truncated, QUESTION) == "error"
    assert "corrupt or truncated" in page.inner_text("#error")

    # the server keeps serving: the next good ask works, with choices
    assert _ask(page, image, QUESTION, "1, 2, 3") == "answered"
    assert page.is_hidden("#error")
    assert page.eval_on_selector_all("#steps li.step", "els => els.length") >= 1


def test_results_page_shows_metrics_figures_and_sorted_examples(server, page, tmp_path):
    page.goto(server.base + "/results")
    page.wait_for_function("() => document.body.dataset.state === 'ready'")
    page.wait_for_function("() => document.querySelectorAll('#examples tbody tr').length > 0")
    page.wait_for_function("() => Array.from(document.querySelectorAll('#figures img')).every(i => i.complete)")
    rows = page.eval_on_selector_all("#metrics tbody tr", "els => els.map(e => e.children[1].textContent)")
    assert sorted(rows) == ["sft", "vanilla"]
    assert page.eval_on_selector_all("#figures img", "els => els.map(i => i.naturalWidth)") == [500, 500]
    errors = page.eval_on_selector_all("#examples tbody tr", "els => els.map(e => e.dataset.error)")
    assert [round(float(e), 6) for e in errors[:3]] == [0.9, 0.7, 0.3] and errors[3] == ""
    # the id made of HTML is shown as text and never ran
    assert page.eval_on_selector("#examples tbody tr", "e => e.children[1].textContent") == XSS_ID
    assert page.evaluate("window.__xss") is None
    _screenshot(page, tmp_path, "inspector-results.png")
    # filters: level 1 keeps one example; the vanilla model is shown with internal levels
    page.select_option("#level", "1")
    page.wait_for_function("() => document.querySelectorAll('#examples tbody tr').length === 1")
    page.select_option("#level", "")
    page.select_option("#model", "vanilla")
    page.wait_for_function("() => document.getElementById('count').textContent"
                           ".includes('internal confidence of vanilla')")
    assert page.eval_on_selector_all("#examples tbody tr", "els => els.length") == 2

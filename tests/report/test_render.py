"""The HTML report opened in headless Chromium: every figure decodes and has something drawn in it."""
from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest

from secateurs.report import write_report
from tests.report.chromium import NAMES, check_images, find_chromium, screenshot
from tests.report.sample import sample_data


@pytest.fixture(scope="module")
def browser():
    path = find_chromium()
    if path is None:
        pytest.skip(f"no Chromium binary on PATH (looked for {', '.join(NAMES)}); .ci/run installs it")
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return write_report(sample_data(), tmp_path_factory.mktemp("report") / "report.html")["html"]


def assert_rendered(result: dict, expected: int) -> None:
    images = result["images"]
    assert len(images) == expected, f"expected {expected} images on the page, Chromium saw {len(images)}"
    for i, img in enumerate(images):
        assert img["complete"] and img["w"] > 0 and img["h"] > 0, f"image {i} did not decode: {img}"
        assert img["error"] is None, f"image {i} could not be read back: {img['error']}"
        assert img["clear"] == 0, f"image {i} is partly undecoded ({img['clear']:.1%} of its pixels never drawn)"
        assert 0.01 < img["ink"] < 0.9, f"image {i} is blank or solid ({img['ink']:.1%} non-white pixels)"


def test_every_plot_renders(browser, report):
    result = check_images(browser, report)
    assert_rendered(result, 5)
    assert result["height"] > 2000  # the whole page laid out, not an error page


def _replace_image(html: str, index: int, data: str) -> str:
    matches = list(re.finditer(r'data:image/png;base64,([A-Za-z0-9+/=]+)', html))
    m = matches[index]
    return html[: m.start(1)] + data + html[m.end(1):]


def test_check_catches_broken_truncated_and_blank_images(browser, report, tmp_path):
    """The check above is only worth something if it fails on a bad page: break one image per way."""
    from PIL import Image

    html = Path(report).read_text(encoding="utf-8")
    payloads = re.findall(r'data:image/png;base64,([A-Za-z0-9+/=]+)', html)
    buf = io.BytesIO()
    Image.new("RGB", (200, 100), "white").save(buf, format="PNG")
    cases = [
        (0, base64.b64encode(b"this is not a PNG " * 40).decode(), "image 0 did not decode"),
        (1, payloads[1][: len(payloads[1]) // 2 // 4 * 4], "image 1 is partly undecoded"),
        (3, base64.b64encode(buf.getvalue()).decode(), "image 3 is blank"),
    ]
    # One page with all three faults; each is reported for its own image.
    page = html
    for index, data, _ in cases:
        page = _replace_image(page, index, data)
    bad = tmp_path / "bad.html"
    bad.write_text(page, encoding="utf-8")
    result = check_images(browser, bad)
    for index, _, message in cases:
        one = {"height": result["height"], "images": [result["images"][index]]}
        with pytest.raises(AssertionError, match=message.replace(str(index), "0")):
            assert_rendered(one, 1)
    good = [img for i, img in enumerate(result["images"]) if i not in {c[0] for c in cases}]
    assert_rendered({"height": result["height"], "images": good}, 2)


def test_screenshot_shows_the_page(browser, report, tmp_path):
    from PIL import Image

    shot = screenshot(browser, report, tmp_path / "shot.png", width=1280, height=1400)
    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 1400)
    colors = img.getcolors(maxcolors=1 << 20)
    assert len(colors) > 50  # not a blank page: text, plots, the front's blue
    blue = sum(n for n, (r, g, b) in colors or [] if b > 180 and r < 80 and g < 140)
    assert blue > 500  # the Pareto front lines (#2563eb) are on screen

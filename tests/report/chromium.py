"""Headless Chromium helpers for the report tests: find a binary, check images render, take screenshots."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
    "--mute-audio",
    "--force-device-scale-factor=1",
]

# Appended to a copy of the page: once everything has loaded, record for every <img> whether it
# decoded (complete, natural size > 0), and, drawn onto a transparent canvas, the fraction of its
# pixels that are opaque and not white ("ink") and that stayed transparent ("clear": the report's
# figures are opaque, so a clear pixel is one the decoder never reached, as in a truncated PNG);
# plus the page height; as JSON inside <pre id="img-check">, which --dump-dom then prints.
_PROBE = """
<script>
window.addEventListener("load", function () {
  var out = {height: document.documentElement.scrollHeight, images: []};
  Array.prototype.forEach.call(document.images, function (img) {
    var r = {w: img.naturalWidth, h: img.naturalHeight, complete: img.complete, ink: null, clear: null,
             error: null};
    if (img.complete && img.naturalWidth > 0) {
      try {
        var c = document.createElement("canvas");
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        var ctx = c.getContext("2d");
        ctx.drawImage(img, 0, 0);
        var d = ctx.getImageData(0, 0, c.width, c.height).data, ink = 0, clear = 0;
        for (var i = 0; i < d.length; i += 4) {
          if (d[i + 3] < 255) clear++;
          else if (d[i] < 240 || d[i + 1] < 240 || d[i + 2] < 240) ink++;
        }
        r.ink = ink / (c.width * c.height);
        r.clear = clear / (c.width * c.height);
      } catch (e) { r.error = String(e); }
    }
    out.images.push(r);
  });
  var pre = document.createElement("pre");
  pre.id = "img-check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def find_chromium() -> str | None:
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(browser: str, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [browser, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False,
        )


def check_images(browser: str, html_path: str | Path, width: int = 1280, height: int = 1000) -> dict:
    """Load a probed copy of the page in Chromium.

    Returns ``{"height": px, "images": [{"w", "h", "complete", "ink", "clear", "error"}, ...]}`` (see
    ``_PROBE``): ``w``/``h`` 0 for an image that did not decode, ``ink``/``clear`` fractions of its pixels.
    """
    page = Path(html_path).read_text(encoding="utf-8")
    if "</body>" not in page:
        raise ValueError(f"{html_path} has no </body>")
    with tempfile.TemporaryDirectory(prefix="report-probe-") as tmp:
        probed = Path(tmp) / "probed.html"
        probed.write_text(page.replace("</body>", _PROBE + "</body>", 1), encoding="utf-8")
        proc = _run(browser, [f"--window-size={width},{height}", "--virtual-time-budget=10000", "--dump-dom",
                              probed.resolve().as_uri()])
    m = re.search(r'<pre id="img-check">(.*?)</pre>', proc.stdout, re.DOTALL)
    if m is None:
        raise AssertionError(
            f"chromium did not run the image probe (exit {proc.returncode}); stderr tail:\n{proc.stderr[-2000:]}"
        )
    return json.loads(m.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"'))


def screenshot(browser: str, html_path: str | Path, out: str | Path, *, width: int = 1280, height: int = 2000,
               scale_to: int | None = None, max_bytes: int | None = None) -> Path:
    """Screenshot the page at ``width`` x ``height`` CSS px; optionally downscale to ``scale_to`` px wide and
    reduce colours until the PNG is under ``max_bytes``."""
    from PIL import Image

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="report-shot-") as tmp:
        raw = Path(tmp) / "raw.png"
        proc = _run(browser, [f"--window-size={width},{height}", f"--screenshot={raw}",
                              Path(html_path).resolve().as_uri()])
        if not raw.exists():
            raise RuntimeError(f"chromium wrote no screenshot (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        img = Image.open(raw).convert("RGB")
        img.load()
    if scale_to and img.width > scale_to:
        img = img.resize((scale_to, round(img.height * scale_to / img.width)), Image.LANCZOS)
    for colors in (256, 128, 64, 32):
        q = img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        q.save(out, optimize=True)
        if max_bytes is None or out.stat().st_size <= max_bytes:
            break
    return out

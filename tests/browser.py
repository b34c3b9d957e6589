"""Headless Chromium for page checks: found, or installed from Debian's `chromium` package when missing
(as root, with apt-get); a page is loaded with a probe that records script errors, console errors and
images that did not load."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Runs before anything else on the page: failed resources and script errors (capture phase), console.error.
PROBE_HEAD = """<script>
window.__problems = [];
window.addEventListener("error", function (e) {
  window.__problems.push(e.target && e.target.src ? "failed to load " + e.target.src.slice(0, 80) : "error " + e.message);
}, true);
var __consoleError = console.error;
console.error = function () { window.__problems.push("console.error " + [].join.call(arguments, " ")); __consoleError.apply(console, arguments); };
</script>"""
# After the load event: every image complete with a size, written into the DOM for --dump-dom.
PROBE_TAIL = """<script>
window.addEventListener("load", function () {
  var broken = [].filter.call(document.images, function (i) { return !(i.complete && i.naturalWidth > 0); })
                 .map(function (i) { return (i.getAttribute("alt") || "") + " " + i.src.slice(0, 60); });
  var out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({images: document.images.length, broken: broken, errors: window.__problems});
  document.body.appendChild(out);
});
</script>"""


def find_chromium() -> str | None:
    return next((shutil.which(n) for n in NAMES if shutil.which(n)), None)


def find_or_install_chromium() -> tuple[str | None, str]:
    """(the browser's path, "") or (None, why it is missing)."""
    found = find_chromium()
    if found:
        return found, ""
    if os.environ.get("LIGHTNING_CV_NO_BROWSER_INSTALL"):
        return None, "LIGHTNING_CV_NO_BROWSER_INSTALL is set"
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return None, "not installed, and apt-get as root is not available to install Debian's chromium package"
    try:
        done = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, text=True, timeout=900,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except subprocess.TimeoutExpired:
        return None, "apt-get install chromium took over 15 minutes"
    if done.returncode != 0:
        return None, f"apt-get install chromium failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
    return find_chromium(), ""


# The page that holds every probed page in a frame, and collects their results after they all loaded.
FRAMES = """<!DOCTYPE html><html><body>{frames}<script>
window.addEventListener("load", function () {{
  var results = {{}};
  [].forEach.call(document.querySelectorAll("iframe"), function (f) {{
    var probe = f.contentDocument && f.contentDocument.getElementById("probe");
    results[f.getAttribute("data-name")] = probe ? JSON.parse(probe.textContent) : null;
  }});
  var out = document.createElement("pre");
  out.id = "probes";
  out.textContent = JSON.stringify(results);
  document.body.appendChild(out);
}});
</script></body></html>"""


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")


def render_check(browser: str, pages: dict[str, Path], work: Path) -> dict[str, dict]:
    """Load probed copies of the pages in one headless Chromium (each in a frame of one page: one browser
    start for all): {name: {images, broken, errors}}; a page whose probe did not run gets None."""
    frames = []
    for name, page in pages.items():
        html = page.read_text(encoding="utf-8")
        copy = work / f"probed-{name}.html"
        copy.write_text(html.replace("<head>", "<head>" + PROBE_HEAD, 1).replace("</body>", PROBE_TAIL + "</body>", 1),
                        encoding="utf-8")
        frames.append(f'<iframe data-name="{name}" src="{copy.name}" width="1200" height="800"></iframe>')
    holder = work / "probes.html"
    holder.write_text(FRAMES.format(frames="".join(frames)), encoding="utf-8")
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--allow-file-access-from-files", f"--user-data-dir={work / 'chromium-profile'}",
                           "--virtual-time-budget=20000", "--dump-dom", holder.resolve().as_uri()],
                          capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="probes">(.*?)</pre>', done.stdout, re.S)
    assert found, f"Chromium gave no probe result (exit {done.returncode}): {done.stderr[-2000:]}"
    results = json.loads(_unescape(found.group(1)))
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line and "ERROR" in line.upper()]
    for result in results.values():
        if result is not None:
            result["errors"] = result["errors"] + console
    return results


def screenshot(browser: str, page: Path, out: Path, width: int = 1200, scale: float = 0.75) -> Path:
    """A PNG of the whole page (trailing background trimmed), scaled by `scale` (docs/ screenshots)."""
    import cv2
    import numpy as np

    raw = out.with_suffix(".raw.png")
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                    f"--window-size={width},6000", f"--screenshot={raw.resolve()}", Path(page).resolve().as_uri()],
                   capture_output=True, timeout=120, check=True)
    image = cv2.imread(str(raw))
    raw.unlink()
    content = np.flatnonzero((np.abs(image.astype(int) - image[-1, -1].astype(int)).sum(axis=2) > 0).any(axis=1))
    image = image[: content[-1] + 16] if len(content) else image
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(out), image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return out


if __name__ == "__main__":  # python tests/browser.py PAGE.html OUT.png
    import sys

    print(screenshot(find_chromium() or "chromium", Path(sys.argv[1]), Path(sys.argv[2])))

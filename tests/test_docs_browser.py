"""
Every page of the documentation site, opened in a real headless browser with the network off, renders:
its math is typeset, its images load, no script fails, and its links lead somewhere that exists.

The site is the one tests/test_docs.py builds (docs/_build/html, once per run). A local HTTP server
serves it, as a host would; every request to another host is refused and fails the test. The test
also writes screenshots of the tutorial, its notebook, results and swapping pages to docs/_build/screenshots/.
"""

import functools
import html.parser
import importlib.util
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.helpers.docs_build import BUILD

SCREENSHOTS = BUILD / "screenshots"
SCREENSHOT_PAGES = ("tutorial", "results", "swapping", "tutorials/aevb_as_amortized_svi")
#: A desktop window; pages must fit its width without a horizontal scroll bar.
VIEWPORT = {"width": 1280, "height": 900}
#: Launch flags for a headless browser run as root in a container, with everything that phones home off.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

# Runs in each page once it has loaded and MathJax has finished: what a reader would see go wrong.
PAGE_CHECKS = r"""
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  const problems = [];
  // Math: every element that Sphinx marks as math holds MathJax's SVG output, without TeX errors.
  const maths = Array.from(document.querySelectorAll(".math"));
  for (const el of maths) {
    const out = el.querySelector("mjx-container svg");
    if (!out) problems.push("math not typeset: " + el.textContent.trim().slice(0, 80));
    for (const err of el.querySelectorAll("[data-mjx-error]"))
      problems.push("TeX error " + JSON.stringify(err.getAttribute("data-mjx-error")) + " in: " +
                    el.textContent.trim().slice(0, 80));
  }
  // No raw TeX left in the visible text (code, which may show TeX on purpose, aside).
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const skip = "PRE, CODE, SCRIPT, STYLE, TEXTAREA, MJX-CONTAINER, MJX-ASSISTIVE-MML";
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.nodeValue;
    if (!/\\\(|\\\[|\$\$|\\begin\{/.test(text)) continue;
    const parent = node.parentElement;
    if (parent.closest(skip) || !parent.getClientRects().length) continue;
    problems.push("raw TeX in the text: " + text.trim().slice(0, 80));
  }
  // Images: each one loads (lazy ones are asked to load now) and has a size.
  await Promise.all(Array.from(document.images).map((img) => {
    img.loading = "eager";
    return img.decode().catch(() => null);
  }));
  for (const img of document.images)
    if (!img.complete || img.naturalWidth === 0) problems.push("image did not load: " + img.src);
  // Layout: nothing wider than the window, and nothing in the text column runs past its edge:
  // what is wider (code, long equations) scrolls sideways in its own box instead of being cut off.
  const root = document.documentElement;
  if (root.scrollWidth > window.innerWidth + 1)
    problems.push("the page is wider than the window: " + root.scrollWidth + "px > " + window.innerWidth + "px");
  const article = document.querySelector("article");
  const edge = article ? article.getBoundingClientRect().right + 1 : Infinity;
  const scroller = (el) => {
    for (let e = el; e && e !== article; e = e.parentElement)
      if (["auto", "scroll"].includes(getComputedStyle(e).overflowX)) return e;
    return null;
  };
  const what = (el) => el.tagName.toLowerCase() + " " + JSON.stringify(el.textContent.trim().slice(0, 60));
  for (const pre of document.querySelectorAll("pre"))
    if (pre.scrollWidth > pre.clientWidth + 1 && !scroller(pre)) problems.push("code cut off: " + what(pre));
  if (article) {
    for (const el of article.querySelectorAll("pre, table, img, mjx-container[display=true]")) {
      if (el.getBoundingClientRect().right <= edge) continue;
      const box = scroller(el.parentElement);
      if (!box || box.getBoundingClientRect().right > edge) problems.push("cut off at the column's edge: " + what(el));
    }
    // Tables fit the column at this width (on a phone, Furo lets them scroll).
    for (const table of article.querySelectorAll("table"))
      if (table.getBoundingClientRect().width > article.getBoundingClientRect().width + 1)
        problems.push("table wider than the column: " + what(table));
  }
  // Figures: at least as large as the column allows, up to their own size (no thumbnails).
  for (const img of document.querySelectorAll("article img")) {
    const shown = img.getBoundingClientRect().width;
    const column = img.closest("article").getBoundingClientRect().width;
    if (shown < Math.min(img.naturalWidth, 0.4 * column) - 1)
      problems.push("figure shown at " + Math.round(shown) + "px: " + img.src);
  }
  const links = Array.from(document.querySelectorAll("a[href]"), (a) => a.href);
  return {problems, links, maths: maths.length};
}
"""


def _chromium():
    """The system's Chromium (Playwright cannot download its own browser here), or skip/fail."""
    candidates = [os.environ.get("CHROMIUM", ""), "/usr/bin/chromium"]
    candidates += [shutil.which(name) or "" for name in ("chromium", "chromium-browser", "google-chrome")]
    browser = next((path for path in candidates if path and Path(path).is_file()), None)
    missing = []
    if browser is None:
        missing.append("a Chromium browser (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("playwright (pip install -e '.[dev]')")
    if missing:
        message = f"the browser test needs {' and '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs both (.ci/run, the dev extra): a missing one is a broken set-up
        pytest.skip(message)
    return browser


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@functools.lru_cache(maxsize=None)
def _anchors(path):
    """The ids (and old-style ``<a name>``) that an HTML file defines, for checking ``#fragment`` links."""
    ids = set()

    class Parser(html.parser.HTMLParser):
        def handle_starttag(self, tag, attrs):
            for name, value in attrs:
                if name == "id" or (tag == "a" and name == "name"):
                    ids.add(value)

    Parser().feed(path.read_text(encoding="utf-8"))
    return ids


def _broken_link(html_dir, origin, href):
    """Why the link ``href`` found on a page of the site does not resolve, or None when it does."""
    url = urlsplit(href)
    if f"{url.scheme}://{url.netloc}" != origin:
        return None  # another site, a mailto: ...: not opened, and not part of this check
    target = html_dir / unquote(url.path).lstrip("/")
    if target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        return f"{href}: no such file"
    fragment = unquote(url.fragment)
    if fragment and target.suffix == ".html" and fragment not in _anchors(target):
        return f"{href}: no element with id {fragment!r}"
    return None


def test_every_page_renders_offline_in_a_browser(request):
    browser_path = _chromium()
    # Warnings are tests/test_docs.py's to report; with --keep-going the pages are written all the same.
    html_dir, status, warnings = request.getfixturevalue("docs_build")
    assert (html_dir / "index.html").exists(), f"the docs build wrote no pages:\n{warnings}"
    from filelock import FileLock
    from playwright.sync_api import sync_playwright

    pages = sorted(p.relative_to(html_dir).as_posix() for p in html_dir.rglob("*.html"))
    assert len(pages) > 10, f"only {len(pages)} pages were built"
    handler = functools.partial(_Quiet, directory=str(html_dir))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    failures, outside, math_pages = [], [], 0
    # Another test run must not rebuild the site under the browser's feet.
    with FileLock(BUILD / "html.lock"), sync_playwright() as playwright, server:
        browser = playwright.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport=VIEWPORT, service_workers="block")

        def route(route):
            if route.request.url.startswith(origin + "/") or route.request.url.startswith(("data:", "blob:")):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort("blockedbyclient")

        context.route("**/*", route)
        page = context.new_page()
        where = {"page": None}
        page.on("console", lambda msg: msg.type == "error" and failures.append(f"{where['page']}: console: {msg.text}"))
        page.on("pageerror", lambda exc: failures.append(f"{where['page']}: script error: {exc}"))

        def response(resp):
            if resp.status >= 400 and not resp.url.endswith("/favicon.ico"):
                failures.append(f"{where['page']}: {resp.status} for {resp.url}")

        page.on("response", response)
        for name in pages:
            where["page"] = name
            page.goto(f"{origin}/{name}", wait_until="load")
            result = page.evaluate(PAGE_CHECKS)
            math_pages += result["maths"] > 0
            failures += [f"{name}: {problem}" for problem in result["problems"]]
            for href in sorted(set(result["links"])):
                broken = _broken_link(html_dir, origin, href)
                if broken:
                    failures.append(f"{name}: broken link {broken}")
            stem = name.removesuffix(".html")
            if stem in SCREENSHOT_PAGES:
                page.screenshot(path=SCREENSHOTS / f"{stem.replace('/', '-')}.png", full_page=True)
        browser.close()
    failures += [f"asked for something outside the site (offline it would break): {url}" for url in sorted(set(outside))]
    assert not failures, f"{len(failures)} problems:\n" + "\n".join(failures)
    assert math_pages >= 3, f"math found on only {math_pages} pages: is the math extension still on?"

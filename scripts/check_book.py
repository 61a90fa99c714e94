"""Look at the built book as a reader does, in headless Chromium, and say what is wrong.

    python scripts/check_book.py [book/_build/html] [--screenshots DIR] [--width 1280]

For every page (after its scripts ran and MathJax typeset the math) it fails on:

- raw TeX in the visible text (``\\(``, ``\\[``, ``$$`` or a TeX command such as
  ``\\frac`` outside code blocks): math that did not render, e.g. MathJax not loaded;
- an image that did not load;
- a table wider than the page's text column;
- a page wider than the window (something runs off the right edge).

Prints one line per problem and exits 1 if there is any, 0 otherwise; with
``--screenshots`` it also saves ``<page>.png`` of each page for a person to look at.
Needs Chromium (Debian: ``apt-get install chromium``); exits 2 without it.

Chromium is driven through its command line (``--dump-dom`` on a copy of each page with a
small checking script added) rather than a browser-automation library, because Chromium
is the only browser on the project's machines and the check needs nothing more.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=15000"]
MARK = "sddlib-reader-check"
SKIPPED = ("genindex", "search", "index")  # index.html only redirects to the root page

CHECK = """
<script>
(function () {
  async function check() {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
      try { await MathJax.startup.promise; } catch (e) {}
    }
    const problems = [];
    const main = document.querySelector('article') || document.querySelector('main') ||
                 document.body;
    const clone = main.cloneNode(true);
    clone.querySelectorAll('pre, code, script, style, mjx-container, .MathJax, math, ' +
                           'mjx-assistive-mml, .headerlink').forEach(e => e.remove());
    const text = clone.textContent;
    const tex = text.match(/\\\\\\(|\\\\\\[|\\$\\$|\\\\(frac|text|mathrm|mathbf|sum|alpha|sigma|odot|left|right|cdot|operatorname)\\b/);
    if (tex) {
      const at = Math.max(0, tex.index - 30);
      problems.push('raw TeX in the text: ...' + text.slice(at, tex.index + 30).replace(/\\s+/g, ' ') + '...');
    }
    document.querySelectorAll('img').forEach(img => {
      if (!img.complete || img.naturalWidth === 0) {
        problems.push('image did not load: ' + img.getAttribute('src'));
      }
    });
    const column = main.getBoundingClientRect().width;
    document.querySelectorAll('article table, main table').forEach((table, index) => {
      const width = table.getBoundingClientRect().width;
      if (width > column + 1) {
        const head = (table.querySelector('th') || table).textContent.trim().slice(0, 40);
        problems.push('table ' + (index + 1) + ' (' + head + ') is ' + Math.round(width) +
                      ' px wide, the text column ' + Math.round(column) + ' px');
      }
    });
    const page = document.documentElement.scrollWidth;
    if (page > window.innerWidth + 1) {
      problems.push('the page is ' + page + ' px wide, the window ' + window.innerWidth + ' px');
    }
    const out = document.createElement('pre');
    out.id = '""" + MARK + """';
    out.textContent = JSON.stringify(problems);
    document.body.appendChild(out);
  }
  if (document.readyState === 'complete') { check(); }
  else { window.addEventListener('load', check); }
})();
</script>
"""


def browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or \
        shutil.which("google-chrome")


def check_page(chromium: str, page: Path, width: int = 1280, height: int = 2400) -> list[str]:
    """The problems a reader would see on ``page`` (an HTML file of the built book)."""
    html = page.read_text()
    copy = page.with_name(f".{page.stem}.{MARK}.html")  # beside it: relative links resolve
    copy.write_text(html.replace("</body>", CHECK + "</body>", 1))
    try:
        with tempfile.TemporaryDirectory() as profile:
            result = subprocess.run(
                [chromium, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                 "--dump-dom", copy.resolve().as_uri()],
                capture_output=True, text=True, timeout=180)
    finally:
        copy.unlink(missing_ok=True)
    found = re.search(rf'<pre id="{MARK}"[^>]*>(.*?)</pre>', result.stdout, re.S)
    if not found:
        return ["the page's check did not run (Chromium: "
                f"{result.stderr.strip().splitlines()[-1:] or ['no output']})"]
    import html as html_module

    return json.loads(html_module.unescape(found.group(1)))


def screenshot(chromium: str, page: Path, target: Path, width: int, height: int) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}",
                        f"--window-size={width},{height}", f"--screenshot={target.resolve()}",
                        page.resolve().as_uri()], check=True, capture_output=True, timeout=180)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", nargs="?", type=Path, default=Path("book/_build/html"))
    parser.add_argument("--screenshots", type=Path, metavar="DIR",
                        help="also save a PNG of every page here")
    parser.add_argument("--width", type=int, default=1280, help="window width in pixels")
    parser.add_argument("--height", type=int, default=2400, help="window height in pixels")
    args = parser.parse_args(argv)
    chromium = browser()
    if chromium is None:
        print("check_book: no Chromium found; install it (Debian: apt-get install chromium)",
              file=sys.stderr)
        return 2
    pages = sorted(p for p in args.html.glob("*.html")
                   if p.stem not in SKIPPED and MARK not in p.name)
    if not pages:
        print(f"check_book: no pages in {args.html}; build the book first", file=sys.stderr)
        return 2
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
    failures = 0
    for page in pages:
        problems = check_page(chromium, page, args.width, args.height)
        for problem in problems:
            print(f"{page.name}: {problem}")
        failures += len(problems)
        if args.screenshots:
            screenshot(chromium, page, args.screenshots / f"{page.stem}.png", args.width,
                       args.height)
        if not problems:
            print(f"{page.name}: ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

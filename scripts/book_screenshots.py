"""Screenshot every page of the built book with headless Chromium (not part of the tests).

    python scripts/book_screenshots.py [book/_build/html] [--out book/_build/screenshots]

Needs Chromium (Debian: `apt-get install chromium`). Each page is rendered at a fixed
window size, tall enough for a figure page, and saved as <page>.png for a person to look at.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=8000"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", nargs="?", type=Path, default=Path("book/_build/html"))
    parser.add_argument("--out", type=Path, default=Path("book/_build/screenshots"))
    parser.add_argument("--size", default="1280,2400", help="window width,height in pixels")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or \
        shutil.which("google-chrome")
    if browser is None:
        print("no Chromium found; install it (Debian: apt-get install chromium)", file=sys.stderr)
        return 1
    pages = sorted(p for p in args.html.glob("*.html") if p.stem not in ("genindex", "search"))
    if not pages:
        print(f"no pages in {args.html}; build the book first", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for page in pages:
        target = args.out / f"{page.stem}.png"
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}",
                            f"--window-size={args.size}", f"--screenshot={target.resolve()}",
                            page.resolve().as_uri()], check=True, capture_output=True,
                           timeout=180)
        print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())

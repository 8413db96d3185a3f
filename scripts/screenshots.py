"""Screenshots of the Dagster UI for the docs, taken with headless Chromium from a running `make dev`.

    make dev                                  # in another terminal; wait a few minutes
    pip install playwright                    # any Python; it drives the machine's Chromium
    python scripts/screenshots.py [--url http://127.0.0.1:3000] [--chromium /usr/bin/chromium]

Writes docs/images/lineage.png (the global lineage, every group expanded), partitions.png
(cloudwatch_points' partitions, a closed hour's metadata) and failed-check.png (host_points' checks, threshold_alerts failing on the
demo's busy host). Not part of the project's dependencies: only whoever refreshes the images needs it.
The Chromium flags keep a root, offline machine happy (no sandbox, no background networking).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def _open(browser, url: str, width: int, height: int):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url)
    page.wait_for_timeout(6000)
    skip = page.get_by_role("button", name="Skip")  # the community sign-up dialog of a fresh instance
    if skip.count():
        skip.click()
        page.wait_for_timeout(500)
    return page


def lineage(browser, base: str) -> None:
    page = _open(browser, f"{base}/asset-groups", 2200, 2000)
    page.get_by_text("Hide navigation").click()
    page.mouse.click(340, 79)  # hide the group tree beside the graph
    page.mouse.click(1400, 1500)
    page.keyboard.press("Alt+e")  # expand all groups
    page.wait_for_timeout(2000)
    page.mouse.move(1100, 1000)
    page.keyboard.down("Control")
    page.mouse.wheel(0, 60)  # zoom out a step: the whole graph, cards still readable
    page.keyboard.up("Control")
    page.wait_for_timeout(2500)
    page.screenshot(path=str(IMAGES / "lineage.png"))
    page.close()


def partitions(browser, base: str) -> None:
    page = _open(browser, f"{base}/assets/cloudwatch_points?view=partitions", 1600, 1000)
    page.mouse.click(334, 399)  # the second row: the newest closed hour, with its metadata
    page.wait_for_timeout(2500)
    page.screenshot(path=str(IMAGES / "partitions.png"))
    page.close()


def failed_check(browser, base: str) -> None:
    page = _open(browser, f"{base}/assets/host_points?view=checks", 1600, 1000)
    check = page.get_by_text("threshold_alerts").first
    if check.count():
        check.click()
        page.wait_for_timeout(3000)
    page.screenshot(path=str(IMAGES / "failed-check.png"))
    page.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    args = parser.parse_args()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("needs playwright: pip install playwright (it uses the machine's Chromium)", file=sys.stderr)
        return 2
    if not args.chromium:
        print("Chromium not found (Debian: apt-get install chromium); pass --chromium", file=sys.stderr)
        return 2
    IMAGES.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=FLAGS)
        for take in (lineage, partitions, failed_check):
            take(browser, args.url.rstrip("/"))
            print(f"took {take.__name__}")
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

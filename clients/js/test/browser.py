#!/usr/bin/env python3
"""The client in headless Chromium (Debian's /usr/bin/chromium) through Playwright.

Started by the Swift integration test, which serves clients/js/ as server-root (so the test
page and the module it imports, ../pgws.js, are both inside it) and mints the tokens:

    python3 browser.py --url http://127.0.0.1:PORT/test/browser.html --channel C \
        --rw TOKEN --short TOKEN --fresh TOKEN [--count 150]

Prints one JSON line {"ok": ..., "checks": {...}, "failures": [...]} and exits 0 when ok.
The browser is closed in every case.
"""

import argparse
import json
import sys
import urllib.parse

from playwright.sync_api import sync_playwright


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--rw", required=True)
    parser.add_argument("--short", required=True)
    parser.add_argument("--fresh", required=True)
    parser.add_argument("--count", type=int, default=150)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--timeout", type=float, default=90, help="seconds for the whole page")
    parser.add_argument("--scale", type=float, default=1, help="stretches the page's waits")
    args = parser.parse_args()

    params = {"channel": args.channel, "rw": args.rw, "short": args.short, "fresh": args.fresh, "count": args.count,
              "scale": args.scale}
    # The fragment never reaches the server (nor its log).
    page_url = args.url + "#" + urllib.parse.quote(json.dumps(params))
    console: list[str] = []
    result = None
    try:
        with sync_playwright() as playwright:
            browser = None
            try:
                browser = playwright.chromium.launch(
                    executable_path=args.chromium, args=["--no-sandbox"], headless=True)
                page = browser.new_page()
                page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
                page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
                page.goto(page_url)
                page.wait_for_selector('#result[data-done="1"]', state="attached", timeout=args.timeout * 1000)
                result = json.loads(page.text_content("#result"))
            finally:
                if browser is not None:
                    browser.close()
    except Exception as error:  # noqa: BLE001 - reported in the JSON line
        result = {"ok": False, "failures": [f"browser.py: {type(error).__name__}: {error}"]}
    if not result.get("ok"):
        result["console"] = console[-20:]
    print(json.dumps(result))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())

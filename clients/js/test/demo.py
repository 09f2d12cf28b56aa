#!/usr/bin/env python3
"""The demo page (client-example/) in headless Chromium, driven as a person would.

Started by the Swift integration test, which serves client-example/ with the audit and meta
channels of sample.conf:

    python3 demo.py --url http://127.0.0.1:PORT/ --channel C

Checks the presence pane (the page's user, a second visitor joining and leaving) and what
confused people on the page before it used the client: the meta pane sees the
audit socket open; a message sent in rw mode is one entry that turns confirmed (not "sent"
plus its echo); the heading follows the channel when the switch happens, and entries keep
their channel's tag; a reconnect after "Drop connection" says recovered; a read-only token's
message shows as refused; a close shows the server's reason, not the list of every cause.
Prints one JSON line {"ok": ..., "checks": {...}, "failures": [...]}; exits 0 when ok.
"""

import argparse
import json
import sys

from playwright.sync_api import sync_playwright

CHANNEL_PANE = "#pane-channel"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--scale", type=float, default=1, help="stretches every wait")
    args = parser.parse_args()

    checks: dict[str, bool] = {}
    failures: list[str] = []
    console: list[str] = []

    def check(name: str, condition: bool, detail: object = None) -> None:
        checks[name] = bool(condition)
        if not condition:
            failures.append(name if detail is None else f"{name}: {detail}")

    first, second = args.channel + "-a", args.channel + "-b"
    try:
        with sync_playwright() as playwright:
            browser = None
            try:
                browser = playwright.chromium.launch(
                    executable_path=args.chromium, args=["--no-sandbox"], headless=True)
                page = browser.new_page()
                page.set_default_timeout(15000 * args.scale)
                page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
                page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
                page.goto(args.url)

                state = lambda pane: page.locator(f"{pane} .state")  # noqa: E731
                log = lambda pane: page.locator(f"{pane} .log > li")  # noqa: E731
                page.wait_for_selector('#pane-meta .state[data-kind="open"]')
                page.wait_for_selector('#pane-audit .state[data-kind="open"]')
                # The audit socket opens after the meta socket: its ConnectionOpen is in the pane.
                page.wait_for_function(
                    """() => [...document.querySelectorAll('#pane-meta .log > li')].some((li) =>
                        li.textContent.includes('ConnectionOpen') && li.textContent.includes('"channel":"audit"'))""")
                check("meta pane shows the audit socket's ConnectionOpen", True)

                # rw: one entry per message, pending, then confirmed, with the offset it came back with.
                page.fill("#channel", first)
                page.fill("#user", "Ada")
                page.select_option("#mode", "rw")
                page.click("#connect")
                page.wait_for_selector(f'{CHANNEL_PANE} .state[data-kind="open"]')

                # Presence: the page lists itself, then a second visitor joins and leaves.
                page.wait_for_selector('#pane-presence .members li:has-text("Ada")')
                check("presence lists the page's own user", True)
                other = browser.new_page()
                other.set_default_timeout(15000 * args.scale)
                other.goto(args.url)
                other.fill("#channel", first)
                other.fill("#user", "Grace")
                other.click("#connect")
                page.wait_for_selector('#pane-presence .members li:has-text("Grace")')
                check("a second visitor shows as joined", log("#pane-presence").filter(has_text="Grace joined").count() == 1)
                other.close()
                page.wait_for_selector('#pane-presence .log > li:has-text("Grace left")')
                members = page.locator("#pane-presence .members li").all_text_contents()
                check("the visitor who left is no member", members == ["Ada"], members)
                check("no revoke button without make run's form", page.locator("#revoke-form").is_hidden())
                check("heading names the channel", page.text_content("#channel-title") == first)
                page.fill("#message", "hello once")
                page.press("#message", "Enter")
                page.wait_for_selector(f'{CHANNEL_PANE} .entry.sent[data-status="confirmed"][data-echoed="true"]')
                page.wait_for_timeout(500)
                entries = log(CHANNEL_PANE).filter(has_text="hello once")
                check("rw message shown once", entries.count() == 1, entries.count())
                check("confirmed entry shows its offset", entries.first.locator(".offset").count() == 1)

                # Typing another channel does not rename the heading; connecting does.
                page.fill("#channel", second)
                check("heading unchanged while typing", page.text_content("#channel-title") == first)
                page.click("#connect")
                page.wait_for_function(
                    f"() => document.querySelector('#channel-title').textContent === {json.dumps(second)}")
                page.wait_for_selector(f'{CHANNEL_PANE} .state[data-kind="open"]')
                tag = entries.first.locator(".channel").text_content()
                check("old entry keeps its channel tag", tag == first, tag)
                check("switch noted", log(CHANNEL_PANE).filter(has_text=f"now on #{second}").count() == 1)

                # Drop connection: the client reconnects and says whether it recovered.
                page.fill("#message", "before the drop")
                page.press("#message", "Enter")
                page.wait_for_function(
                    """() => [...document.querySelectorAll('#pane-channel .entry.sent')].some((li) =>
                        li.textContent.includes('before the drop') && li.dataset.echoed === 'true')""")
                page.click("#drop")
                page.wait_for_selector(f'{CHANNEL_PANE} .entry.note:has-text("recovered: true")')
                check("reconnect reports recovered: true", True)
                page.wait_for_selector(f'{CHANNEL_PANE} .state[data-kind="open"]')

                # r: what is sent is refused (forbidden), never shown as sent.
                page.select_option("#mode", "r")
                page.click("#connect")
                page.wait_for_function(
                    "() => document.querySelector('#pane-channel .state').textContent.includes('mode r')")
                page.wait_for_selector(f'{CHANNEL_PANE} .state[data-kind="open"]')
                page.fill("#message", "not allowed")
                page.press("#message", "Enter")
                page.wait_for_selector(f'{CHANNEL_PANE} .entry.sent[data-status="refused"]')
                refused = log(CHANNEL_PANE).filter(has_text="not allowed").first
                detail = refused.locator(".status-detail").text_content()
                check("read-only send refused with forbidden", detail.startswith("forbidden"), detail)
                check("refused entry not confirmed", refused.locator(".status").text_content() == "refused")

                # A token that expires without refresh: the close shows the server's reason only.
                page.uncheck("#refresh")
                page.fill("#expiry", str(0.1 * args.scale))  # minutes: 6 s, more under ThreadSanitizer
                page.click("#connect")
                page.wait_for_selector(f'{CHANNEL_PANE} .state[data-kind="closed"]', timeout=20000 * args.scale)
                closed = state(CHANNEL_PANE).text_content()
                check("close shows the server's reason", closed.startswith("closed: JWT expired"), closed)
                check("no list of generic causes", "the JWT expired" not in closed and "1006" not in closed, closed)
            finally:
                if browser is not None:
                    browser.close()
    except Exception as error:  # noqa: BLE001 - reported in the JSON line
        failures.append(f"demo.py: {type(error).__name__}: {error}")

    result = {"ok": not failures, "checks": checks, "failures": failures}
    if failures:
        result["console"] = console[-20:]
    print(json.dumps(result))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())

"""Settings shared by every test folder (tests/, libs/protocol/tests, web/tracker/tests)."""

from playwright.async_api import expect

# Chromium, the servers under test and pytest share two cores in CI. Under that load a page
# can take longer than Playwright's default of 5 s to show a change, so assertions wait 15 s.
expect.set_options(timeout=15_000)

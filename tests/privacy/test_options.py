"""Each masking option and attribute of the tracker, read from the events Chromium sent to a real Tandem."""

from __future__ import annotations

import secrets

import pytest

from tests.privacy.conftest import TrackedPage, open_tracked_page
from tests.privacy.recorded import META, Replay, custom_events

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

TYPED = "typed words 42"
PHONE = "+44 7700 900123"
DATE = "2024-05-17"


def stars(text: str) -> str:
    return "*" * len(text)


@pytest.fixture
def seeds(pages) -> dict[str, str]:
    pages.seeds = {
        "email": f"opt.{secrets.token_hex(5)}@example.test",
        "unmask_email": f"open.{secrets.token_hex(5)}@example.test",
    }
    return pages.seeds


async def open_options(browser, pages, ingest, options: str = "{}", **extra) -> TrackedPage:
    return await open_tracked_page(browser, pages, ingest.url, "options.html", options=options, **extra)


async def finish(tracked: TrackedPage) -> Replay:
    """Wait until everything recorded so far has been sent, then rebuild the page from it."""
    await tracked.recording.wait_for_marker(tracked.page, "done")
    return Replay(tracked.recording.events())


async def test_default_input_mode(browser, pages, ingest, seeds):
    for mode, expected in [(0, TYPED), (1, stars(TYPED)), (2, "")]:
        tracked = await open_options(browser, pages, ingest, f"{{defaultInputMode: {mode}}}")
        await tracked.page.fill("#input-text", TYPED)
        await tracked.page.fill("#input-textarea", TYPED)
        replay = await finish(tracked)
        assert replay.value("input-text") == expected, f"defaultInputMode {mode}"
        assert replay.value("input-textarea") == expected, f"defaultInputMode {mode}"
        if mode:
            assert TYPED not in tracked.recording.text(), f"defaultInputMode {mode}"
        await tracked.close()


async def test_default_input_mode_is_obscured(browser, pages, ingest, seeds):
    tracked = await open_options(browser, pages, ingest)
    await tracked.page.fill("#input-text", TYPED)
    replay = await finish(tracked)
    assert replay.value("input-text") == stars(TYPED)
    await tracked.close()


async def test_obscure_text_emails(browser, pages, ingest, seeds):
    email = seeds["email"]
    tracked = await open_options(browser, pages, ingest)
    replay = await finish(tracked)
    assert replay.text("text-email") == f"Write to us at {stars(email)} today"
    assert (
        custom_events(tracked.recording.events(), "tandem.page")[0]["payload"]["title"] == f"Options for {stars(email)}"
    )
    assert tracked.recording.start_requests()[0]["title"] == f"Options for {stars(email)}"
    assert email not in tracked.recording.text()
    await tracked.close()

    tracked = await open_options(browser, pages, ingest, "{obscureTextEmails: false}")
    replay = await finish(tracked)
    assert replay.text("text-email") == f"Write to us at {email} today"
    assert tracked.recording.start_requests()[0]["title"] == f"Options for {email}"
    await tracked.close()


async def test_obscure_text_numbers(browser, pages, ingest, seeds):
    tracked = await open_options(browser, pages, ingest)
    replay = await finish(tracked)
    assert replay.text("text-number") == "Order 48213 ships"
    await tracked.close()

    tracked = await open_options(browser, pages, ingest, "{obscureTextNumbers: true}")
    replay = await finish(tracked)
    assert replay.text("text-number") == "Order ***** ships"
    assert "48213" not in tracked.recording.text()
    await tracked.close()


async def test_obscure_input_emails(browser, pages, ingest, seeds):
    email = seeds["email"]
    tracked = await open_options(browser, pages, ingest, "{defaultInputMode: 0}")
    await tracked.page.fill("#input-email", email)
    await tracked.page.fill("#input-text", f"mail {email} now")
    replay = await finish(tracked)
    assert replay.value("input-email") == stars(email)
    assert replay.value("input-text") == f"mail {stars(email)} now"
    assert email not in tracked.recording.text()
    await tracked.close()

    tracked = await open_options(browser, pages, ingest, "{defaultInputMode: 0, obscureInputEmails: false}")
    await tracked.page.fill("#input-email", email)
    replay = await finish(tracked)
    assert replay.value("input-email") == email
    await tracked.close()


async def test_obscure_input_numbers(browser, pages, ingest, seeds):
    tracked = await open_options(browser, pages, ingest, "{defaultInputMode: 0, obscureInputNumbers: true}")
    await tracked.page.fill("#input-tel", PHONE)
    await tracked.page.fill("#input-number", "12345")
    await tracked.page.fill("#input-text", "room 12")
    replay = await finish(tracked)
    assert replay.value("input-tel") == stars(PHONE)
    assert replay.value("input-number") == "*****"
    assert replay.value("input-text") == "room **"
    await tracked.close()

    tracked = await open_options(browser, pages, ingest, "{defaultInputMode: 0}")
    await tracked.page.fill("#input-tel", PHONE)
    replay = await finish(tracked)
    assert replay.value("input-tel") == PHONE
    await tracked.close()


async def test_obscure_input_dates(browser, pages, ingest, seeds):
    tracked = await open_options(browser, pages, ingest, "{defaultInputMode: 0, obscureInputDates: true}")
    await tracked.page.fill("#input-date", DATE)
    await tracked.page.fill("#input-text", f"due {DATE}")
    replay = await finish(tracked)
    assert replay.value("input-date") == stars(DATE)
    assert replay.value("input-text") == f"due {stars(DATE)}"
    await tracked.close()

    tracked = await open_options(browser, pages, ingest, "{defaultInputMode: 0}")
    await tracked.page.fill("#input-date", DATE)
    replay = await finish(tracked)
    assert replay.value("input-date") == DATE
    await tracked.close()


async def test_private_mode(browser, pages, ingest, seeds):
    tracked = await open_options(browser, pages, ingest, "{privateMode: true, defaultInputMode: 0}")
    await tracked.page.fill("#input-text", TYPED)
    await tracked.page.fill("#unmask-input", TYPED)
    replay = await finish(tracked)
    assert replay.text("text-plain") == "***** ***** ****"
    assert replay.value("input-text") == stars(TYPED)
    assert replay.text("unmask-text").strip() == f"Unmasked words at {seeds['unmask_email']}"
    assert replay.value("unmask-input") == TYPED
    await tracked.close()


async def test_respect_do_not_track(browser, pages, ingest, seeds):
    do_not_track = "Object.defineProperty(Navigator.prototype, 'doNotTrack', {get: () => '1'});"
    tracked = await open_options(browser, pages, ingest, "{respectDoNotTrack: true}", init_script=do_not_track)
    started = await tracked.page.evaluate("window.__started")
    assert started["success"] is False
    assert "Do Not Track" in started["reason"]
    assert tracked.recording.bodies == []
    await tracked.close()

    tracked = await open_options(browser, pages, ingest, "{}", init_script=do_not_track)
    assert (await tracked.page.evaluate("window.__started"))["success"] is True
    await tracked.close()


async def test_obscured_attributes(browser, pages, ingest, seeds):
    tracked = await open_options(browser, pages, ingest, "{defaultInputMode: 0}")
    await tracked.page.fill("#attr-input-obscured", TYPED)
    replay = await finish(tracked)
    assert replay.text("tandem-obscured") == "****** ******** *****"
    assert replay.text("or-obscured") == "********** ******** *****"
    assert replay.text("or-masked") == "********** ****** *****"
    assert replay.value("attr-input-obscured") == stars(TYPED)
    assert replay.text("obscured-unmask-inner") == "Unmasked inside obscured"
    await tracked.close()


async def test_hidden_attributes(browser, pages, ingest, seeds):
    tracked = await open_options(browser, pages, ingest)
    replay = await finish(tracked)
    sent = tracked.recording.text()
    for box, height, words in [
        ("box-tandem-hidden", "40px", "Tandem hidden words"),
        ("box-or-hidden", "41px", "OpenReplay hidden words"),
        ("box-or-htmlmasked", "42px", "OpenReplay htmlmasked words"),
        ("box-hidden-unmask", "43px", "Unmask inside hidden"),
    ]:
        assert replay.is_placeholder(box), box
        assert replay.attribute(box, "rr_height") == height, box
        assert words not in sent, box
    await tracked.close()


async def test_unmask_attribute(browser, pages, ingest, seeds):
    tracked = await open_options(browser, pages, ingest)
    await tracked.page.fill("#unmask-input", TYPED)
    await tracked.page.fill("#input-password", "Pw-unmasked-1")
    replay = await finish(tracked)
    assert replay.value("unmask-input") == TYPED
    assert replay.text("unmask-text").strip() == f"Unmasked words at {seeds['unmask_email']}"
    assert "Pw-unmasked-1" not in tracked.recording.text()
    await tracked.close()


DOM_SANITIZER = """{domSanitizer: (element) =>
  element.classList.contains("sanitize-hide") ? 2 : element.classList.contains("sanitize-obscure") ? 1 : 0}"""


async def test_dom_sanitizer(browser, pages, ingest, seeds):
    tracked = await open_options(browser, pages, ingest, DOM_SANITIZER)
    await tracked.page.evaluate(
        """() => {
          document.querySelector(".box-sanitized-hidden").append(" Later hidden words");
          const added = document.createElement("div");
          added.className = "sanitize-hide box-added-hidden";
          added.textContent = "Added hidden words";
          document.body.append(added);
        }"""
    )
    replay = await finish(tracked)
    sent = tracked.recording.text()
    assert replay.text("sanitized-obscured") == "********* ******** *****"
    assert replay.text("sanitized-unmask") == "********* ***** ******"
    assert replay.is_placeholder("box-sanitized-hidden")
    assert replay.attribute("box-sanitized-hidden", "rr_height") == "44px"
    assert replay.is_placeholder("box-added-hidden")
    assert "Sanitizer hidden words" not in sent
    assert "Later hidden words" not in sent
    assert "Added hidden words" not in sent
    await tracked.close()


async def test_url_and_title_sanitizers(browser, pages, ingest, seeds):
    options = """{
      urlSanitizer: (url) => url.replace("private-path", "redacted"),
      titleSanitizer: (title) => "Title of " + title.length + " characters",
    }"""
    query = "?ref=private-path&token=tok-4f2a9c"
    tracked = await open_options(browser, pages, ingest, options, query=query)
    await finish(tracked)
    events = tracked.recording.events()
    title = f"Title of {len('Options for ') + len(seeds['email'])} characters"
    meta = next(event["data"] for event in events if event["type"] == META)
    page_view = custom_events(events, "tandem.page")[0]["payload"]
    start = tracked.recording.start_requests()[0]
    for url in (meta["href"], page_view["url"], start["url"]):
        assert url.endswith("/pages/options.html?ref=redacted&token=**********"), url
    assert page_view["title"] == title
    assert start["title"] == title
    sent = tracked.recording.text()
    assert "private-path" not in sent
    assert "tok-4f2a9c" not in sent
    assert "Options for" not in sent
    await tracked.close()


async def test_password_always_hidden(browser, pages, ingest, seeds):
    tracked = await open_options(browser, pages, ingest, "{defaultInputMode: 0, obscureInputEmails: false}")
    await tracked.page.type("#input-password", "Pw-always-1")
    replay = await finish(tracked)
    assert replay.value("input-password") == ""
    assert "Pw-always-1" not in tracked.recording.text()
    await tracked.close()


async def test_text_attributes(browser, pages, ingest, seeds):
    email = seeds["email"]
    tracked = await open_options(browser, pages, ingest)
    replay = await finish(tracked)
    assert replay.attribute("attr-img", "title") == f"Mail {stars(email)}"
    assert replay.attribute("attr-img", "alt") == "Alt words"
    assert replay.attribute("attr-img-obscured", "alt") == "*** *****"
    assert replay.attribute("attr-img-obscured", "title") == "***** *****"
    assert replay.attribute("attr-input-obscured", "placeholder") == "*********** *****"
    assert replay.attribute("attr-input-obscured", "aria-label") == "***** *****"
    await tracked.close()

    tracked = await open_options(browser, pages, ingest, "{privateMode: true}")
    replay = await finish(tracked)
    assert replay.attribute("attr-img", "alt") == "*** *****"
    await tracked.close()

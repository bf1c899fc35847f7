"""Ways masked values escaped other session-replay trackers, and the places masking must reach.

Each test drives Chromium against a real Tandem and reads what the tracker sent. A seeded value
is random per test, so finding it anywhere in the sent bodies is a leak.
"""

from __future__ import annotations

import json
import secrets

import pytest

from tests.privacy.conftest import TrackedPage, open_tracked_page
from tests.privacy.recorded import META, Replay, custom_events

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


def seed(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def email_seed(prefix: str) -> str:
    return f"{prefix}.{secrets.token_hex(5)}@example.test"


TAKE_SNAPSHOT = "window.__tracker.recorder.takeFullSnapshot()"


def stars(text: str) -> str:
    return "*" * len(text)


async def finish(tracked: TrackedPage) -> Replay:
    await tracked.recording.wait_for_marker(tracked.page, "done")
    return Replay(tracked.recording.events())


def assert_absent(tracked: TrackedPage, *values: str) -> None:
    sent = tracked.recording.text()
    for value in values:
        assert value not in sent, f"{value!r} was sent"
        assert json.dumps(value)[1:-1] not in sent, f"{value!r} was sent JSON-escaped"


@pytest.fixture
def seeds(pages) -> dict[str, str]:
    pages.seeds = {
        "upper_password": seed("Pw-upper"),
        "sibling_email": email_seed("sibling"),
        "frame_email": email_seed("frame"),
        "shadow_email": email_seed("shadow"),
    }
    return pages.seeds


async def open_leaks(browser, pages, ingest, options: str = "{}") -> TrackedPage:
    return await open_tracked_page(browser, pages, ingest.url, "leaks.html", options=options)


async def test_value_rendered_through_attribute(browser, pages, ingest, seeds):
    """A framework re-renders a field by writing its value attribute, with no input event."""
    values = [seed("attr-input"), seed("default-value"), seed("attr-textarea"), seed("textarea-text")]
    tracked = await open_leaks(browser, pages, ingest)
    await tracked.page.fill("#rendered-input", "user typing")
    await tracked.page.evaluate(
        """([input, defaultValue, textarea, textareaText]) => {
          document.getElementById("rendered-input").setAttribute("value", input);
          document.getElementById("rendered-default").defaultValue = defaultValue;
          document.getElementById("rendered-textarea").setAttribute("value", textarea);
          document.getElementById("rendered-textarea-text").textContent = textareaText;
        }""",
        values,
    )
    replay = await finish(tracked)
    assert_absent(tracked, *values)
    assert replay.attribute("rendered-input", "value") == stars(values[0])
    assert replay.attribute("rendered-default", "value") == stars(values[1])
    await tracked.close()


async def test_show_password_toggle(browser, pages, ingest, seeds):
    """A "show password" button switches the field to type=text, before or after typing."""
    first, more, early = seed("Pw-first"), seed("more"), seed("Pw-early")
    tracked = await open_leaks(browser, pages, ingest, "{defaultInputMode: 0}")
    await tracked.page.type("#toggled-password", first)
    await tracked.page.evaluate("document.getElementById('toggled-password').type = 'text'")
    await tracked.page.type("#toggled-password", more)
    await tracked.page.evaluate("document.getElementById('toggled-password').setAttribute('type', 'password')")
    await tracked.page.evaluate("document.getElementById('toggled-early').type = 'text'")
    await tracked.page.type("#toggled-early", early)
    replay = await finish(tracked)
    assert_absent(tracked, first, more, early, first[:8], early[:8])
    assert replay.value("toggled-password") == ""
    assert replay.value("toggled-early") == ""
    await tracked.close()


async def test_upper_case_attributes(browser, pages, ingest, seeds):
    """TYPE="PASSWORD" in the page source, and attribute names a script writes in upper case."""
    dynamic, upper_value = seed("Pw-dynamic"), seed("upper-value")
    tracked = await open_leaks(browser, pages, ingest, "{defaultInputMode: 0}")
    await tracked.page.evaluate(
        """([dynamic, upperValue]) => {
          const field = document.getElementById("upper-dynamic");
          field.setAttribute("TYPE", "PASSWORD");
          field.value = dynamic;
          // setAttributeNS keeps the name's case. rrweb's mutation observer then reads
          // getAttribute("VALUE"), which finds nothing, but the next snapshot copies "VALUE".
          document.getElementById("upper-value").setAttributeNS(null, "VALUE", upperValue);
        }""",
        [dynamic, upper_value],
    )
    await tracked.page.type("#upper-password", "typed")
    await tracked.page.evaluate(TAKE_SNAPSHOT)
    replay = await finish(tracked)
    assert_absent(tracked, seeds["upper_password"], dynamic)
    assert replay.value("upper-password") == ""
    # With defaultInputMode 0 an ordinary VALUE attribute is recorded as the page wrote it.
    assert replay.attribute("upper-value", "VALUE") == upper_value
    await tracked.close()

    tracked = await open_leaks(browser, pages, ingest)
    await tracked.page.evaluate(
        "value => document.getElementById('upper-value').setAttributeNS(null, 'VALUE', value)", upper_value
    )
    await tracked.page.evaluate(TAKE_SNAPSHOT)
    replay = await finish(tracked)
    assert_absent(tracked, seeds["upper_password"], upper_value)
    assert replay.attribute("upper-value", "VALUE") == stars(upper_value)
    await tracked.close()


async def test_email_between_elements(browser, pages, ingest, seeds):
    """An email address in a text node whose parent also contains elements, first and in later changes."""
    added, changed = email_seed("added"), email_seed("changed")
    tracked = await open_leaks(browser, pages, ingest)
    await tracked.page.evaluate(
        """([added, changed]) => {
          const later = document.getElementById("email-later");
          later.insertBefore(document.createTextNode("Mail " + added + " "), later.firstChild);
          later.append(document.createElement("i"), " then");
          const parent = document.getElementById("email-parent");
          setTimeout(() => { parent.childNodes[1].data = " " + changed + " "; }, 50);
        }""",
        [added, changed],
    )
    await tracked.page.wait_for_timeout(150)
    replay = await finish(tracked)
    assert_absent(tracked, seeds["sibling_email"], added, changed)
    assert replay.text("email-parent") == f"Contact {stars(changed)} now"
    assert replay.text("email-later") == f"Mail {stars(added)} Later then"
    await tracked.close()


async def test_value_set_by_script(browser, pages, ingest, seeds):
    """Values a script sets through the value property, with no user event at all."""
    values = [seed("script-input"), seed("script-textarea"), seed("script-hidden")]
    tracked = await open_leaks(browser, pages, ingest)
    await tracked.page.evaluate(
        """([input, textarea, hidden]) => {
          document.getElementById("script-input").value = input;
          document.getElementById("script-textarea").value = textarea;
          document.getElementById("script-hidden").value = hidden;
        }""",
        values,
    )
    replay = await finish(tracked)
    assert_absent(tracked, *values)
    assert replay.value("script-input") == stars(values[0])
    assert replay.value("script-textarea") == stars(values[1])
    assert replay.value("script-hidden") == ""
    await tracked.close()


async def open_everywhere(browser, pages, ingest, options: str = "{}") -> TrackedPage:
    return await open_tracked_page(browser, pages, ingest.url, "everywhere.html", options=options)


async def test_shadow_dom(browser, pages, ingest, seeds):
    typed, later = seed("shadow-typed"), email_seed("later")
    tracked = await open_everywhere(browser, pages, ingest)
    await tracked.page.fill("#shadow-input", typed)
    await tracked.page.evaluate(
        """later => {
          document.getElementById("shadow-host").shadowRoot.append(" Later mail " + later);
          document.getElementById("shadow-obscured").shadowRoot.append(" Later obscured words");
        }""",
        later,
    )
    replay = await finish(tracked)
    assert_absent(tracked, seeds["shadow_email"], typed, later)
    sent = tracked.recording.text()
    assert "Obscured shadow root text" not in sent
    assert "Obscured shadow words" not in sent
    assert "Later obscured words" not in sent
    assert replay.text("shadow-text") == "Shadow words"
    assert replay.value("shadow-input") == stars(typed)
    await tracked.close()


async def test_same_origin_iframes(browser, pages, ingest, seeds):
    typed = seed("frame-typed")
    tracked = await open_everywhere(browser, pages, ingest)
    await tracked.recording.wait_for(lambda events: _frames_attached(events) >= 2)
    await tracked.page.frame_locator("#frame-plain").locator("#frame-input").fill(typed)
    replay = await finish(tracked)
    assert_absent(tracked, seeds["frame_email"], typed)
    sent = tracked.recording.text()
    assert sent.count("Frame words") == 1, "only the plain frame shows its words"
    assert "***** *****" in sent, "the obscured frame keeps the length of its words"
    assert replay.is_placeholder("frame-hidden")
    await tracked.close()


def _frames_attached(events) -> int:
    """Count the iframe documents the recording added (the hidden frame's is dropped, leaving an empty event)."""
    return sum(
        1
        for event in events
        if event["type"] == 3
        and event["data"].get("source") == 0
        and event["data"].get("isAttachIframe")
        and event["data"].get("adds")
    )


async def test_console_error_and_click_text(browser, pages, ingest, seeds):
    """Whatever observer sends console messages, errors and click labels, their text is masked."""
    email, typed = email_seed("console"), seed("typed-secret")
    tracked = await open_everywhere(browser, pages, ingest)
    await tracked.page.fill("#secret-input", typed)
    label = await tracked.page.evaluate(
        """([email, typed]) => {
          const recorder = window.__tracker.recorder;
          recorder.addCustomEvent("tandem.console", {level: "log", message: "user " + email + " typed " + typed});
          recorder.addCustomEvent("tandem.error", {message: "failed for " + email, stack: "at check (" + typed + ")"});
          recorder.addCustomEvent("tandem.click", {label: "Send to " + email, selector: "#send"});
          const obscured = document.getElementById("shadow-obscured");
          return recorder.privacy.maskLabel("Obscured label", obscured);
        }""",
        [email, typed],
    )
    await finish(tracked)
    assert_absent(tracked, email, typed)
    events = tracked.recording.events()
    assert custom_events(events, "tandem.console")[0]["payload"]["message"].startswith("user ****")
    assert custom_events(events, "tandem.error")[0]["payload"]["message"] == f"failed for {stars(email)}"
    assert custom_events(events, "tandem.click")[0]["payload"]["label"] == f"Send to {stars(email)}"
    assert label == "******** *****"
    await tracked.close()


async def test_get_form_carries_value_to_url(browser, pages, ingest, seeds):
    """A GET form puts a masked field's value into the next page's URL."""
    typed = seed("query")
    tracked = await open_everywhere(browser, pages, ingest)
    await tracked.page.fill("#search-input", typed)
    await tracked.page.click("#search-submit")
    await tracked.page.wait_for_url("**/results.html?*")
    await tracked.page.wait_for_function("window.__started !== undefined")
    await finish(tracked)
    assert_absent(tracked, typed)
    hrefs = [event["data"]["href"] for event in tracked.recording.events() if event["type"] == META]
    assert hrefs[-1].endswith(f"/pages/results.html?query={stars(typed)}&page=*")
    assert tracked.recording.start_requests()[-1]["url"] == hrefs[-1]
    await tracked.close()

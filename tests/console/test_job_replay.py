"""Replay from the Jobs page: events recorded before their job existed are counted by a dry
run, replayed on confirmation, and run; a second replay queues nothing new."""

from __future__ import annotations

import re
import uuid

from console.conftest import API, Console, sign_in
from playwright.async_api import Page, expect

# Five minutes ago as a datetime-local value, in the browser's own time zone.
FIVE_MINUTES_AGO = """() => {
  const d = new Date(Date.now() - 300000);
  const two = (v) => String(v).padStart(2, "0");
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())}` +
    `T${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}"""


async def test_replay_events_recorded_before_the_job_existed(console: Console, page: Page) -> None:
    event_type = f"test.{uuid.uuid4().hex[:8]}"
    # No job matches them yet: they are only recorded.
    for _ in range(3):
        await console.publish({"trigger": {"event_type": event_type}})

    async def recorded() -> bool:
        page_ = await console.api.get(f"{API}/events", params={"event_type": event_type})
        return len(page_.json()["items"]) == 3

    await console.until(recorded)
    job = await console.job(trigger={"event_type": event_type})
    assert await console.runs("executed", job) == []

    await sign_in(page, console, await console.key("admin"), f"/jobs?q={job['name']}")
    line = page.get_by_role("row").filter(has_text=job["name"])
    opener = line.get_by_role("button", name="Replay")
    await opener.click()
    dialog = page.get_by_role("dialog", name=f"Replay events into job {job['name']}")
    await expect(dialog.get_by_label("Since")).to_be_focused()
    await dialog.get_by_label("Since").fill(await page.evaluate(FIVE_MINUTES_AGO))
    await dialog.get_by_role("button", name="Count matching events").click()
    outcome = dialog.get_by_role("region", name="Replay result")
    await expect(outcome).to_contain_text(
        re.compile(r"3 of \d+ events in the window match; 3 would run, 0 already ran\.")
    )
    assert await console.runs("queue", job) == [], "a dry run queues nothing"

    await dialog.get_by_role("button", name="Replay 3 events").click()
    await expect(outcome).to_contain_text("Replayed: 3 runs queued, 0 already ran.")

    async def ran() -> bool:
        return len(await console.runs("executed", job)) == 3

    await console.until(ran)

    # Counted again, the window has nothing new to run.
    await dialog.get_by_role("button", name="Count matching events").click()
    await expect(outcome).to_contain_text("0 would run, 3 already ran.")
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(opener).to_be_focused()


async def test_the_replay_dialog_says_what_is_wrong_with_the_window(
    console: Console, page: Page
) -> None:
    job = await console.job()
    await sign_in(page, console, await console.key("admin"), f"/jobs?q={job['name']}")
    await (
        page.get_by_role("row")
        .filter(has_text=job["name"])
        .get_by_role("button", name="Replay")
        .click()
    )
    dialog = page.get_by_role("dialog", name=f"Replay events into job {job['name']}")
    await dialog.get_by_label("Since").fill("")
    await dialog.get_by_role("button", name="Count matching events").click()
    await expect(dialog.get_by_label("Since")).to_have_attribute("aria-invalid", "true")
    await expect(dialog.locator(".field-error")).to_have_text("since is required")


async def test_viewers_and_operators_see_no_replay(console: Console, page: Page) -> None:
    job = await console.job()
    await sign_in(page, console, await console.key("operator"), f"/jobs?q={job['name']}")
    line = page.get_by_role("row").filter(has_text=job["name"])
    await expect(line.get_by_role("button", name="Pause")).to_be_visible()
    await expect(line.get_by_role("button", name="Replay")).to_have_count(0)

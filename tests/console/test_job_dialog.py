"""The job dialog: every problem of a job at once, in words, next to its field; and the job's
`cancel_on` shown, edited and kept, and shown on the Jobs page."""

from __future__ import annotations

from console.conftest import API, Console, sign_in
from playwright.async_api import Page, expect


async def test_the_dialog_shows_every_problem_at_once_in_words(
    console: Console, page: Page
) -> None:
    await sign_in(page, console, await console.key("admin"), "/jobs")
    await page.get_by_role("button", name="Add job").click()
    dialog = page.get_by_role("dialog", name="Add a job")
    await dialog.get_by_label("Name", exact=True).fill("-not-a-name")
    await dialog.get_by_label("Event type").fill("channel.updated")
    await dialog.get_by_label("Script", exact=True).fill("noop")
    await dialog.get_by_label("Timeout (seconds)").fill("0")
    await dialog.get_by_role("button", name="Add job").click()

    def error_of(label: str) -> object:
        control = page.get_by_label(label, exact=True)
        return dialog.locator(".field", has=control).locator(".field-error")

    await expect(error_of("Name")).to_have_text(
        "name may hold letters, digits, spaces and _ . : - and must start with a letter or digit"
    )
    await expect(error_of("Timeout (seconds)")).to_have_text(
        "timeout_s must be more than 0 and at most 86,400 seconds"
    )
    await expect(dialog.get_by_role("alert")).to_contain_text("Check the 2 highlighted fields")
    await expect(dialog.get_by_label("Name", exact=True)).to_be_focused()


async def test_cancel_on_is_edited_in_the_dialog_and_kept(console: Console, page: Page) -> None:
    job = await console.job(lane="{{ data.channel_id }}")
    await sign_in(page, console, await console.key("admin"), f"/jobs?q={job['name']}")
    line = page.get_by_role("row").filter(has_text=job["name"])
    await line.get_by_role("button", name="Edit").click()
    dialog = page.get_by_role("dialog", name=f"Edit job {job['name']}")
    await dialog.get_by_role("button", name="Add cancel trigger").click()
    await expect(dialog.get_by_label("Cancelling event type")).to_be_focused()
    await dialog.get_by_label("Cancelling event type").fill("channel.removed")
    conditions = dialog.get_by_label("Its conditions (JSON)")
    await conditions.fill("origin is avcm")
    await dialog.get_by_role("button", name="Save job").click()
    await expect(conditions).to_have_attribute("aria-invalid", "true")
    field = dialog.locator(".field", has=page.get_by_label("Its conditions (JSON)"))
    await expect(field).to_contain_text("not valid JSON")

    await conditions.fill('[{"path": "data.origin", "op": "eq", "value": "avcm"}]')
    await dialog.get_by_label("Stop the running one too").check()
    await dialog.get_by_role("button", name="Save job").click()
    await expect(dialog).to_be_hidden()
    await expect(line).to_contain_text(
        'cancelled by: channel.removed if data.origin eq "avcm" (also the running run)'
    )
    trigger = {
        "event_type": "channel.removed",
        "conditions": [{"path": "data.origin", "op": "eq", "value": "avcm"}],
        "scope": "lane",
        "running": True,
    }
    assert (await console.api.get(f"{API}/jobs/{job['id']}")).json()["cancel_on"] == [trigger]

    # Editing another field keeps it; the dialog shows it as saved.
    await line.get_by_role("button", name="Edit").click()
    await expect(dialog.get_by_label("Cancelling event type")).to_have_value("channel.removed")
    await expect(dialog.get_by_label("Stop the running one too")).to_be_checked()
    await dialog.get_by_label("Description").fill("kept its cancel trigger")
    await dialog.get_by_role("button", name="Save job").click()
    await expect(dialog).to_be_hidden()
    saved = (await console.api.get(f"{API}/jobs/{job['id']}")).json()
    assert (saved["description"], saved["cancel_on"]) == ("kept its cancel trigger", [trigger])

    # Removed, it is gone.
    await line.get_by_role("button", name="Edit").click()
    await dialog.get_by_role("button", name="Remove cancel trigger 1").click()
    await expect(dialog.get_by_role("button", name="Add cancel trigger")).to_be_focused()
    await dialog.get_by_role("button", name="Save job").click()
    await expect(dialog).to_be_hidden()
    await expect(line).not_to_contain_text("cancelled by")
    assert (await console.api.get(f"{API}/jobs/{job['id']}")).json()["cancel_on"] == []

"""Flow control in the console: an operator pauses and resumes a job from the Jobs page, the
job form sets the limits, and the Queue says which runs a debounce absorbed."""

from __future__ import annotations

from console.conftest import API, Console, sign_in
from playwright.async_api import Page, expect


async def test_pause_and_resume_a_job_from_the_jobs_page(console: Console, page: Page) -> None:
    job = await console.job()
    await sign_in(page, console, await console.key("operator"), f"/jobs?q={job['name']}")
    line = page.get_by_role("row").filter(has_text=job["name"])
    await line.get_by_role("button", name="Pause").click()
    await expect(line).to_contain_text("paused by key:operator-")
    assert (await console.api.get(f"{API}/jobs/{job['id']}")).json()["paused"] is True
    await line.get_by_role("button", name="Resume").click()
    await expect(line.get_by_role("button", name="Pause")).to_be_visible()
    assert (await console.api.get(f"{API}/jobs/{job['id']}")).json()["paused"] is False


async def test_the_job_form_sets_the_flow_control_limits(console: Console, page: Page) -> None:
    job = await console.job()
    await sign_in(page, console, await console.key("admin"), f"/jobs?q={job['name']}")
    line = page.get_by_role("row").filter(has_text=job["name"])
    await line.get_by_role("button", name="Edit").click()
    dialog = page.get_by_role("dialog", name=f"Edit job {job['name']}")
    await dialog.get_by_label("At most at once (runs)").fill("2")
    await dialog.get_by_label("Pause after failures in a row").fill("3")
    await dialog.get_by_label("Debounce (seconds)", exact=True).fill("1.5")
    await dialog.get_by_role("button", name="Save job").click()
    await expect(dialog).to_be_hidden()
    await expect(line).to_contain_text("at most 2 at once")
    saved = (await console.api.get(f"{API}/jobs/{job['id']}")).json()
    assert (saved["max_concurrency"], saved["pause_after_failures"], saved["debounce_s"]) == (
        2,
        3,
        1.5,
    )
    # Cleared again: an empty field is no limit.
    await line.get_by_role("button", name="Edit").click()
    await dialog.get_by_label("At most at once (runs)").fill("")
    await dialog.get_by_role("button", name="Save job").click()
    await expect(dialog).to_be_hidden()
    assert (await console.api.get(f"{API}/jobs/{job['id']}")).json()["max_concurrency"] is None


async def test_the_queue_shows_the_events_a_debounced_run_absorbed(
    console: Console, page: Page
) -> None:
    job = await console.job(debounce_s=600)  # no test waits it out
    for _ in range(3):
        await console.publish(job)

    async def absorbed() -> bool:
        items = await console.runs("queue", job)
        return len(items) == 1 and items[0]["absorbed"] == 2

    await console.until(absorbed)
    await sign_in(page, console, await console.key("viewer"), f"/queue?job={job['name']}")
    await expect(page.get_by_text("(debounced: 2 earlier events)")).to_be_visible()
    [run] = await console.runs("queue", job)
    await console.api.delete(f"{API}/queue/{run['id']}")  # nothing left behind


async def test_the_queue_shows_a_paused_jobs_runs_as_paused(console: Console, page: Page) -> None:
    job = await console.job()
    await console.api.post(f"{API}/jobs/{job['id']}/pause")
    await console.publish(job)

    async def queued() -> bool:
        return len(await console.runs("queue", job)) == 1

    await console.until(queued)
    await sign_in(page, console, await console.key("viewer"), f"/queue?job={job['name']}")
    line = page.get_by_role("row").filter(has_text=job["name"])
    await expect(line).to_contain_text("paused until its job is resumed")
    [run] = await console.runs("queue", job)
    await console.api.delete(f"{API}/queue/{run['id']}")  # nothing left behind
    await console.api.post(f"{API}/jobs/{job['id']}/resume")

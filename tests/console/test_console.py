"""The console's four pages and the run detail in Chromium, each action checked against the
API afterwards: sign in, add a job, a run through Queue to Executed, Remove, Cancel, Execute Now,
Execute a failed run, Auto Cleanup, and what each role sees."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from console.conftest import API, Console, settle, sign_in
from playwright.async_api import Page, expect

LONG = 120  # s: an interval no test waits out, so a lane's second run stays queued


@pytest.fixture
async def long_interval(console: Console) -> AsyncIterator[None]:
    await console.set_interval(LONG)
    try:
        yield
    finally:
        await console.set_interval(0)


def row(page: Page, run_id: int) -> Any:
    return page.get_by_role("row").filter(
        has=page.get_by_role("link", name=f"Run {run_id}", exact=True)
    )


async def waiting_run(console: Console, job: dict[str, Any]) -> int:
    """Publish two events for a job of one lane: the first runs, the second waits out the
    interval. Returns the waiting run's id."""
    await console.publish(job)
    await console.until(lambda: console.runs("executed", job))
    await console.publish(job)

    async def queued() -> int | None:
        items = [r for r in await console.runs("queue", job) if r["not_before"]]
        return items[0]["id"] if items else None

    return int(await console.until(queued))


async def test_sign_in_with_an_api_key(console: Console, page: Page) -> None:
    await page.goto(console.url + "/")
    await expect(page).to_have_url(re.compile(r"/sign-in\?next=%2Foverview$"))

    await page.get_by_label("API key").fill("jm_not-a-key-anybody-issued")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#sign-in-form .field-error")).to_have_text(
        "unknown or revoked API key"
    )
    await expect(page.get_by_label("API key")).to_have_attribute("aria-invalid", "true")
    await expect(
        page.get_by_role("alert").filter(has_text="Check the highlighted field")
    ).to_be_visible()

    key = await console.key("operator")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(re.compile(r"/overview$"))
    await expect(page.locator("[data-who]")).to_contain_text("(operator)")
    await expect(page.get_by_role("link", name=re.compile("^Overview"))).to_have_attribute(
        "aria-current", "page"
    )

    # The API saw the key in use; signing out forgets it.
    keys = (await console.api.get(f"{API}/keys", params={"limit": 500})).json()["items"]
    used = next(k for k in keys if key.startswith(k["prefix"]))
    assert used["last_used_at"] is not None
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(re.compile(r"/sign-in$"))
    await page.goto(console.url + "/failed")
    await expect(page).to_have_url(re.compile(r"/sign-in\?next=%2Ffailed$"))


async def test_add_a_job_in_the_dialog(console: Console, page: Page) -> None:
    await sign_in(page, console, await console.key("admin"), "/jobs")
    add = page.get_by_role("button", name="Add job")
    await add.click()
    dialog = page.get_by_role("dialog", name="Add a job")
    await expect(dialog).to_be_visible()

    # Escape closes the dialog and gives the focus back to the button that opened it.
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(add).to_be_focused()

    name = f"console-job-{console.stack.topology.namespace[-6:]}"
    await add.click()
    await dialog.get_by_label("Name", exact=True).fill(name)
    await dialog.get_by_label("Event type").fill("channel.updated")
    await dialog.get_by_label("Script", exact=True).fill("no-such-script")
    await dialog.get_by_role("button", name="Add condition").click()
    await dialog.get_by_label("Path").fill("data.channel.origin")
    await dialog.get_by_label("Operator").select_option("regex")
    await dialog.get_by_label("Value").fill("(avcm")
    await dialog.get_by_role("button", name="Add job").click()
    # The API's messages, next to the fields they concern.
    await expect(dialog.locator("fieldset.condition .field-error")).to_contain_text(
        "regex does not compile"
    )
    await dialog.get_by_label("Value").fill("^avcm$")
    await dialog.get_by_role("button", name="Add job").click()
    script_error = dialog.locator(".field", has=page.get_by_label("Script", exact=True)).locator(
        ".field-error"
    )
    await expect(script_error).to_contain_text("unknown script 'no-such-script'")
    await expect(dialog.get_by_label("Script", exact=True)).to_be_focused()

    await dialog.get_by_label("Script", exact=True).fill("ipx_update")
    await dialog.get_by_label("Command template").fill("{{ data.channel | tojson }}")
    await dialog.get_by_label("Lane", exact=True).fill("{{ data.channel.channel_id }}")
    await dialog.get_by_label("Attempts at most").fill("3")
    await dialog.get_by_role("button", name="Add job").click()
    await expect(dialog).to_be_hidden()
    await expect(page.get_by_role("status")).to_contain_text(f"Job {name} added")
    await expect(page.get_by_role("row").filter(has_text=name)).to_contain_text("ipx_update")

    [job] = (await console.api.get(f"{API}/jobs", params={"q": name})).json()["items"]
    assert job["trigger"] == {
        "event_type": "channel.updated",
        "conditions": [{"path": "data.channel.origin", "op": "regex", "value": "^avcm$"}],
    }
    assert (job["script"], job["lane"], job["max_attempts"]) == (
        "ipx_update",
        "{{ data.channel.channel_id }}",
        3,
    )
    assert job["command_template"] == "{{ data.channel | tojson }}"
    assert job["enabled"] is True


async def test_disable_test_and_remove_a_job(console: Console, page: Page) -> None:
    job = await console.job(
        trigger={
            "event_type": "channel.updated",
            "conditions": [{"path": "data.channel.origin", "op": "eq", "value": "avcm"}],
        },
        command_template="{{ data.channel.channel_id }}",
    )
    await sign_in(page, console, await console.key("admin"), "/jobs")
    await page.get_by_label("Text in name or description").fill(job["name"])
    line = page.get_by_role("row").filter(has_text=job["name"])
    await expect(line).to_have_count(1)
    await expect(page).to_have_url(re.compile(rf"\?q={job['name']}$"))  # the filter is kept

    await line.get_by_role("button", name="Disable").click()
    await expect(line).to_contain_text("disabled")
    assert (await console.api.get(f"{API}/jobs/{job['id']}")).json()["enabled"] is False

    await line.get_by_role("button", name="Edit").click()
    dialog = page.get_by_role("dialog", name=f"Edit job {job['name']}")
    await expect(dialog.get_by_label("Event type")).to_have_value("channel.updated")
    await expect(dialog.get_by_label("Value")).to_have_value("avcm")
    await dialog.get_by_label("Description").fill("Edited in the console")
    await dialog.get_by_role("button", name="Save job").click()
    await expect(dialog).to_be_hidden()
    await expect(line).to_contain_text("Edited in the console")
    edited = (await console.api.get(f"{API}/jobs/{job['id']}")).json()
    assert edited["description"] == "Edited in the console"
    assert edited["trigger"] == job["trigger"] and edited["enabled"] is False

    await line.get_by_role("button", name="Test").click()
    dialog = page.get_by_role("dialog", name=f"Test job {job['name']}")
    await dialog.get_by_text("Or paste an event").click()
    await dialog.get_by_label("Event (JSON)").fill(
        '{"event_id": "e1", "event_type": "channel.updated",'
        ' "data": {"channel": {"channel_id": "CNN-HD", "origin": "manual"}}}'
    )
    await dialog.get_by_role("button", name="Test", exact=True).click()
    result = dialog.locator("[data-test-result]")
    await expect(result).to_contain_text("Does not match")
    await expect(result).to_contain_text("data.channel.origin")
    await expect(result).to_contain_text("CNN-HD")
    await dialog.get_by_role("button", name="Close").click()

    await line.get_by_role("button", name="Remove").click()
    confirm = page.get_by_role("dialog", name=f"Remove job {job['name']}?")
    await confirm.get_by_role("button", name="Remove job").click()
    await expect(line).to_have_count(0)
    assert (await console.api.get(f"{API}/jobs/{job['id']}")).status_code == 404


async def test_a_run_goes_through_the_queue_to_executed(console: Console, page: Page) -> None:
    job = await console.job(script="sleepy", command_template="4")
    await sign_in(page, console, await console.key("viewer"), f"/queue?job={job['name']}")
    await expect(page.get_by_role("cell", name="No run is waiting or running.")).to_be_visible()

    await console.publish(job)
    line = page.get_by_role("row").filter(has_text=job["name"])
    await expect(line).to_contain_text("running")
    await expect(line).to_contain_text(re.compile(r"running for \d"))
    await expect(line).to_have_count(0)  # finished: out of the Queue

    await page.get_by_role("link", name=re.compile("^Executed Jobs")).click()
    await page.get_by_label("Job", exact=True).fill(job["name"])
    line = page.get_by_role("row").filter(has_text=job["name"])
    await expect(line).to_contain_text("3 Succeeded")
    await expect(line).to_contain_text("slept 4 s")

    [run] = await console.runs("executed", job)
    assert (run["state"], run["result"], run["feedback"]) == ("succeeded", 3, "slept 4 s")
    assert await console.runs("queue", job) == []


async def test_the_run_detail_shows_attempts_event_and_output(console: Console, page: Page) -> None:
    job = await console.job(script="channel_report", command_template="{{ data | tojson }}")
    event_id = await console.publish(job, {"channel": {"channel_id": "HBO-HD"}})
    [run] = await console.until(lambda: console.runs("executed", job))
    await sign_in(page, console, await console.key("viewer"), f"/executed?job={job['name']}")
    await page.get_by_role("link", name=f"Run {run['id']}", exact=True).click()

    await expect(page).to_have_url(re.compile(rf"/runs/{run['id']}$"))
    await expect(page.get_by_role("heading", level=1)).to_contain_text(job["name"])
    attempts = page.locator("[data-attempts] tr")
    await expect(attempts).to_have_count(1)
    await expect(attempts).to_contain_text("3 Succeeded")
    await expect(page.locator("[data-output]")).to_contain_text(
        f"channel report for run {run['id']}"
    )
    await expect(page.locator("[data-event]")).to_contain_text(event_id)
    await expect(page.get_by_role("link", name="Executed Jobs").first).to_be_visible()

    detail = (await console.api.get(f"{API}/runs/{run['id']}")).json()
    assert detail["event"]["event_id"] == event_id
    assert "channel report" in detail["output_tail"]


async def test_set_the_interval_and_remove_a_waiting_run(console: Console, page: Page) -> None:
    job = await console.job(lane=f"lane-{console.stack.topology.namespace[-6:]}-remove")
    await sign_in(page, console, await console.key("admin"), f"/queue?job={job['name']}")
    interval = page.get_by_label("Time between two runs of a lane")
    await expect(interval).to_have_value("0")
    before = console.stack.log("matcher").count("catalogue loaded")
    await interval.fill(str(LONG))
    await page.get_by_role("button", name="Save interval").click()
    await expect(page.get_by_role("status")).to_contain_text(f"Interval saved: {LONG} s")
    try:
        assert (await console.api.get(f"{API}/settings/queue")).json() == {"interval_s": LONG}
        await console.reloaded(before)

        run_id = await waiting_run(console, job)
        line = row(page, run_id)
        await expect(line).to_contain_text("queued")
        await expect(line.locator("td.starts")).to_have_text(re.compile(r"^in 1:[45]\d$"))

        await line.get_by_role("button", name="Remove").click()
        confirm = page.get_by_role("dialog", name=f"Remove run {run_id}?")
        await expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()
        await confirm.get_by_role("button", name="Remove run").click()
        await expect(page.get_by_role("status")).to_contain_text(f"Run {run_id} removed")
        await expect(line).to_have_count(0)

        assert (await console.api.get(f"{API}/runs/{run_id}")).json()["state"] == "removed"
    finally:
        await console.set_interval(0)


async def test_cancel_a_running_run(console: Console, page: Page) -> None:
    job = await console.job(script="sleepy", command_template="60", lane=None)
    await sign_in(page, console, await console.key("operator"), f"/queue?job={job['name']}")
    await console.publish(job)

    async def running() -> int | None:
        items = [r for r in await console.runs("queue", job) if r["state"] == "running"]
        return items[0]["id"] if items else None

    run_id = int(await console.until(running))
    line = row(page, run_id)
    await expect(line).to_contain_text("running")
    await expect(line.get_by_role("button", name="Remove")).to_have_count(0)
    await line.get_by_role("button", name=f"Cancel run {run_id}").click()
    confirm = page.get_by_role("dialog", name=f"Cancel run {run_id}?")
    await confirm.get_by_role("button", name="Cancel the run").click()
    await expect(page.get_by_role("status")).to_contain_text(f"Run {run_id} cancelled")
    await expect(line).to_have_count(0)
    detail = (await console.api.get(f"{API}/runs/{run_id}")).json()
    assert (detail["state"], detail["result"]) == ("failed", 2)
    assert detail["feedback"].startswith("cancelled by key:operator-")


@pytest.mark.usefixtures("long_interval")
async def test_execute_now_a_waiting_run(console: Console, page: Page) -> None:
    job = await console.job(lane=f"lane-{console.stack.topology.namespace[-6:]}-now")
    await sign_in(page, console, await console.key("operator"), f"/queue?job={job['name']}")
    run_id = await waiting_run(console, job)
    line = row(page, run_id)
    await expect(line.locator("td.starts")).to_have_text(re.compile(r"^in 1:[45]\d$"))

    await line.get_by_role("button", name="Execute Now").click()
    await expect(line).to_have_count(0)
    await page.get_by_role("link", name=re.compile("^Executed Jobs")).click()
    await expect(row(page, run_id)).to_contain_text("3 Succeeded")

    run = (await console.api.get(f"{API}/runs/{run_id}")).json()
    assert (run["state"], run["execute_now"]) == ("succeeded", True)


async def test_execute_and_delete_a_failed_run(console: Console, page: Page) -> None:
    job = await console.job(script="refuse", command_template="{{ data.channel }}")
    await console.publish(job, {"channel": "CNN-HD"})
    [run] = await console.until(lambda: console.runs("failed", job))
    await sign_in(page, console, await console.key("admin"), f"/failed?job={job['name']}")
    line = row(page, run["id"])
    # Feedback at a glance, in its own column.
    await expect(line.locator("td.feedback")).to_have_text("the IPX refused: CNN-HD")
    await expect(line).to_contain_text("1")

    await line.get_by_role("button", name="Execute").click()
    await expect(page.get_by_role("status")).to_contain_text(
        f"Run {run['id']} is executing again (attempt 2)"
    )

    async def failed_twice() -> bool:
        detail = (await console.api.get(f"{API}/runs/{run['id']}")).json()
        return detail["state"] == "failed" and len(detail["attempts"]) == 2

    await console.until(failed_twice)
    await expect(line.locator("td").nth(5)).to_have_text("2")  # attempts

    await line.get_by_role("button", name="Delete").click()
    await (
        page.get_by_role("dialog", name=f"Delete run {run['id']}?")
        .get_by_role("button", name="Delete row")
        .click()
    )
    await expect(line).to_have_count(0)
    assert await console.runs("failed", job) == []


async def test_change_auto_cleanup_in_its_pop_up(console: Console, page: Page) -> None:
    await sign_in(page, console, await console.key("admin"), "/executed")
    opener = page.get_by_role("button", name="Auto Cleanup…")
    await opener.click()
    dialog = page.get_by_role("dialog", name="Auto Cleanup of Executed Jobs")
    await expect(dialog).to_be_visible()

    await dialog.get_by_label("Clean up automatically").check()
    await dialog.get_by_label("Method").select_option("both")
    await dialog.get_by_label("Maximum rows").fill("5000")
    await dialog.get_by_label("Maximum age", exact=True).fill("2")
    await dialog.get_by_label("Unit of the maximum age").select_option("days")
    await dialog.get_by_label("Rows deleted per pass").fill("0")
    await dialog.get_by_role("button", name="Save").click()
    amount = dialog.get_by_label("Rows deleted per pass")
    await expect(amount).to_have_attribute("aria-invalid", "true")
    await expect(dialog.locator(".field-error")).to_contain_text(
        "cleanup_amount must be at least 1"
    )
    assert (await console.api.get(f"{API}/executed/cleanup")).json()["enabled"] is False

    await amount.fill("250")
    await dialog.get_by_role("button", name="Save").click()
    await expect(dialog).to_be_hidden()
    await expect(opener).to_be_focused()
    await expect(page.locator("[data-cleanup-summary]")).to_have_text(
        "Auto Cleanup on: deletes rows older than 2 days, keeps at most 5,000 rows"
    )
    assert (await console.api.get(f"{API}/executed/cleanup")).json() == {
        "enabled": True,
        "method": "both",
        "max_rows": 5000,
        "max_age_s": 2 * 86400,
        "cleanup_amount": 250,
    }
    # The Failed table has its own settings, untouched.
    assert (await console.api.get(f"{API}/failed/cleanup")).json()["enabled"] is False


async def test_actions_follow_the_role(console: Console, page: Page) -> None:
    job = await console.job(script="refuse", command_template="x")
    await console.publish(job)
    [run] = await console.until(lambda: console.runs("failed", job))

    await sign_in(page, console, await console.key("viewer"), f"/failed?job={job['name']}")
    line = row(page, run["id"])
    await expect(line).to_contain_text("the IPX refused: x")
    await expect(line.get_by_role("button")).to_have_count(0)
    await page.get_by_role("button", name="Auto Cleanup…").click()
    dialog = page.get_by_role("dialog", name="Auto Cleanup of Failed Jobs")
    await expect(dialog.get_by_label("Maximum rows")).to_be_disabled()
    await expect(dialog.get_by_role("button", name="Save")).to_be_hidden()
    await expect(dialog).to_contain_text("Only an admin may change these settings.")
    await page.keyboard.press("Escape")
    await page.get_by_role("link", name=re.compile("^Jobs")).click()
    await expect(page.get_by_role("row").filter(has_text=job["name"])).to_be_visible()
    await expect(page.get_by_role("button", name="Add job")).to_be_hidden()
    await expect(
        page.get_by_role("button", name=re.compile("^(Edit|Disable|Remove)"))
    ).to_have_count(0)
    await page.get_by_role("link", name=re.compile("^Queue")).click()
    await expect(page.get_by_label("Time between two runs of a lane")).to_be_disabled()

    # An operator may Execute, not delete.
    await page.get_by_role("button", name="Sign out").click()
    await sign_in(page, console, await console.key("operator"), f"/failed?job={job['name']}")
    await expect(line.get_by_role("button", name="Execute")).to_be_visible()
    await expect(line.get_by_role("button", name="Delete")).to_have_count(0)

    # Were a button shown that the role may not use, the API's refusal is what one sees.
    await page.evaluate(
        """() => {
            const name = "jobmanager.session";
            const session = JSON.parse(sessionStorage.getItem(name));
            sessionStorage.setItem(name, JSON.stringify({...session, role: "admin"}));
        }"""
    )
    await page.reload()
    await line.get_by_role("button", name="Delete").click()
    await (
        page.get_by_role("dialog", name=f"Delete run {run['id']}?")
        .get_by_role("button", name="Delete row")
        .click()
    )
    await expect(page.get_by_role("alert").filter(has_text="Not allowed")).to_contain_text(
        "this needs the admin role; the key has the operator role"
    )
    await settle()
    await expect(line).to_have_count(1)
    assert len(await console.runs("failed", job)) == 1


async def test_a_run_waiting_for_a_retry_shows_its_feedback(console: Console, page: Page) -> None:
    job = await console.job(
        script="flaky", command_template="2", max_attempts=2, retry_backoff_s=LONG
    )
    await sign_in(page, console, await console.key("operator"), f"/queue?job={job['name']}")
    await console.publish(job)
    line = page.get_by_role("row").filter(has_text=job["name"])
    await expect(line.locator("td.feedback")).to_have_text("attempt 1 failed: the IPX was busy")
    await expect(line.locator("td.starts")).to_have_text(re.compile(r"^retry in 1:[45]\d$"))
    await expect(line).to_contain_text("2 of 2")

    await line.get_by_role("button", name="Execute Now").click()
    await expect(line).to_have_count(0)
    [run] = await console.until(lambda: console.runs("executed", job))
    assert (run["attempt"], run["feedback"]) == (2, "succeeded on attempt 2")


async def test_the_job_form_sets_the_cancel_grace(console: Console, page: Page) -> None:
    job = await console.job()
    await sign_in(page, console, await console.key("admin"), f"/jobs?q={job['name']}")
    line = page.get_by_role("row").filter(has_text=job["name"])
    await line.get_by_role("button", name="Edit").click()
    dialog = page.get_by_role("dialog", name=f"Edit job {job['name']}")
    grace = dialog.get_by_label("Cancel grace: SIGTERM to SIGKILL (seconds)")
    await expect(grace).to_have_value("10")
    await grace.fill("2.5")
    await dialog.get_by_role("button", name="Save job").click()
    await expect(dialog).to_be_hidden()
    assert (await console.api.get(f"{API}/jobs/{job['id']}")).json()["cancel_grace_s"] == 2.5

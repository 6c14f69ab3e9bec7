"""Bulk selection in Chromium against the real stack: select rows (or every run matching the
filter), confirm with the count, act, and check through the API what really changed; the
selection outlives the refreshes; a role that may not act sees no checkbox."""

from __future__ import annotations

import re
from typing import Any

import pytest
from console.conftest import API, Console, settle, sign_in
from console.test_console import LONG, row, waiting_run
from playwright.async_api import Page, expect


@pytest.fixture
async def long_interval(console: Console) -> Any:
    await console.set_interval(LONG)
    try:
        yield
    finally:
        await console.set_interval(0)


async def failed_runs(console: Console, job: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """`count` runs of a job whose script always fails, all ended in Failed."""
    for n in range(count):
        await console.publish(job, {"n": n})

    async def all_failed() -> list[dict[str, Any]] | None:
        response = await console.api.get(f"{API}/failed", params={"job": job["name"], "limit": 500})
        items = list(response.json()["items"])
        return items if len(items) == count else None

    return list(await console.until(all_failed, timeout=60))


def bar(page: Page) -> Any:
    return page.get_by_role("region", name="Selected runs")


async def test_execute_again_every_failed_run_matching_the_filter(
    console: Console, page: Page
) -> None:
    # One run more than a page of 25, so "all matching" reaches a run the page does not show.
    x = await console.job(script="refuse", command_template="{{ data.n }}", lane=None)
    y = await console.job(script="refuse", command_template="{{ data.n }}", lane=None)
    x_runs = await failed_runs(console, x, 26)
    y_runs = await failed_runs(console, y, 2)

    await sign_in(page, console, await console.key("operator"), f"/failed?limit=25&job={x['name']}")
    await expect(page.locator("tbody input[type=checkbox]")).to_have_count(25)
    await page.get_by_label("Select the runs on this page").check()
    await expect(bar(page)).to_contain_text("25 selected")
    # An operator may execute again, not delete.
    await expect(bar(page).get_by_role("button", name="Execute again")).to_be_visible()
    await expect(bar(page).get_by_role("button", name="Delete")).to_be_hidden()

    offer = bar(page).get_by_role("button", name="Select all 26 matching this filter")
    await offer.click()
    await expect(bar(page)).to_contain_text("26 selected: all matching this filter")
    await bar(page).get_by_role("button", name="Execute again").click()
    dialog = page.get_by_role("dialog", name="Execute again 26 failed runs?")
    await expect(dialog).to_contain_text(
        f"This will execute again 26 failed runs matching job {x['name']}."
    )
    await dialog.get_by_role("button", name="Execute again").click()
    await expect(page.get_by_role("status")).to_contain_text("26 runs executing again.")
    await expect(bar(page)).to_be_hidden()
    await expect(page.locator("tbody input[type=checkbox]:checked")).to_have_count(0)

    async def attempts(run: dict[str, Any]) -> int:
        detail = (await console.api.get(f"{API}/runs/{run['id']}")).json()
        return len(detail["attempts"])

    async def every_x_again() -> bool:
        return all([await attempts(run) == 2 for run in x_runs])

    await console.until(every_x_again, timeout=60)
    assert [await attempts(run) for run in y_runs] == [1, 1], "job Y untouched"


async def test_delete_two_selected_rows_of_executed(console: Console, page: Page) -> None:
    job = await console.job(lane=None)
    for n in range(4):
        await console.publish(job, {"n": n})

    async def four() -> list[dict[str, Any]] | None:
        items = await console.runs("executed", job)
        return items if len(items) == 4 else None

    runs = await console.until(four)
    chosen, kept = [r["id"] for r in runs[:2]], [r["id"] for r in runs[2:]]
    await sign_in(page, console, await console.key("admin"), f"/executed?job={job['name']}")
    for run_id in chosen:
        await row(page, run_id).get_by_label(f"Select run {run_id}").check()
    await expect(bar(page)).to_contain_text("2 selected")
    header = page.get_by_label("Select the runs on this page")
    assert await header.evaluate("box => box.indeterminate")

    await settle()  # a refresh passes: the selection stays
    await expect(bar(page)).to_contain_text("2 selected")
    for run_id in chosen:
        await expect(row(page, run_id).get_by_label(f"Select run {run_id}")).to_be_checked()
    # The whole list is on this page: there is nothing more to select by filter.
    await expect(bar(page).get_by_role("button", name=re.compile("^Select all"))).to_be_hidden()

    await bar(page).get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog", name="Delete 2 executed runs?")
    await expect(dialog).to_contain_text("This will delete the 2 selected executed runs.")
    await dialog.get_by_role("button", name="Delete rows").click()
    await expect(page.get_by_role("status")).to_contain_text("2 runs deleted from Executed Jobs.")
    for run_id in chosen:
        await expect(row(page, run_id)).to_have_count(0)
    assert sorted(r["id"] for r in await console.runs("executed", job)) == sorted(kept)


@pytest.mark.usefixtures("long_interval")
async def test_remove_selected_queued_runs(console: Console, page: Page) -> None:
    job = await console.job(lane=f"lane-{console.stack.topology.namespace[-6:]}-bulk")
    head = await waiting_run(console, job)  # waits out the interval; the others wait behind
    for _ in range(3):
        await console.publish(job)

    async def four_waiting() -> list[int] | None:
        ids = [r["id"] for r in await console.runs("queue", job) if r["state"] == "queued"]
        return ids if len(ids) == 4 else None

    waiting = sorted(await console.until(four_waiting))
    assert head in waiting
    gone, chosen, left = waiting[0], waiting[1:3], waiting[3]
    await sign_in(page, console, await console.key("operator"), f"/queue?job={job['name']}")
    for run_id in [gone, *chosen]:
        await row(page, run_id).get_by_label(f"Select run {run_id}").check()
    await expect(bar(page)).to_contain_text("3 selected")

    # A selected run that leaves the Queue meanwhile leaves the selection with it.
    assert (await console.api.delete(f"{API}/queue/{gone}")).status_code == 200
    await expect(row(page, gone)).to_have_count(0)
    await expect(bar(page)).to_contain_text("2 selected")

    await bar(page).get_by_role("button", name="Remove").click()
    dialog = page.get_by_role("dialog", name="Remove 2 queued runs?")
    await expect(dialog).to_contain_text("This will remove the 2 selected queued runs.")
    await dialog.get_by_role("button", name="Remove runs").click()
    await expect(page.get_by_role("status")).to_contain_text("2 runs removed.")
    for run_id in chosen:
        await expect(row(page, run_id)).to_have_count(0)
        assert (await console.api.get(f"{API}/runs/{run_id}")).json()["state"] == "removed"
    assert (await console.api.get(f"{API}/runs/{left}")).json()["state"] == "queued"
    await expect(row(page, left).get_by_label(f"Select run {left}")).not_to_be_checked()


@pytest.mark.usefixtures("long_interval")
async def test_only_roles_that_may_act_see_checkboxes(console: Console, page: Page) -> None:
    job = await console.job(lane=f"lane-{console.stack.topology.namespace[-6:]}-roles")
    queued = await waiting_run(console, job)
    [executed] = await console.runs("executed", job)

    await sign_in(page, console, await console.key("viewer"), f"/queue?job={job['name']}")
    await expect(row(page, queued)).to_contain_text("queued")
    for path in ["/queue", "/executed", "/failed"]:
        await page.goto(f"{console.url}{path}?job={job['name']}")
        await expect(page.locator("tbody tr").first).to_be_visible()
        await settle()
        await expect(page.get_by_role("checkbox")).to_have_count(0)
        await expect(bar(page)).to_be_hidden()

    # Deleting from Executed needs an admin: an operator sees no checkbox there either.
    await page.get_by_role("button", name="Sign out").click()
    await sign_in(page, console, await console.key("operator"), f"/executed?job={job['name']}")
    await expect(row(page, executed["id"])).to_contain_text("3 Succeeded")
    await expect(page.get_by_role("checkbox")).to_have_count(0)
    await page.goto(f"{console.url}/queue?job={job['name']}")
    await expect(row(page, queued).get_by_label(f"Select run {queued}")).to_be_visible()

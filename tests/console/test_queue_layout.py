"""The Queue's layout at common window widths, and the run page of a removed run.

At every width the operator must be able to see and click each action button, each
selection checkbox and each button of the bar of bulk actions: none may lie outside the
window, be cut off by the table, or be covered by another cell; and a run waiting for a retry
must not be squeezed into a tall narrow column of Feedback.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from console.conftest import API, Console, sign_in
from console.test_console import LONG, waiting_run
from playwright.async_api import Page, expect

WIDTHS = [1024, 1280, 1920]
# A realistic command: a channel as JSON, as the sample job `ipx-update` renders it.
COMMAND = (
    '{"channel_id": "NATGEO-HD", "name": "National Geographic HD", "origin": "avcm", '
    '"pod_service": "pod-7", "compression_element": "enc-12", "valid": true}'
)

# The box of each control the selector finds, the window's and its container's (the table's
# or the bulk bar's), and what the page shows at the control's centre (a cell scrolled over
# it would be found there instead).
BOXES = """(selector) => {
  return [...document.querySelectorAll(selector)].map((button) => {
    const wrap = button.closest(".table-wrap, .bulk-bar").getBoundingClientRect();
    const box = button.getBoundingClientRect();
    const top = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
    return {
      label: button.getAttribute("aria-label") || button.textContent.trim(),
      left: box.left, right: box.right, top: box.top, bottom: box.bottom,
      clipped: button.scrollWidth > button.clientWidth + 1,
      onTop: top !== null && button.contains(top),
      wrapLeft: wrap.left, wrapRight: wrap.right,
      window: document.documentElement.clientWidth,
    };
  });
}"""


@pytest.fixture
async def long_interval(console: Console) -> Any:
    await console.set_interval(LONG)
    try:
        yield
    finally:
        await console.set_interval(0)


@pytest.mark.usefixtures("long_interval")
async def test_every_queue_action_is_in_view_at_common_widths(console: Console, page: Page) -> None:
    lane = f"lane-{console.stack.topology.namespace[-6:]}-layout"
    job = await console.job(
        name=f"ipx-update-national-geographic-{console.stack.topology.namespace[-6:]}",
        script="refuse",
        command_template=COMMAND,
        lane=lane,
        max_attempts=2,
        retry_backoff_s=LONG,
    )
    # The first run fails and waits for its retry at the lane's head, with its Feedback;
    # the second waits behind it.
    await console.publish(job)
    await console.publish(job)

    async def both_waiting() -> list[dict[str, Any]] | None:
        items = await console.runs("queue", job)
        retrying = [r for r in items if r["attempt"] > 1 and r["feedback"]]
        return items if len(items) == 2 and retrying else None

    runs = await console.until(both_waiting)
    await sign_in(page, console, await console.key("operator"), f"/queue?job={job['name']}")
    await expect(page.locator("td.actions button")).to_have_count(4)
    retry_id = next(r["id"] for r in runs if r["attempt"] > 1)
    retry_row = page.get_by_role("row").filter(
        has=page.get_by_role("link", name=f"Run {retry_id}", exact=True)
    )
    await expect(retry_row.locator("td.feedback")).to_contain_text("the IPX refused")
    # Both runs selected: their checkboxes, the page's, and the bar with Remove.
    await page.get_by_label("Select the runs on this page").check()
    selected = page.get_by_role("region", name="Selected runs")
    await expect(selected).to_contain_text("2 selected")
    await expect(selected.get_by_role("button", name="Remove")).to_be_visible()

    for width in WIDTHS:
        await page.set_viewport_size({"width": width, "height": 900})
        await page.wait_for_timeout(100)  # one layout
        boxes = await page.evaluate(BOXES, "td.actions button")
        assert len(boxes) == 4
        checkboxes = await page.evaluate(BOXES, "input.pick")
        assert len(checkboxes) == 3
        bulk = await page.evaluate(BOXES, ".bulk-bar button:not([hidden])")
        assert [b["label"] for b in bulk] == ["Remove", "Clear selection"]
        for box in [*boxes, *checkboxes, *bulk]:
            where = f"{box['label']} at {width} px: {box}"
            assert 0 <= box["left"] and box["right"] <= box["window"], f"off-screen: {where}"
            assert box["wrapLeft"] <= box["left"] and box["right"] <= box["wrapRight"], (
                f"cut off by its table or bar: {where}"
            )
            assert not box["clipped"], f"its label is clipped: {where}"
            assert box["onTop"], f"covered by something else: {where}"
        # The run's number stays in its cell, beside its checkbox.
        spill = await page.evaluate(
            """() => [...document.querySelectorAll("tbody th a")].filter(
                (link) => link.getBoundingClientRect().right >
                    link.closest("th").getBoundingClientRect().right
            ).map((link) => link.textContent)"""
        )
        assert spill == [], f"run numbers out of their cells at {width} px: {spill}"
        # A run waiting for a retry stays a few lines tall, Feedback readable beside it.
        height = (await retry_row.bounding_box() or {}).get("height", 0)
        line = await page.evaluate("parseFloat(getComputedStyle(document.body).lineHeight)")
        assert height <= 5 * line, f"the retrying row is {height} px tall at {width} px"


@pytest.mark.usefixtures("long_interval")
async def test_a_removed_run_says_it_was_removed(console: Console, page: Page) -> None:
    job = await console.job(
        lane=f"lane-{console.stack.topology.namespace[-6:]}-removed", max_attempts=2
    )
    run_id = await waiting_run(console, job)
    assert (await console.api.delete(f"{API}/queue/{run_id}")).status_code == 200

    await sign_in(page, console, await console.key("viewer"), f"/runs/{run_id}")
    await expect(page.locator("[data-state]")).to_have_text("removed")
    summary = page.locator("[data-summary]")
    await expect(summary).to_contain_text("none: removed before its first attempt")
    await expect(summary).not_to_contain_text("1 of 2")
    await expect(summary.locator("dt", has_text=re.compile("^Removed$"))).to_have_count(1)
    await expect(summary.locator("dt", has_text=re.compile("^Finished$"))).to_have_count(0)
    attempts = page.locator("[data-attempts]")
    await expect(attempts).to_have_text("Removed before it was dispatched: it never ran.")
    await expect(attempts).not_to_contain_text("Not dispatched yet")


@pytest.mark.usefixtures("long_interval")
async def test_the_queue_opens_in_the_order_the_runs_will_start(
    console: Console, page: Page
) -> None:
    job = await console.job(lane=f"lane-{console.stack.topology.namespace[-6:]}-order")
    head = await waiting_run(console, job)  # the lane's head, waiting out the interval
    await console.publish(job)

    async def behind() -> int | None:
        later = [r["id"] for r in await console.runs("queue", job) if r["id"] != head]
        return later[0] if later else None

    second = await console.until(behind)
    await sign_in(page, console, await console.key("viewer"), f"/queue?job={job['name']}")
    links = page.locator("tbody th a")
    await expect(links).to_have_text([str(head), str(second)])
    await expect(page.locator("tbody td.lane")).to_contain_text(["#1", "#2"])

    await page.get_by_label("Order").select_option("newest")
    await expect(links).to_have_text([str(second), str(head)])
    await expect(page).to_have_url(re.compile(r"order=newest"))

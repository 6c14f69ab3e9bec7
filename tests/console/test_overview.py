"""The Overview, the console's landing page: the chart of what ended draws with data from
the real pipeline, under the console's policy, with nothing fetched from elsewhere; the
failing jobs, paused jobs and executors are listed; it follows the browser's dark mode."""

from __future__ import annotations

import re

from console.conftest import API, Console, sign_in
from playwright.async_api import Browser, Page, expect


async def test_the_overview_charts_what_ended_and_lists_what_fails(
    console: Console, page: Page
) -> None:
    good, bad = await console.job(), await console.job(script="refuse")
    for job in (good, good, bad):
        await console.publish(job)

    async def ended() -> bool:
        return (
            bool(await console.runs("failed", bad))
            and len(await console.runs("executed", good)) == 2
        )

    await console.until(ended)
    complaints: list[str] = []
    elsewhere: list[str] = []
    page.on("console", lambda m: complaints.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: None if r.url.startswith(console.url) else elsewhere.append(r.url))
    await sign_in(page, console, await console.key("viewer"), "/overview")
    chart = page.locator("[data-chart]")
    await expect(chart.locator("canvas")).to_be_visible()
    # The chart's own legend names both series; the summary gives the window's totals.
    await expect(chart.locator(".u-legend")).to_contain_text("Succeeded")
    await expect(chart.locator(".u-legend")).to_contain_text("Failed")
    summary = page.locator("[data-chart-summary]")
    await expect(summary).to_contain_text("In the last hour:")
    failing = page.get_by_role("row").filter(has_text=bad["name"])
    await expect(failing).to_contain_text("100 %")
    executor = page.locator("[data-executors] tr").first
    await expect(executor).to_contain_text(re.compile(r"\d+ of \d+"))  # its busy slots
    painted = await chart.locator("canvas").evaluate(
        "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }"
    )
    assert painted > 1000, "the canvas was drawn on"
    await page.get_by_label("Last day").check()
    await expect(page.locator("[data-per]")).to_have_text("per 15 minutes")
    await expect(summary).to_contain_text("In the last day:")
    assert not complaints, complaints
    assert not elsewhere, f"requests to other origins: {elsewhere}"


async def test_a_paused_job_is_on_the_overview(console: Console, page: Page) -> None:
    job = await console.job()
    await console.api.post(f"{API}/jobs/{job['id']}/pause")
    try:
        await sign_in(page, console, await console.key("viewer"), "/overview")
        item = page.locator("[data-paused] li").filter(has_text=job["name"])
        await expect(item).to_contain_text("paused by ")
    finally:
        await console.api.post(f"{API}/jobs/{job['id']}/resume")


async def test_the_console_follows_the_browsers_dark_mode(
    console: Console, browser: Browser
) -> None:
    backgrounds = {}
    for scheme in ("light", "dark"):
        context = await browser.new_context(color_scheme=scheme)
        try:
            tab = await context.new_page()
            await tab.goto(console.url + "/sign-in")
            backgrounds[scheme] = await tab.evaluate(
                "getComputedStyle(document.documentElement).backgroundColor"
            )
        finally:
            await context.close()
    assert backgrounds["light"] == "rgb(244, 246, 249)"
    assert backgrounds["dark"] != backgrounds["light"]
    channels = [int(v) for v in backgrounds["dark"][4:-1].split(",")]
    assert max(channels) < 60, f"a dark background: {backgrounds['dark']}"

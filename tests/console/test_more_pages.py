"""The Events, Audit log, Executors and API keys pages in Chromium, against the real stack: a
published event with what it matched and its payload (as text, never HTML), and the dead
letters; audit rows of real calls; the running executor; a key created (its secret shown
once), used and revoked; the Keys page and its link for admins only; and the controls of each
in view at common window widths."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from console.conftest import API, Console, sign_in
from playwright.async_api import Page, expect

WIDTHS = [1024, 1280, 1920]
# Markup in an event's data: the payload dialog must show it as text.
MARKUP = '<img src=x data-injected="1"><b>bold</b>'


async def named_key(console: Console, role: str) -> tuple[str, str]:
    """A new key and its name (the audit log names the caller `key:NAME`)."""
    name = f"{role}-{uuid.uuid4().hex[:8]}"
    created = await console.api.post(f"{API}/keys", json={"name": name, "role": role})
    assert created.status_code == 201, created.text
    return name, str(created.json()["key"])


async def whoami(console: Console, key: str) -> httpx.Response:
    return await console.api.get(f"{API}/whoami", headers={"Authorization": f"Bearer {key}"})


async def dead_letters(console: Console) -> int:
    count = (await console.api.get(f"{API}/stats")).json()["dead_letters"]
    assert count is not None, "the admin reaches the broker"
    return int(count)


async def _more(console: Console, before: int) -> bool:
    return await dead_letters(console) > before


async def test_the_events_page_shows_an_event_what_it_matched_and_its_payload(
    console: Console, page: Page
) -> None:
    job = await console.job()
    event_id = await console.publish(job, {"channel": {"channel_id": "ESPN-HD"}, "note": MARKUP})
    [run] = await console.until(lambda: console.runs("executed", job))
    event_type = job["trigger"]["event_type"]

    await sign_in(page, console, await console.key("viewer"), f"/events?event_type={event_type}")
    line = page.get_by_role("row").filter(has_text=event_id)
    await expect(line).to_have_count(1)
    await expect(line).to_contain_text(event_type)
    await expect(line).to_contain_text("1 job")
    await expect(line).to_contain_text(job["name"])
    await expect(line.get_by_role("link", name=f"Run {run['id']}", exact=True)).to_have_attribute(
        "href", f"/runs/{run['id']}"
    )
    # Received: how long ago, the exact time in the tooltip.
    received = line.locator("time")
    await expect(received).to_have_text(re.compile(r"^(just now|\d+ s ago)$"))
    await expect(received).to_have_attribute("title", re.compile(r"\d{4}"))

    opener = line.get_by_role("button", name=f"Payload of event {event_id}")
    await opener.click()
    dialog = page.get_by_role("dialog", name=f"Event {event_id}")
    await expect(dialog).to_be_visible()
    payload = dialog.locator("[data-payload]")
    await expect(payload).to_contain_text('"channel_id": "ESPN-HD"')
    await expect(payload).to_contain_text(MARKUP.replace('"', '\\"'))
    assert await payload.locator("img, b").count() == 0, "the payload was parsed as HTML"
    assert await page.locator("[data-injected]").count() == 0
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(opener).to_be_focused()

    # "Matched nothing" leaves it out (it matched a job); "Matched a job" keeps it.
    await page.get_by_label("Matched").select_option("false")
    await expect(line).to_have_count(0)
    await expect(page).to_have_url(re.compile(r"matched=false"))
    await page.get_by_label("Matched").select_option("true")
    await expect(line).to_have_count(1)
    await page.get_by_label("Matched").select_option("")

    # Another type in the filter: the event is not listed.
    await page.get_by_label("Event type (exact)").fill(f"{event_type}.other")
    await expect(page.locator("tbody")).to_contain_text("No events recorded.")
    await expect(page).to_have_url(re.compile(rf"event_type={re.escape(event_type)}\.other"))


async def test_the_events_page_counts_the_dead_letters(console: Console, page: Page) -> None:
    await sign_in(page, console, await console.key("viewer"), "/events")
    before = await dead_letters(console)
    count = page.locator("[data-dead-count]")
    await expect(count).to_have_text(str(before))
    # Not JSON: the matcher parks it in the dead queue, with the reason.
    await console.stack.publish_raw(b"not json at all", message_id=uuid.uuid4().hex)
    await console.until(lambda: _more(console, before))
    await expect(count).to_have_text(str(before + 1))


async def test_the_audit_log_shows_who_did_what_and_how_it_ended(
    console: Console, page: Page
) -> None:
    job = await console.job()
    operator, operator_key = await named_key(console, "operator")
    viewer, viewer_key = await named_key(console, "viewer")
    pause = f"{API}/jobs/{job['id']}/pause"
    done = await console.api.post(pause, headers={"Authorization": f"Bearer {operator_key}"})
    assert done.status_code == 200, done.text
    refused = await console.api.post(pause, headers={"Authorization": f"Bearer {viewer_key}"})
    assert refused.status_code == 403
    await console.api.post(f"{API}/jobs/{job['id']}/resume")

    await sign_in(page, console, await console.key("viewer"), f"/audit?actor=key:{operator}")
    line = page.get_by_role("row").filter(has_text="jobs.pause")
    await expect(line).to_have_count(1)
    await expect(line).to_contain_text(f"key:{operator}")
    await expect(line).to_contain_text(f"job:{job['id']}")
    await expect(line.locator(".badge")).to_have_text("ok")
    await expect(line.locator("time")).to_have_text(re.compile(r"ago$|^just now$"))
    await expect(page.locator("tbody tr")).to_have_count(1)  # only this key's calls

    # A name in a row filters by it: the viewer's refusal, recorded as denied.
    await page.get_by_label("Who (exact)").fill(f"key:{viewer}")
    denied = page.get_by_role("row").filter(has_text=f"key:{viewer}")
    await expect(denied).to_have_count(1)
    await expect(denied.locator(".badge")).to_have_text("denied")
    await expect(denied).to_contain_text("this needs the operator role")
    await denied.get_by_role("button", name=re.compile(r"^POST ")).click()
    await expect(page).to_have_url(re.compile(r"action=POST"))
    await expect(page.get_by_label("Action (exact)")).to_have_value(
        "POST /api/v1/jobs/{job_id}/pause"
    )
    await expect(denied).to_have_count(1)


async def test_the_running_executor_is_on_the_executors_page(console: Console, page: Page) -> None:
    [executor] = (await console.api.get(f"{API}/executors")).json()
    await sign_in(page, console, await console.key("viewer"), "/executors")
    line = page.get_by_role("row").filter(has_text=executor["id"])
    await expect(line).to_have_count(1)
    await expect(line.locator(".badge")).to_have_text("alive")
    await expect(line.locator("ul.scripts")).to_contain_text("noop")
    await expect(line.locator("ul.scripts")).to_contain_text("ipx_update")
    await expect(line).to_contain_text(re.compile(rf"\d+ of {executor['concurrency']}"))
    last = line.locator("time").last
    await expect(last).to_have_text(re.compile(r"^(just now|\d+ s ago)$"))
    await expect(page.locator("[data-executors-summary]")).to_contain_text("1 alive")


async def test_create_use_and_revoke_a_key_on_the_keys_page(console: Console, page: Page) -> None:
    await sign_in(page, console, await console.key("admin"), "/keys")
    name = f"ops-{uuid.uuid4().hex[:8]}"
    new = page.get_by_role("button", name="New key")
    await new.click()
    dialog = page.get_by_role("dialog", name="New API key")
    await dialog.get_by_label("Name").fill(name)
    await dialog.get_by_label("Role").select_option("operator")
    await dialog.get_by_role("button", name="Create key").click()

    shown = page.get_by_role("dialog", name=f"Key {name} created")
    await expect(shown).to_be_visible()
    await expect(shown).to_contain_text("shown this once")
    field = shown.get_by_label("The new key")
    await expect(field).to_be_focused()
    secret = await field.input_value()
    assert secret.startswith("jm_") and len(secret) > 30, secret
    who = await whoami(console, secret)
    assert who.status_code == 200, who.text
    assert who.json() == {"name": f"key:{name}", "role": "operator"}
    await shown.get_by_role("button", name="Copy").click()
    await expect(shown.locator("[data-copied]")).not_to_be_empty()

    await shown.get_by_role("button", name="Done").click()
    await expect(shown).to_be_hidden()
    await expect(new).to_be_focused()
    # Shown once: nothing on the page holds it any more.
    # (The dialog's close handler clears it; the wait covers the moment before it runs.)
    await expect(page.locator("#secret-key")).to_have_value("")
    assert secret not in await page.content()
    line = page.get_by_role("row").filter(has_text=name)
    await expect(line).to_contain_text("operator")
    await expect(line).to_contain_text("active")
    await expect(line).to_contain_text(secret[:10])
    await expect(line).not_to_contain_text(secret)

    # The same name again: the API's refusal, in the form.
    await new.click()
    await dialog.get_by_label("Name").fill(name)
    await dialog.get_by_role("button", name="Create key").click()
    await expect(dialog.locator("[data-errors]")).to_contain_text("exists already")
    await page.keyboard.press("Escape")

    revoke = line.get_by_role("button", name=f"Revoke key {name}")
    await revoke.click()
    confirm = page.get_by_role("dialog", name=f"Revoke key {name}?")
    await confirm.get_by_role("button", name="Revoke key").click()
    await expect(page.get_by_role("status").first).to_contain_text(f"Key {name} revoked.")
    await expect(line.locator("td.state")).to_contain_text("revoked")
    await expect(line.get_by_role("button")).to_have_count(0)
    assert (await whoami(console, secret)).status_code == 401
    # Each call is in the audit log: the creation, the refused second one, the revocation.
    keys = (await console.api.get(f"{API}/keys", params={"limit": 500})).json()["items"]
    [key] = [k for k in keys if k["name"] == name]
    assert key["revoked_at"] is not None
    audit = (await console.api.get(f"{API}/audit", params={"q": f"key:{name}"})).json()["items"]
    assert [(a["action"], a["outcome"]) for a in audit] == [
        ("keys.create", "refused"),
        ("keys.create", "ok"),
    ]
    revoked = (await console.api.get(f"{API}/audit", params={"action": "keys.revoke"})).json()
    assert [a["outcome"] for a in revoked["items"] if a["target"] == f"key:{key['id']}"] == ["ok"]


async def test_the_keys_page_and_its_link_are_for_admins_only(console: Console, page: Page) -> None:
    viewer = await console.key("viewer")
    await sign_in(page, console, viewer, "/overview")
    nav = page.get_by_role("navigation", name="Tables")
    for label in ("Events", "Audit", "Executors"):
        await expect(nav.get_by_role("link", name=re.compile(f"^{label}"))).to_be_visible()
    await expect(nav.get_by_role("link", name=re.compile("^API keys"))).to_be_hidden()

    await page.goto(console.url + "/keys")
    await expect(page.get_by_role("heading", name="For admins only")).to_be_visible()
    await expect(page.locator("[data-refusal]")).to_contain_text("the viewer role")
    await expect(page.get_by_role("button", name="New key")).to_be_hidden()
    await expect(page.get_by_role("table")).to_be_hidden()
    refused = await console.api.get(f"{API}/keys", headers={"Authorization": f"Bearer {viewer}"})
    assert refused.status_code == 403

    # Were the page told the role is admin, the API's refusal is what it shows.
    await page.evaluate(
        """() => {
            const name = "jobmanager.session";
            const session = JSON.parse(sessionStorage.getItem(name));
            sessionStorage.setItem(name, JSON.stringify({...session, role: "admin"}));
        }"""
    )
    await page.reload()
    await expect(page.locator(".list [data-status]")).to_contain_text(
        "Not allowed: this needs the admin role; the key has the viewer role"
    )
    await expect(page.locator("tbody tr[data-key]")).to_have_count(0)

    await page.get_by_role("button", name="Sign out").click()
    await sign_in(page, console, await console.key("admin"), "/overview")
    await nav.get_by_role("link", name=re.compile("^API keys")).click()
    await expect(page).to_have_url(re.compile(r"/keys$"))
    await expect(page.get_by_role("heading", name="For admins only")).to_be_hidden()
    await expect(page.locator("tbody tr[data-key]").first).to_be_visible()


# Every visible control of the page (header, filters, table, pager): its box, the window's,
# the box of the table around it (if any), and what the page shows at its centre.
CONTROLS = """() => {
  const width = document.documentElement.clientWidth;
  // The skip link waits off-screen until it has the focus; dialogs are closed.
  const visible = (el) => el.getClientRects().length > 0 && !el.closest("dialog, .skip");
  return [...document.querySelectorAll("a, button, input, select")].filter(visible).map((el) => {
    const box = el.getBoundingClientRect();
    const wrap = el.closest(".table-wrap")?.getBoundingClientRect() ?? null;
    const top = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
    return {
      label: el.getAttribute("aria-label") || el.textContent.trim() || el.name || el.tagName,
      left: box.left, right: box.right,
      wrapLeft: wrap ? wrap.left : 0, wrapRight: wrap ? wrap.right : width,
      // Below the fold is fine (the page scrolls); under another element is not.
      onTop: box.top >= window.innerHeight || top === null || el.contains(top) || top.contains(el),
      window: width,
    };
  });
}"""


@pytest.mark.parametrize("path", ["/events", "/audit", "/executors", "/keys"])
async def test_every_control_is_in_view_at_common_widths(
    console: Console, page: Page, path: str
) -> None:
    # Long values where they would push a table wider: a long job name and event type, a
    # long key name, and audit rows of both.
    tag = console.stack.topology.namespace[-6:]
    job = await console.job(
        name=f"ipx-update-national-geographic-hd-{tag}-{uuid.uuid4().hex[:6]}",
        trigger={"event_type": f"channel.configuration.validated.{uuid.uuid4().hex}"},
    )
    await console.publish(job, {"channel": {"channel_id": "NATGEO-HD", "note": MARKUP * 4}})
    await console.until(lambda: console.runs("executed", job))
    await named_key(console, "operator")

    await sign_in(page, console, await console.key("admin"), path)
    await expect(page.locator("main tbody tr:not(.empty)").first).to_be_visible()
    for width in WIDTHS:
        await page.set_viewport_size({"width": width, "height": 900})
        await page.wait_for_timeout(100)  # one layout
        controls = await page.evaluate(CONTROLS)
        assert any(c["label"] == "Sign out" for c in controls), controls
        for box in controls:
            where = f"{box['label']} at {width} px: {box}"
            assert 0 <= box["left"] and box["right"] <= box["window"] + 0.5, f"off-screen: {where}"
            inside = box["wrapLeft"] <= box["left"] + 0.5 <= box["right"] <= box["wrapRight"] + 0.5
            assert inside, f"cut off by the table: {where}"
            assert box["onTop"], f"covered by something else: {where}"
        scroll = await page.evaluate("document.documentElement.scrollWidth")
        assert scroll <= width, f"{path} scrolls sideways at {width} px ({scroll} px wide)"
        # Nor does a table: what it holds is in view without scrolling it.
        tables = await page.evaluate(
            "[...document.querySelectorAll('.table-wrap')].map(w => w.scrollWidth - w.clientWidth)"
        )
        assert tables and max(tables) <= 1, f"a table of {path} scrolls at {width} px: {tables}"

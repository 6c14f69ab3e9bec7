"""`GET /queue?order=start`: the Queue in the order it will run, each run with its place in
its lane; the default (newest first) and its cursors stay as they were."""

from __future__ import annotations

from typing import Any

import pytest
from admin_kit import Admin

from jobmanager.admin.routes import queue as queue_routes

API = "/api/v1"


async def queue(admin: Admin, **params: Any) -> dict[str, Any]:
    response = await admin.client.get(f"{API}/queue", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_the_queue_in_the_order_it_will_run(admin: Admin) -> None:
    # Lane a: three runs (the first one running), lane b: one, and one without a lane.
    requests = await admin.runs("a", "a", "a", "b", None, interval_s=3600)
    head = min(requests, key=lambda request: request.run_id)  # lane a's first run
    a1, a2, a3, b1, free = range(head.run_id, head.run_id + 5)
    await admin.dispatch(head)
    assert (await admin.client.post(f"{API}/queue/{a3}/execute-now")).status_code == 200

    page = await queue(admin, order="start")
    order = [(run["id"], run["position"]) for run in page["items"]]
    # Lane a's running run, b's head and the free run start first (by when each is due);
    # then a3, moved ahead by Execute Now; then a2.
    assert order[3:] == [(a3, 2), (a2, 3)]
    assert sorted(order[:3]) == sorted([(a1, 1), (b1, 1), (free, None)])
    assert order[0] == (a1, 1), "the running run first"

    # Paging through it gives the same order, whatever the page size.
    walked, cursor = [], None
    while True:
        params = {"order": "start", "limit": 2, **({"cursor": cursor} if cursor else {})}
        part = await queue(admin, **params)
        walked += [run["id"] for run in part["items"]]
        cursor = part["next_cursor"]
        if cursor is None:
            break
    assert walked == [run_id for run_id, _ in order]

    # Filters apply to the order; a position stays the run's place in its whole lane.
    lane_a = await queue(admin, order="start", lane="a", state="queued")
    assert [(r["id"], r["position"]) for r in lane_a["items"]] == [(a3, 2), (a2, 3)]


async def test_newest_first_is_still_the_default_with_positions(admin: Admin) -> None:
    requests = await admin.runs("a", "a", "b", interval_s=3600)
    first = min(request.run_id for request in requests)
    a1, a2, b1 = range(first, first + 3)
    page = await queue(admin, limit=2)
    assert [(r["id"], r["position"]) for r in page["items"]] == [(b1, 1), (a2, 2)]
    rest = await queue(admin, limit=2, cursor=page["next_cursor"])
    assert [(r["id"], r["position"]) for r in rest["items"]] == [(a1, 1)]
    assert (await queue(admin, order="newest"))["items"] == (await queue(admin))["items"]
    # A cursor belongs to its order.
    mixed = await admin.client.get(
        f"{API}/queue", params={"order": "start", "cursor": page["next_cursor"]}
    )
    assert mixed.status_code == 422
    assert (await admin.client.get(f"{API}/queue", params={"order": "soon"})).status_code == 422


async def test_newest_first_counts_positions_only_so_far_back(
    admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Counting a position costs the runs ahead of it; newest first stops at a bound.
    monkeypatch.setattr(queue_routes, "POSITIONS_COUNTED", 2)
    requests = await admin.runs("a", "a", "a", "a", interval_s=3600)
    first = min(request.run_id for request in requests)
    page = await queue(admin)
    assert [(r["id"], r["position"]) for r in page["items"]] == [
        (first + 3, None),
        (first + 2, 3),
        (first + 1, 2),
        (first, 1),
    ]

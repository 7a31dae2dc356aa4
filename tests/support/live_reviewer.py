"""A reviewer at the live server's API, deciding from a background thread while an agent's call blocks."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import httpx

from approvals.models import ReviewerToken
from tests.support.servers import wait_until


class LiveReviewer:
    """Decides the next pending action it can see, through ``/api/v1`` with a personal token."""

    def __init__(self, base_url: str, user):
        _, token = ReviewerToken.issue(user)
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Token {token}"}, timeout=30)
        self._pool = ThreadPoolExecutor(max_workers=2)
        self.seen: list[dict] = []

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.http.close()

    def pending(self) -> list[dict]:
        response = self.http.get("/api/v1/actions", params={"status": "pending"})
        response.raise_for_status()
        return response.json()["results"]

    def next_pending(self, timeout: float = 20.0) -> dict:
        return wait_until(lambda: (found := self.pending()) and found[0], timeout=timeout, message="a pending action")

    def decide(self, action_id: str, verdict: str, **body) -> dict:
        response = self.http.post(f"/api/v1/actions/{action_id}/{verdict}", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def decide_next(self, verdict: str, **body) -> Future:
        """In the background: wait for the next pending action, remember it, then approve or reject it."""

        def run() -> dict:
            action = self.next_pending()
            self.seen.append(action)
            return self.decide(action["id"], verdict, **body)

        return self._pool.submit(run)

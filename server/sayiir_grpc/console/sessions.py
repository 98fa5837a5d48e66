"""Console sign-in sessions and their CSRF tokens, kept in memory.

A session is a random id in an HttpOnly, SameSite=Strict cookie (Secure
under TLS); it carries the role of the token signed in with, a CSRF token
every form posts back, and one message to show on the next page.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

from sayiir_grpc.security import Role

COOKIE = "sayiir_console"
TTL_S = 8 * 3600.0
MAX_SESSIONS = 10_000


@dataclass(slots=True)
class Session:
    id: str
    role: Role | None
    csrf: str
    expires: float
    flash: str | None = None

    def csrf_ok(self, presented: str) -> bool:
        return hmac.compare_digest(self.csrf.encode(), presented.encode())


class Sessions:
    def __init__(self, ttl_s: float = TTL_S) -> None:
        self.ttl_s = ttl_s
        self._by_id: dict[str, Session] = {}

    def create(self, role: Role | None) -> Session:
        now = time.monotonic()
        if len(self._by_id) >= MAX_SESSIONS:
            # Forget the expired ones; if that is not enough, the oldest.
            self._by_id = {k: v for k, v in self._by_id.items() if v.expires > now}
            while len(self._by_id) >= MAX_SESSIONS:
                self._by_id.pop(next(iter(self._by_id)))
        session = Session(secrets.token_urlsafe(32), role, secrets.token_urlsafe(32), now + self.ttl_s)
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        session = self._by_id.get(session_id or "")
        if session is None:
            return None
        if session.expires <= time.monotonic():
            self._by_id.pop(session.id, None)
            return None
        return session

    def drop(self, session_id: str) -> None:
        self._by_id.pop(session_id, None)

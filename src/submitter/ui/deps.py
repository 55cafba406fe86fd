"""The console's dependencies: who is signed in (from the session cookie), their role, and
the CSRF check of every request that changes state.

The session cookie holds the API key itself (base64url-encoded), so there is no
server-side session to keep, and every API replica accepts it; it is checked on each
request with `security.authenticate`, exactly as `api/deps.py` checks a bearer token, so
a revoked key ends its sessions at once. The cookie is HttpOnly (no script reads it),
SameSite=Strict (no other site's page sends it), Path=/ui (the API never sees it) and
Secure over https.

CSRF: the token is HMAC-SHA256(key, "submitter-csrf"). It is stateless (nothing stored, the
same on every replica, no server secret to share) and only someone who holds the key can
compute it. Every non-GET request signed in by cookie must carry it, as the form field
`csrf_token` or the header `X-CSRF-Token` (htmx and the upload script send the header), and
its Origin, when the browser sends one, must be this server's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, status

from submitter.api.deps import RuntimeDep
from submitter.roles import Role
from submitter.security import Principal, authenticate

COOKIE = "submitter_session"
COOKIE_PATH = "/ui"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
_CSRF_MESSAGE = b"submitter-csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class NotSignedIn(Exception):
    """No valid session: pages answer with a redirect to the sign-in page."""

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason or "sign in with an API key")
        self.reason = reason


def csrf_token(key: str) -> str:
    """The CSRF token of a session: HMAC-SHA256 of a fixed message under the key."""
    return hmac.new(key.encode(), _CSRF_MESSAGE, hashlib.sha256).hexdigest()


def is_https(request: Request) -> bool:
    """Over https, directly or behind a proxy that says so (the cookie is then Secure)."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site.

    Browsers send `Origin` on every POST (and `Sec-Fetch-Site`); a client that sends
    neither (curl, a test client) is not a browser another site can drive.
    """
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    hosts = {request.headers.get("host", "")}
    forwarded_host = request.headers.get("x-forwarded-host")
    if forwarded_host:
        hosts.add(forwarded_host.split(",")[0].strip())
    return parts.scheme in ("http", "https") and parts.netloc in hosts


@dataclass(frozen=True)
class UiSession:
    """The signed-in caller of a console page and the CSRF token its forms carry."""

    principal: Principal
    csrf: str

    @property
    def role(self) -> Role:
        return self.principal.role

    def can(self, role: Role | str) -> bool:
        """Whether the caller's role allows `role`'s actions (templates hide the rest)."""
        return self.principal.role.allows(Role(role))


def cookie_value(key: str) -> str:
    """The key as the cookie holds it: base64url, so that any admin key a deployment set
    (spaces, `;`, quotes) survives cookie quoting unchanged."""
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def key_of(value: str | None) -> str | None:
    """The key a session cookie holds, or None for a missing or malformed cookie."""
    if not value:
        return None
    try:
        key = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    return key or None


def _session(request: Request, runtime: RuntimeDep) -> UiSession:
    key = key_of(request.cookies.get(COOKIE))
    if not key:
        raise NotSignedIn()
    admin_key = runtime.settings.admin_key
    principal = authenticate(
        runtime.reads,
        runtime.sessions,
        key,
        admin_key.get_secret_value() if admin_key else None,
    )
    if principal is None:
        raise NotSignedIn("the key of this session is invalid or was revoked: sign in again")
    return UiSession(principal, csrf_token(key))


def _csrf_failed() -> HTTPException:
    return HTTPException(
        status.HTTP_403_FORBIDDEN,
        "this form's CSRF token is missing or wrong (or it came from another site): "
        "reload the page and try again",
    )


async def check_csrf(request: Request, session: UiSession) -> None:
    """Refuse (403) a state-changing request without this session's token or from another
    site. A form body is read (and cached for the route) only when no header is sent; the
    streamed dataset upload sends the header."""
    if request.method in SAFE_METHODS:
        return
    if not same_origin(request):
        raise _csrf_failed()
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/x-www-form-urlencoded"):
            value = (await request.form()).get(CSRF_FIELD)
            sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise _csrf_failed()


def require(role: Role) -> Callable[..., Awaitable[UiSession]]:
    """A dependency: a signed-in caller with at least `role`, CSRF-checked unless GET."""

    async def check(
        request: Request, session: Annotated[UiSession, Depends(_session)]
    ) -> UiSession:
        await check_csrf(request, session)
        if not session.principal.role.allows(role):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"role {session.role} may not do this; needs {role} or higher",
            )
        return session

    return check


def optional_session(request: Request, runtime: RuntimeDep) -> UiSession | None:
    """The session if the cookie holds a valid key, else None (the sign-in page)."""
    try:
        return _session(request, runtime)
    except NotSignedIn:
        return None


UiViewer = Annotated[UiSession, Depends(require(Role.viewer))]
UiUser = Annotated[UiSession, Depends(require(Role.user))]
UiAdmin = Annotated[UiSession, Depends(require(Role.admin))]
MaybeSession = Annotated[UiSession | None, Depends(optional_session)]

__all__ = [
    "COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "MaybeSession",
    "NotSignedIn",
    "RuntimeDep",
    "UiAdmin",
    "UiSession",
    "UiUser",
    "UiViewer",
    "csrf_token",
]

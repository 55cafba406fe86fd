"""Sign-in and sign-out: the API key goes in a form body and comes back only as a cookie.

The key is posted once, checked, and set as the session cookie (see `ui/deps.py`); it never
appears in a page, a URL or a log line. Login CSRF (another site signing you in with its
key) is refused by the Origin check; sign-out is a POST with the CSRF token.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import RedirectResponse, Response

from submitter.roles import Role
from submitter.security import authenticate
from submitter.ui.deps import (
    COOKIE,
    COOKIE_PATH,
    MaybeSession,
    RuntimeDep,
    UiViewer,
    cookie_value,
    is_https,
    same_origin,
)
from submitter.ui.forms import FormDep
from submitter.ui.pages.train import warm_up
from submitter.ui.render import page

router = APIRouter(prefix="/ui", include_in_schema=False)

HOME = "/ui/jobs"


def safe_next(target: str | None) -> str:
    """Where to go after sign-in: a console path of this server, never another site."""
    if not target:
        return HOME
    parts = urlsplit(target)
    if (
        parts.scheme
        or parts.netloc
        or not target.startswith("/ui")
        or target.startswith(("//", "/ui/login"))
        or "\\" in target
    ):
        return HOME
    return target


@router.get("")
def home() -> RedirectResponse:
    return RedirectResponse(HOME, status_code=status.HTTP_303_SEE_OTHER)


@router.get("/login", response_model=None)
def login_page(
    request: Request,
    session: MaybeSession,
    next: str | None = None,
    expired: str | None = None,
    signed_out: str | None = None,
) -> Response:
    if session is not None:
        return RedirectResponse(safe_next(next), status_code=status.HTTP_303_SEE_OTHER)
    notice = None
    if expired:
        notice = "Your session ended (the key is invalid or was revoked). Sign in again."
    elif signed_out:
        notice = "Signed out."
    return page(request, "login.html", None, next=safe_next(next), notice=notice, error=None)


@router.post("/login", response_model=None)
def login(request: Request, runtime: RuntimeDep, form: FormDep) -> Response:
    if not same_origin(request):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "sign-in from another site is refused")
    key = form.get("key")
    target = safe_next(form.get("next"))
    admin_key = runtime.settings.admin_key
    principal = (
        authenticate(
            runtime.reads,
            runtime.sessions,
            key,
            admin_key.get_secret_value() if admin_key else None,
        )
        if key
        else None
    )
    if principal is None:
        error = "That API key is invalid or was revoked." if key else "Paste an API key."
        return page(
            request,
            "login.html",
            None,
            status_code=status.HTTP_401_UNAUTHORIZED,
            next=target,
            notice=None,
            error=error,
        )
    if principal.role.allows(Role.user):
        warm_up()  # the train form's model list
    response = RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        COOKIE,
        cookie_value(key),
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )
    return response


@router.post("/logout")
def logout(_: UiViewer) -> RedirectResponse:
    response = RedirectResponse("/ui/login?signed_out=1", status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response

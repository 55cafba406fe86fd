"""FastAPI dependencies: the process Runtime and the caller's API key and role."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from submitter.runtime import Runtime
from submitter.security import Principal, Role, authenticate_cached, hash_key, key_cache

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer sk_...`")


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_principal(
    request: Request,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from a key cache (`security.KEY_TTL`): async, so that a hit costs neither
    a database read nor a thread-pool hop; a miss reads in the thread pool as before."""
    if credentials is None or not credentials.credentials:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send 'Authorization: Bearer <key>' (the CLI and the client "
            "read it from SUBMITTER_API_KEY)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    admin_key = runtime.settings.admin_key
    cache = getattr(request.app.state, "keys", None)
    if cache is None:
        cache = request.app.state.keys = key_cache()
    token = credentials.credentials
    hit, principal = cache.lookup(hash_key(token))
    if not hit:
        principal = await run_in_threadpool(
            authenticate_cached,
            cache,
            runtime.reads,
            runtime.sessions,
            token,
            admin_key.get_secret_value() if admin_key else None,
        )
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or revoked API key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


def require(role: Role) -> Callable[..., Any]:
    """A dependency that lets through callers with at least `role`."""

    async def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if not principal.role.allows(role):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"role {principal.role} may not do this; needs {role} or higher",
            )
        return principal

    return check


Viewer = Annotated[Principal, Depends(require(Role.viewer))]
User = Annotated[Principal, Depends(require(Role.user))]
Admin = Annotated[Principal, Depends(require(Role.admin))]

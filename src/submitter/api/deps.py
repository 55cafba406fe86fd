"""FastAPI dependencies: the process Runtime and the caller's API key and role."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from submitter.runtime import Runtime
from submitter.security import Principal, Role, authenticate

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer sk_...`")


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_principal(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send 'Authorization: Bearer <key>' (the CLI and the client "
            "read it from SUBMITTER_API_KEY)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    admin_key = runtime.settings.admin_key
    principal = authenticate(
        runtime.reads,
        runtime.sessions,
        credentials.credentials,
        admin_key.get_secret_value() if admin_key else None,
    )
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or revoked API key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


def require(role: Role) -> Callable[[Principal], Principal]:
    """A dependency that lets through callers with at least `role`."""

    def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
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

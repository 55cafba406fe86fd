"""503 + Retry-After when the database or the artifact store cannot be reached.

One mechanism for every route: exception handlers that turn "the database (or the store)
is away" into `503 Service Unavailable` with `Retry-After` and a JSON `detail` naming the
part, instead of a 500.

Why exception handlers (Starlette's ExceptionMiddleware) and not a catch-all: an error
left to Starlette's ServerErrorMiddleware is answered with a 500 and then *re-raised* to
Uvicorn, which closes the connection after that answer. A client that had already sent its
next request on that keep-alive connection gets no answer ("Server disconnected without
sending a response"): those were the reset connections of the outage. Errors answered
here are answered and done; the connection stays usable.

What counts as "unavailable" (and only that: an integrity or data error is the request's
fault and goes to its own handler, or stays a 500 if it is a bug):

- a SQLAlchemy `DBAPIError` whose connection was lost (`connection_invalidated`), that
  failed while connecting (no statement), or whose SQLSTATE says the server cannot serve
  right now: 08 connection exception, 53 insufficient resources, 57 operator
  intervention (shutdown, statement timeout), 40 transaction rollback (deadlock,
  serialization), 55P03 lock not available; on SQLite, a locked, busy, unopenable or
  failing database file;
- SQLAlchemy's pool `TimeoutError` (no connection free within the pool timeout);
- psycopg's own `OperationalError` raised outside SQLAlchemy;
- the store's `StoreUnavailable`; and any other `StorageError`, `OSError` or botocore
  error escaping a route when `store.check()` then fails too (the store is down, so that
  is what the error was: a local folder gone or unwritable, S3 unreachable).

Other errors of those classes are passed on to the next handler of the exception's class
hierarchy the app has (so a handler for a base class registered elsewhere still runs), or
re-raised as if this module did not exist.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from submitter.db.session import describe_database
from submitter.storage.errors import StorageError, StoreUnavailable

logger = logging.getLogger(__name__)

#: Seconds a client should wait before trying again (the `Retry-After` header).
RETRY_AFTER_SECONDS = 5
#: Longest time the store check behind an `OSError` may take before the error is re-raised.
STORE_CHECK_SECONDS = 5.0

#: SQLSTATE classes and codes meaning "the server cannot serve this now; try again".
_RETRYABLE_SQLSTATE_CLASSES = ("08", "53", "57", "40")
_RETRYABLE_SQLSTATES = {"55P03"}
_SQLITE_UNAVAILABLE = ("locked", "busy", "unable to open", "disk i/o", "is full")

Handler = Callable[[Request, Exception], Awaitable[Response]]


def unavailable(part: str, what: str, reason: str) -> JSONResponse:
    """A 503 naming `part` (`database`, `artifact store`): `{"detail": ...}` + Retry-After."""
    reason = (reason.strip().splitlines() or [""])[0][:300]
    return JSONResponse(
        {"detail": f"{part} unavailable ({what}): {reason}; retry in {RETRY_AFTER_SECONDS} s"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def database_unavailable(error: BaseException) -> bool:
    """Whether a database error means "the database cannot be reached or cannot serve now"
    (not "this request is wrong")."""
    if isinstance(error, PoolTimeout):
        return True
    original: BaseException = error
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        original = error.orig if isinstance(error.orig, BaseException) else error
    if isinstance(original, sqlite3.OperationalError):
        message = str(original).lower()
        return any(text in message for text in _SQLITE_UNAVAILABLE)
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    if not isinstance(original, psycopg.Error):
        return False
    sqlstate = original.sqlstate or ""
    if sqlstate:
        return sqlstate[:2] in _RETRYABLE_SQLSTATE_CLASSES or sqlstate in _RETRYABLE_SQLSTATES
    # No SQLSTATE: raised by the client library itself. A failed connect or a broken
    # connection is unavailability; "too many parameters" and the like are not.
    statement = getattr(error, "statement", None)
    if isinstance(original, psycopg.OperationalError | psycopg.InterfaceError):
        broken = getattr(getattr(original, "pgconn", None), "status", 0) != 0
        return statement is None or broken or "connection" in str(original).lower()
    return False


def install(app: FastAPI) -> None:
    """Register the handlers on `app` (see the module docstring for what they answer)."""
    import psycopg
    from botocore.exceptions import BotoCoreError

    def database(request: Request) -> str:
        return describe_database(request.app.state.runtime.settings.db_url)

    def on_database_error(base: type[Exception]) -> Handler:
        async def handler(request: Request, error: Exception) -> Response:
            if database_unavailable(error):
                logger.warning("database unavailable (503): %s", _first_line(error))
                return unavailable("database", database(request), _reason(error))
            return await _next_handler(app, error, base, request)

        return handler

    async def on_pool_timeout(request: Request, error: Exception) -> Response:
        logger.warning("database pool exhausted (503): %s", _first_line(error))
        reason = "no database connection free (all in use, or connects are failing)"
        return unavailable("database", database(request), reason)

    async def on_store_unavailable(request: Request, error: Exception) -> Response:
        store = request.app.state.runtime.store
        logger.warning("artifact store unavailable (503): %s", _first_line(error))
        return unavailable("artifact store", store.describe(), str(error))

    def on_io_error(base: type[Exception]) -> Handler:
        async def handler(request: Request, error: Exception) -> Response:
            # An I/O or storage error escaping a route is most likely the store (the
            # API's only files); ask the store whether it is usable before blaming it.
            store = request.app.state.runtime.store
            try:
                await asyncio.wait_for(run_in_threadpool(store.check), STORE_CHECK_SECONDS)
            except StoreUnavailable as down:
                return await on_store_unavailable(request, down)
            except TimeoutError:
                reason = f"no answer to a check within {STORE_CHECK_SECONDS:.0f} s"
                return unavailable("artifact store", store.describe(), reason)
            except Exception:  # the check itself broke: leave the original error alone
                logger.exception("store check after %s failed", type(error).__name__)
            return await _next_handler(app, error, base, request)

        return handler

    app.add_exception_handler(DBAPIError, on_database_error(DBAPIError))
    app.add_exception_handler(PoolTimeout, on_pool_timeout)
    app.add_exception_handler(psycopg.Error, on_database_error(psycopg.Error))
    app.add_exception_handler(StoreUnavailable, on_store_unavailable)
    app.add_exception_handler(StorageError, on_io_error(StorageError))
    app.add_exception_handler(OSError, on_io_error(OSError))
    app.add_exception_handler(BotoCoreError, on_io_error(BotoCoreError))


async def _next_handler(app: FastAPI, error: Exception, base: type, request: Request) -> Response:
    """Hand `error` to the app's handler of the nearest class above `base` in its class
    hierarchy, as Starlette would have without ours; else re-raise it (a 500)."""
    mro = type(error).__mro__
    for cls in mro[mro.index(base) + 1 :]:
        if cls in (Exception, BaseException):
            break  # the app's catch-all, if any, runs in ServerErrorMiddleware
        handler: Any = app.exception_handlers.get(cls)
        if handler is not None:
            result = handler(request, error)
            return await result if asyncio.iscoroutine(result) else result  # type: ignore[no-any-return]
    raise error


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def _reason(error: BaseException) -> str:
    """The driver's own message (SQLAlchemy's wrapper adds the SQL and a link)."""
    original = error.orig if isinstance(error, DBAPIError) else error
    return f"{type(original).__name__}: {_first_line(original or error)}"

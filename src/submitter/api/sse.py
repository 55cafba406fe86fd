"""Server-Sent Events responses: a stream of `JobEvent`s as `text/event-stream`.

Shared by the API route and the web console so that both send the same bytes with the
same headers. The response is a plain StreamingResponse: each event is sent as its own
body chunk (the app's middleware pass chunks on as they come, none buffers a body), and
Starlette cancels the stream when the client disconnects, which stops the generator.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from submitter.jobs.events import JobEvent, format_sse

#: No cache may keep or merge the stream; nginx must not buffer it (`X-Accel-Buffering`).
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

#: The OpenAPI entry of a 200 that is an event stream (for a route's `responses=`).
SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A stream of Server-Sent Events (`event:` state, log, end, "
        "reconnect, error; `: ping` comments); each `data:` is one line of JSON.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


def sse_response(events: AsyncGenerator[JobEvent, None]) -> StreamingResponse:
    """Stream `events` as `text/event-stream`; the generator is closed however the
    response ends (finished, client gone, server stopping)."""

    async def body() -> AsyncIterator[bytes]:
        try:
            async for event in events:
                yield format_sse(event)
        finally:
            await events.aclose()

    return StreamingResponse(body(), media_type="text/event-stream", headers=SSE_HEADERS)

"""Reference servers for the webhook benchmark: the ceilings a Python webhook can reach.

- `app`: a no-op FastAPI endpoint, written the way FastAPI's tutorial writes one. The issue
  defines "the no-op ceiling" as this endpoint's rate on the same machine.
- `raw`: a no-op plain ASGI app; what uvicorn itself costs per request, below any framework.

Both are served with the same uvicorn options as the webhook (uvloop, httptools, no access
log, the same number of workers).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

app = FastAPI()


@app.post("/noop")
async def noop() -> dict[str, bool]:
    """Accept anything, do nothing."""
    return {"success": True}


_BODY = b'{"success":true}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"16")]


async def raw(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A plain ASGI no-op: read the body, answer 200."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})

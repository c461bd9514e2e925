"""``GET /``: the web dashboard, and its scripts and styles under ``/static``.

The page holds no secret and loads nothing from another origin: the token
comes from the URL fragment (``/#token=...``), which browsers never send, and
every script and style is served from this package, so a strict
Content-Security-Policy holds.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

router = APIRouter(tags=["dashboard"])


@router.get("/", include_in_schema=False)
async def dashboard() -> FileResponse:
    """The dashboard page; it reads the token from its own URL fragment."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)


class StaticAssets(StaticFiles):
    """The dashboard's files, each sent with the page's security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(PAGE_HEADERS)
        return response


router.mount("/static", StaticAssets(directory=STATIC_DIR), name="static")

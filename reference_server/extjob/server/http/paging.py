"""One way to page, for every list route: ``?limit=&cursor=`` -> ``{items, nextCursor}``.

A page holds at most ``limit`` items; ``nextCursor`` is null when the page
reached the end of the list as it is now, else an opaque string that asks for
the page after it (``?cursor=...``, same filters). Cursors are keys (a job id,
a log index, an attempt number), never offsets, so a page stays right while
new items arrive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .inputs import RequestError, query_int

MAX_LIMIT = 1000
MAX_CURSOR_CHARS = 256


def page_query(query: Mapping[str, str], default: int) -> tuple[int, str | None]:
    """``limit`` and ``cursor`` of a list request."""
    limit = query_int(query, "limit", default=default, low=1, high=MAX_LIMIT)
    cursor = query.get("cursor") or None
    if cursor is not None and len(cursor) > MAX_CURSOR_CHARS:
        raise RequestError(400, "invalid_query", "cursor: not a cursor of this API", "cursor")
    return limit, cursor


def number_cursor(cursor: str | None) -> int:
    """A cursor that is a position (a log index, an attempt number); 0 for none."""
    if cursor is None:
        return 0
    if not cursor.isdigit() or len(cursor) > 18:
        raise RequestError(
            400, "invalid_query", f"cursor: not a cursor of this list: {cursor!r}", "cursor"
        )
    return int(cursor)


def page(
    key: str, items: Sequence[dict[str, Any]], limit: int, cursor_field: str
) -> dict[str, Any]:
    """The response for ``items`` (JSON objects), fetched as ``limit + 1`` to
    know whether more follow; the cursor is the last item's ``cursor_field``."""
    shown = list(items[:limit])
    more = len(items) > limit
    return {key: shown, "nextCursor": str(shown[-1][cursor_field]) if more else None}

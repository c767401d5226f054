"""The review grid: a Streamlit component (Components v2, html/css/js inline, no iframe) that draws a
page of pseudo-labels and takes decisions from the keyboard and the mouse (grid.js says how).

    result = review_grid(key="grid", data=payload, on_batch_change=commit, on_turn_change=turn)

Python sends `data` (the tiles of a page, the classes, the round's counts by status, the statuses
the filter keeps, the last ack, and where to POST decisions: review_grid/api.py); the component
sends its batches of decisions there, and three triggers: `batch` (decisions and undos, in the order
they were keyed, when there is no route or a POST failed), `turn` (another page, or this one filled
again) and `zoom` (the lightbox wants the source image of a tile, which comes back as
`data["zoom"]`: {"position", "image", "width", "height"}, the size being the image's own).
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

_HERE = Path(__file__).parent
_GRID = st.components.v2.component("mpl_studio.review_grid", js=(_HERE / "grid.js").read_text(),
                                   css=(_HERE / "grid.css").read_text())


def review_grid(*, key: str, data: dict, on_batch_change, on_turn_change, on_zoom_change):
    """Mount the grid; the callbacks run before the rerun that redraws it (see app_pages/review.py)."""
    return _GRID(key=key, data=data, on_batch_change=on_batch_change, on_turn_change=on_turn_change,
                 on_zoom_change=on_zoom_change)


def payload(tiles: list[dict], classes: list[str], *, round_: int, page, mode: str = "grid",
            ack: dict | None = None, focus_last: bool = False, zoom: dict | None = None,
            counts: dict | None = None, api: dict | None = None, statuses: list[str] | None = None) -> dict:
    """What the component draws: plain data only (class names are shown as text by the component)."""
    keep = ("position", "sample_id", "label", "label_name", "confidence", "status", "final_label", "top",
            "image", "history", "note", "zoomable")
    return {"tiles": [{k: t[k] for k in keep} for t in tiles], "classes": list(classes), "round": round_,
            "page": page.page, "pages": page.pages, "total": page.total, "mode": mode, "ack": ack,
            "focus_last": focus_last, "zoom": zoom, "counts": counts, "api": api,
            "statuses": list(statuses) if statuses else None}

"""Phone numbers never reach a log line in full."""

from __future__ import annotations

__all__ = ["mask_phone"]


def mask_phone(phone: str | None) -> str:
    """``+14155550123`` -> ``+1415*****23``: enough to correlate, not to dial."""
    if not phone:
        return "<none>"
    if len(phone) <= 6:
        return "*" * len(phone)
    return phone[:5] + "*" * (len(phone) - 7) + phone[-2:]

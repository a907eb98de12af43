"""Carrier content rules for outage text: forbidden topics and public URL shorteners.

Carriers filter messages about sex, hate, alcohol, firearms, tobacco, gambling, cannabis
and third-party debt collection (SHAFT-C), and links through public shorteners. An outage
text containing either is refused (dead-lettered with the reason) rather than sent and
silently filtered. The word lists are configuration; these are the defaults.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["DEFAULT_FORBIDDEN", "DEFAULT_SHORTENERS", "ContentPolicy"]

DEFAULT_FORBIDDEN: tuple[str, ...] = (
    "casino",
    "gambling",
    "sportsbook",
    "cannabis",
    "marijuana",
    "thc",
    "cbd",
    "tobacco",
    "cigarette",
    "cigarettes",
    "vape",
    "vaping",
    "liquor",
    "vodka",
    "whiskey",
    "firearm",
    "firearms",
    "ammunition",
    "porn",
    "xxx",
    "debt collection",
    "debt collector",
)

DEFAULT_SHORTENERS: tuple[str, ...] = (
    "bit.ly",
    "tinyurl.com",
    "goo.gl",
    "t.co",
    "ow.ly",
    "is.gd",
    "buff.ly",
    "rebrand.ly",
    "cutt.ly",
    "shorturl.at",
    "tiny.cc",
    "rb.gy",
    "t.ly",
    "bl.ink",
    "short.io",
    "s.id",
)

_URL = re.compile(r"(?:https?://)?((?:[a-z0-9-]+\.)+[a-z]{2,})(?:[/?#]\S*)?", re.IGNORECASE)


class ContentPolicy:
    """Whole-word matching, so "Sussex" or "Scunthorpe" never trip a rule."""

    def __init__(self, forbidden: Iterable[str], shorteners: Iterable[str]) -> None:
        words = sorted({w.strip().lower() for w in forbidden if w.strip()})
        self._forbidden = (
            re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
            if words
            else None
        )
        self._shorteners = frozenset(h.strip().lower() for h in shorteners if h.strip())

    def _is_shortener(self, host: str) -> bool:
        """The listed host or any subdomain of it (www.bit.ly is bit.ly)."""
        parts = host.split(".")
        return any(".".join(parts[i:]) in self._shorteners for i in range(len(parts) - 1))

    def violation(self, *texts: str | None) -> str | None:
        """None when the texts may be sent, else a reason naming what was found."""
        for text in texts:
            if not text:
                continue
            if self._forbidden is not None and (m := self._forbidden.search(text)):
                return f"carrier-forbidden content: {m.group(1).lower()!r}"
            for m in _URL.finditer(text):
                host = m.group(1).lower()
                if self._is_shortener(host):
                    return f"public URL shortener {host!r} (carriers filter these)"
            if text.startswith("http"):
                host = (urlsplit(text).hostname or "").lower()
                if self._is_shortener(host):
                    return f"public URL shortener {host!r} (carriers filter these)"
        return None

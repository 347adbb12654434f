"""fleet's page tokens (`api/pagination.go`): URL-safe base64 of little-endian uint16 limit and
uint16 page. fleetd appends the uint64 registry revision the first page was read at, so the
following pages of one listing come from the same revision (a consistent listing, and no new
read of etcd per page); fleet's own 4-byte tokens are still accepted. Pure: no I/O."""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["PageToken", "TokenError", "page_of", "paged", "token_from_query"]

T = TypeVar("T")
_FORMAT = "<HH"
_WITH_REVISION = "<HHQ"


class TokenError(ValueError):
    """A nextPageToken the server cannot use (400)."""


@dataclass(frozen=True, slots=True)
class PageToken:
    limit: int
    page: int = 1
    revision: int = 0  # the registry revision of the listing (0: none, a fleet token)

    def next(self, revision: int = 0) -> PageToken:
        return PageToken(self.limit, self.page + 1, revision)

    def encode(self) -> str:
        if self.revision:
            raw = struct.pack(_WITH_REVISION, self.limit, self.page, self.revision)
        else:
            raw = struct.pack(_FORMAT, self.limit, self.page)
        return base64.urlsafe_b64encode(raw).decode()

    @classmethod
    def decode(cls, value: str) -> PageToken:
        try:
            raw = base64.urlsafe_b64decode(value.encode("ascii", "strict"))
            if len(raw) >= struct.calcsize(_WITH_REVISION):
                limit, page, revision = struct.unpack(
                    _WITH_REVISION, raw[: struct.calcsize(_WITH_REVISION)]
                )
            else:
                (limit, page), revision = struct.unpack(_FORMAT, raw[:4]), 0
        except (binascii.Error, struct.error, UnicodeEncodeError, ValueError) as err:
            raise TokenError(f"invalid page token: {err}") from None
        return cls(limit, page, revision)


def token_from_query(values: Sequence[str], limit: int) -> PageToken:
    """The token of a request's `nextPageToken` values (default: page 1 at the server limit)."""
    if len(values) > 1:
        raise TokenError("too many values for page token")
    if not values:
        return PageToken(limit, 1)
    tok = PageToken.decode(values[0])
    if tok.limit != limit:
        raise TokenError(f"token limit must be {limit}")
    if tok.page == 0:
        raise TokenError("token page must be greater than zero")
    return tok


def page_of(
    items: Sequence[T], tok: PageToken, revision: int = 0
) -> tuple[list[T], PageToken | None]:
    """The items of page `tok` and the next token (carrying `revision`, that of `items`); as
    fleet, a full page always yields a next token (an exactly-full last page is followed by an
    empty one)."""
    start, stop = (tok.page - 1) * tok.limit, tok.page * tok.limit
    if start >= len(items):
        return [], None
    if stop > len(items):
        return list(items[start:]), None
    return list(items[start:stop]), tok.next(revision)


def paged(
    key: str, items: Sequence[object], tok: PageToken, revision: int = 0
) -> Mapping[str, object]:
    page, nxt = page_of(items, tok, revision)
    body: dict[str, object] = {key: page}
    if nxt is not None:
        body["nextPageToken"] = nxt.encode()
    return body

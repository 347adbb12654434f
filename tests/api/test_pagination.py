"""fleet's page tokens and pages (pure `fleetd/api/pagination.py`): which items a page holds,
when a next token is given, and which tokens a request may bring."""

from __future__ import annotations

import pytest

from fleetd.api.pagination import PageToken, TokenError, page_of, paged, token_from_query

ITEMS = list(range(5))


@pytest.mark.parametrize(
    ("tok", "items", "nxt"),
    [
        pytest.param(PageToken(10), ITEMS, None, id="all-on-one-page"),
        pytest.param(PageToken(2), [0, 1], PageToken(2, 2, 9), id="first-page"),
        pytest.param(PageToken(2, 3), [4], None, id="last-partial-page"),
        # as fleet: a full page always has a next token, even when nothing follows it
        pytest.param(PageToken(5), ITEMS, PageToken(5, 2, 9), id="exactly-full"),
        pytest.param(PageToken(5, 2), [], None, id="the-empty-page-after"),
        pytest.param(PageToken(2, 9), [], None, id="past-the-end"),
    ],
)
def test_a_page_and_whether_another_follows(
    tok: PageToken, items: list[int], nxt: PageToken | None
) -> None:
    # the next token carries the revision the listing was cut at (9), for the next pages
    assert page_of(ITEMS, tok, revision=9) == (items, nxt)


def test_the_body_names_the_next_token_only_when_there_is_one() -> None:
    assert paged("units", ITEMS, PageToken(10)) == {"units": ITEMS}
    assert paged("units", ITEMS, PageToken(3), 9) == {
        "units": [0, 1, 2],
        "nextPageToken": PageToken(3, 2, 9).encode(),
    }


@pytest.mark.parametrize(
    ("token", "decoded"),
    [
        # fleet's own 4 bytes (limit 100, page 2): still understood, with no revision
        pytest.param("ZAACAA==", PageToken(100, 2, 0), id="fleet-token"),
        pytest.param(PageToken(100, 2, 12345).encode(), PageToken(100, 2, 12345), id="fleetd-token"),
    ],
)  # fmt: skip
def test_tokens_of_fleet_and_of_fleetd_are_read(token: str, decoded: PageToken) -> None:
    assert PageToken.decode(token) == decoded
    assert token_from_query([token], 100) == decoded


def test_a_token_without_a_revision_is_encoded_as_fleet_does() -> None:
    assert PageToken(100, 2).encode() == "ZAACAA=="


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(["ZAACAA==", "ZAACAA=="], "too many values for page token", id="twice"),
        # a token is only good for the server's own page size
        pytest.param([PageToken(50, 2).encode()], "token limit must be 100", id="other-limit"),
        pytest.param([PageToken(100, 0).encode()], "token page must be greater than zero", id="page-zero"),
        pytest.param(["%%%"], "invalid page token", id="not-base64"),
        pytest.param(["AA=="], "invalid page token", id="too-short"),
    ],
)  # fmt: skip
def test_a_bad_token_is_refused(values: list[str], message: str) -> None:
    with pytest.raises(TokenError) as err:
        token_from_query(values, 100)
    assert str(err.value).startswith(message)


def test_no_token_is_the_first_page_at_the_servers_limit() -> None:
    assert token_from_query([], 100) == PageToken(100, 1)

"""`cookies_of`: the hit's cookies are the ones aiohttp's own reader finds, on every header."""

from __future__ import annotations

from aiohttp.test_utils import make_mocked_request
from hypothesis import example, given
from hypothesis import strategies as st
from multidict import CIMultiDict

from gateway.ingest.request import PLAIN_COOKIES, cookies_of

PLAIN_NAME = st.text("abcXYZ019_.-", min_size=1, max_size=8)
PLAIN_VALUE = st.text("aZ09_.-$%+/:=", max_size=12)
ODD = st.text(" \t\"'\\;=,:abc~!#&()[]{}|<>?@^`é", max_size=12)


def _both(header: str) -> tuple[dict[str, str], dict[str, str]]:
    request = make_mocked_request("GET", "/tr", headers=CIMultiDict({"Cookie": header}))
    ours = dict(cookies_of(request))
    fresh = make_mocked_request("GET", "/tr", headers=CIMultiDict({"Cookie": header}))
    return ours, dict(fresh.cookies)


@given(
    pairs=st.lists(st.tuples(PLAIN_NAME, PLAIN_VALUE), min_size=1, max_size=6),
    spaces=st.lists(st.booleans(), min_size=6, max_size=6),
)
@example(pairs=[("_ga", "GA1.1.1234567890.1795000000"), ("_ga", "GA1.1.2")], spaces=[True] * 6)
@example(pairs=[("sid", "YWJj=="), ("_ga_X1", "GS2.1.s17$o1$g0$t17$j60$l0$h0")], spaces=[False] * 6)
def test_a_plain_header_reads_as_aiohttp_reads_it(
    pairs: list[tuple[str, str]], spaces: list[bool]
) -> None:
    header = "".join(
        ("" if i == 0 else ";" + " " * spaces[i]) + f"{name}={value}"
        for i, (name, value) in enumerate(pairs)
    )
    assert PLAIN_COOKIES.fullmatch(header)  # the split path is the one under test
    ours, aiohttp_s = _both(header)
    assert ours == aiohttp_s
    assert ours[pairs[-1][0]] == pairs[-1][1]  # a repeated name: its last value, as aiohttp


@given(header=st.one_of(ODD, st.lists(st.one_of(ODD, PLAIN_NAME, PLAIN_VALUE)).map("".join)))
@example(header='a="quoted; still a"; b=2')
@example(header="expires=Wed, 09 Jun 2021 10:18:14 GMT; _fbp=fb.1.2.3")
@example(header=" _fbp=fb.1.2.3")
@example(header="_fbp=fb.1.2.3;")
def test_any_header_reads_as_aiohttp_reads_it(header: str) -> None:
    ours, aiohttp_s = _both(header)
    assert ours == aiohttp_s


def test_a_quoted_value_is_aiohttp_s_unquoted_one() -> None:
    # The control: this header is not plain, and only aiohttp's reader unquotes it.
    header = 'a="x\\"y"; b=2'
    assert not PLAIN_COOKIES.fullmatch(header)
    ours, aiohttp_s = _both(header)
    assert ours == aiohttp_s == {"a": 'x"y', "b": "2"}

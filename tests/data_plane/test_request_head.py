"""The strict request-head checks (sans-IO): every smuggling shape we know is refused before h11 sees it."""

from __future__ import annotations

import pytest

from data_plane.protocol.request_head import check_head, find_head_end

GOOD = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: a\r\nX-Obs: caf\xe9\r\nX-Empty:\r\n\r\n",
]

BAD = {
    "cl+te": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    "te+cl": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    "duplicate cl": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
    "conflicting cl": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n",
    "cl list": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
    "cl sign": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
    "te gzip": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
    "te gzip,chunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    "te twice": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n",
    "te space before colon": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
    "obs-fold tab": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n",
    "bare lf in header": b"GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n",
    "bare cr": b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
    "nul in value": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n",
    "ctl in value": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n",
    "space in name": b"GET / HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n",
    "bad version": b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    "lowercase method": b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
    "space in target": b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
}


@pytest.mark.parametrize("head", GOOD)
def test_good_heads_pass(head: bytes) -> None:
    assert find_head_end(head) == len(head)
    assert check_head(head) is None


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_heads_are_refused(name: str) -> None:
    head = BAD[name]
    end = find_head_end(head)
    if end == -2:
        return  # bare-LF terminators are refused by the caller without a full head
    assert end == len(head)
    rejected = check_head(head)
    assert rejected is not None and rejected.status == 400, name


def test_bare_lf_terminator_is_detected_not_awaited() -> None:
    assert find_head_end(b"GET / HTTP/1.1\nHost: a\n\n") == -2
    assert find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n") == -1

"""data_plane.sync.changes: what a run of changes-stream entries names, and when only a full reload is safe
(sans-IO: entries in, a ChangeSet or None out)."""

from __future__ import annotations

import pytest

from data_plane.sync.changes import collect
from shared.models import ChangeEvent


def entry(number: int, version: int, kind: str, name: str) -> tuple[str, dict[str, str]]:
    event = ChangeEvent(version=version, kind=kind, action="updated", name=name)  # type: ignore[arg-type]
    return f"{number}-0", event.to_stream_fields()


def test_names_by_kind_and_the_cursor_of_the_last_entry() -> None:
    entries = [
        entry(1, 8, "proxy", "a.test"),
        entry(2, 8, "auth", "a.test"),  # one transaction: the same version
        entry(3, 9, "route", "r1"),
        entry(4, 10, "certificate", "c"),
        entry(5, 11, "token", "alice"),  # a token's own record: nothing to re-read
        entry(6, 12, "service", "svc"),  # where service://svc goes
    ]
    changes = collect(entries, after_version=7)
    assert changes is not None
    assert changes.names == ({"a.test"}, {"r1"}, {"a.test"}, {"svc"})
    assert changes.certificates and (changes.last_id, changes.last_version) == ("6-0", 12)


@pytest.mark.parametrize(
    "entries",
    [
        [entry(1, 9, "proxy", "a.test")],  # the first is not the next version (trimmed, or a silent bump)
        [entry(1, 8, "proxy", "a.test"), entry(2, 10, "proxy", "b.test")],  # a version skipped
        [entry(1, 7, "proxy", "a.test")],  # a version already applied again
        # a kind this data plane does not know (a newer control plane): it cannot apply it piecewise
        [("1-0", {**entry(1, 8, "proxy", "a.test")[1], "kind": "console"})],
        [("1-0", {"version": "8", "kind": "proxy"})],  # an entry that does not parse
    ],
)
def test_what_the_stream_cannot_vouch_for_means_a_full_reload(
    entries: list[tuple[str, dict[str, str]]],
) -> None:
    assert collect(entries, after_version=7) is None

"""`mhp logs audit` and `mhp logs oauth` as real subprocesses against `python -m control_plane`."""

from __future__ import annotations

import json

import pytest

from .conftest import RunningControlPlane
from .test_cli import cp, fails, ok, run  # noqa: F401  (cp is a fixture)

pytestmark = pytest.mark.slow


def test_logs_audit_shows_who_changed_what(cp: RunningControlPlane) -> None:  # noqa: F811
    ok(run(cp, "proxy", "create", "a.example.com", "http://127.0.0.1:9", "--no-https"))
    ok(run(cp, "proxy", "update", "a.example.com", "--read-timeout", "300"))
    for i in range(4):
        ok(run(cp, "route", "create", f"/r{i}", "--to-url", "http://127.0.0.1:9", "--id", f"r-{i}"))

    table = ok(run(cp, "logs", "audit", "--kind", "proxy"))
    lines = [line for line in table.splitlines() if "a.example.com" in line]
    assert len(lines) == 2
    assert "updated" in lines[0] and "read_timeout_seconds" in lines[0] and "admin" in lines[0]
    assert "created" in lines[1]

    entries = json.loads(ok(run(cp, "logs", "audit", "--kind", "route", "--limit", "3", "--json")))
    assert [e["name"] for e in entries] == ["r-3", "r-2", "r-1"]
    assert json.loads(ok(run(cp, "logs", "audit", "--action", "deleted", "--json"))) == []

    tenant = json.loads(ok(run(cp, "tokens", "create", "tenant", "--json")))["token"]
    mine = json.loads(ok(run(cp, "logs", "audit", "--json", token=tenant)))
    assert {(e["kind"], e["name"]) for e in mine} == {("token", "tenant")}


def test_logs_oauth_and_bad_input(cp: RunningControlPlane) -> None:  # noqa: F811
    assert json.loads(ok(run(cp, "logs", "oauth", "--outcome", "failure", "--json"))) == []
    assert "EVENT" in ok(run(cp, "logs", "oauth"))
    err = fails(run(cp, "logs", "audit", "--since", "last tuesday"))
    assert "422" in err and "since" in err

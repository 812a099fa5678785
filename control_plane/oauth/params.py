"""Request parameters of the OAuth endpoints: form bodies and query strings (RFC 6749 §3.1, §3.2).

Parameters sent without a value are treated as omitted, and a parameter must not be sent more than once.
Form bodies are parsed here (application/x-www-form-urlencoded only) so no multipart library is needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl

from .errors import OAuthError

MAX_FORM_BYTES = 64 * 1024


MULTI_VALUED = frozenset({"resource"})  # RFC 8707 allows several resource parameters


class Params(Mapping[str, str]):
    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        values: dict[str, str] = {}
        self.multi: dict[str, list[str]] = {name: [] for name in MULTI_VALUED}
        for name, value in pairs:
            if value == "":
                continue
            if name in MULTI_VALUED:
                self.multi[name].append(value)
                continue
            if name in values:
                raise OAuthError("invalid_request", f"parameter {name!r} was sent more than once")
            values[name] = value
        self._values = values

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def all(self, name: str) -> list[str]:
        return list(self.multi.get(name, []))

    def require(self, name: str) -> str:
        value = self._values.get(name)
        if value is None:
            raise OAuthError("invalid_request", f"missing parameter {name!r}")
        return value


def parse_form(body: bytes, content_type: str) -> Params:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "the request body must be application/x-www-form-urlencoded")
    if len(body) > MAX_FORM_BYTES:
        raise OAuthError("invalid_request", "the request body is too large")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OAuthError("invalid_request", "the request body is not UTF-8") from exc
    return Params(parse_qsl(text, keep_blank_values=True))


def parse_query(pairs: Iterable[tuple[str, str]]) -> Params:
    return Params(pairs)


def scope_list(scope: str | None) -> list[str]:
    """Space-delimited scope string -> ordered unique list."""
    out: list[str] = []
    for item in (scope or "").split(" "):
        if item and item not in out:
            out.append(item)
    return out

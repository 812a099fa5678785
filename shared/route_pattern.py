"""Route regexes, compiled with RE2 (google-re2): matching takes time linear in the path, whatever the
pattern, so a route added by one tenant (`^/(a+)+$`) cannot stall the data plane's one event loop for every
other tenant, as a backtracking engine (Python's `re`) does on `/aaaa...!`.

RE2 has no backreferences or lookaround; a pattern it cannot compile is refused with its reason. The
model validator (shared.models.Route, so a 422 at the API) and the data plane's route table both compile
through `compile_route_pattern`, so a pattern that validates is the pattern that runs.
"""

from __future__ import annotations

from typing import Final, Protocol

import re2

# RE2 logs every parse error to stderr through absl unless told not to; the error is reported to the caller.
_OPTIONS: Final = re2.Options()
_OPTIONS.log_errors = False


class RoutePattern(Protocol):
    def match(self, text: str) -> object | None:
        """A match anchored at the start of `text`, or None."""


class InvalidRoutePattern(ValueError):
    pass


def compile_route_pattern(pattern: str) -> RoutePattern:
    try:
        compiled: RoutePattern = re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise InvalidRoutePattern(
            f"{reason} (routes use RE2, which matches in linear time: no backreferences or lookaround)"
        ) from exc
    return compiled

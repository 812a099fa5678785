"""Where the CLI finds the API and how it talks to it.

Resolution order for the URL: --url, MHP_API_URL in the environment, MHP_API_URL in the env file, then
http://127.0.0.1:$API_PORT (settings); `host:port` without a scheme means http. For the token: --token,
MHP_TOKEN (environment, then env file), then ADMIN_TOKEN (settings, which reads the env file). API errors
become `ApiError` with one readable line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from dotenv import dotenv_values

from shared.config import env_file_path, load_settings

REQUEST_TIMEOUT_SECONDS = 30.0


class CliError(Exception):
    """Anything the CLI reports as one line on stderr; `exit_code` is the process status."""

    exit_code = 1


class ApiError(CliError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class ConnectionFailed(CliError):
    exit_code = 3


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    token: str


def resolve_endpoint(url: str | None, token: str | None) -> Endpoint:
    path = env_file_path()
    file_values = dotenv_values(path) if path and os.path.isfile(path) else {}

    def pick(name: str) -> str:
        return os.environ.get(name) or file_values.get(name) or ""

    resolved_url = url or pick("MHP_API_URL")
    resolved_token = token or pick("MHP_TOKEN")
    if not resolved_url or not resolved_token:
        settings = load_settings()
        resolved_url = resolved_url or f"http://127.0.0.1:{settings.API_PORT}"
        resolved_token = resolved_token or settings.ADMIN_TOKEN
    return Endpoint(url=with_scheme(resolved_url).rstrip("/"), token=resolved_token)


def with_scheme(url: str) -> str:
    """`127.0.0.1:9000` (the form --help shows) means http://127.0.0.1:9000; a URL with a scheme is kept."""
    return url if "://" in url else f"http://{url}"


def error_message(response: httpx.Response) -> str:
    """One line out of any error body: FastAPI's `detail` string or list of {loc, msg}, else the raw text."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list) and detail:
        parts = []
        for item in detail:
            loc = [str(p) for p in item.get("loc", []) if p != "body"]
            parts.append(f"{'.'.join(loc) or 'body'}: {item.get('msg', '')}")
        return "; ".join(parts)
    text = response.text.strip().replace("\n", " ")
    return text[:300] or response.reason_phrase


class ApiClient:
    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        headers = {"Authorization": f"Bearer {endpoint.token}"} if endpoint.token else {}
        self._http = httpx.Client(base_url=endpoint.url, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS)

    @property
    def base_url(self) -> str:
        return self._endpoint.url

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._http.close()

    def request(self, method: str, path: str, json: Any = None, *, if_match: str | None = None) -> Any:
        """One API call; `if_match` makes a write conditional on the ETag of an earlier read."""
        return self._call(method, path, json, if_match)[0]

    def read(self, path: str) -> tuple[Any, str | None]:
        """A GET and the object's ETag, for a read-modify-write that sends it back as If-Match."""
        return self._call("GET", path, None, None)

    def _call(self, method: str, path: str, json: Any, if_match: str | None) -> tuple[Any, str | None]:
        headers = {"If-Match": if_match} if if_match else None
        try:
            response = self._http.request(method, path, json=json, headers=headers)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code == 412:
            raise ApiError(
                412,
                f"{error_message(response)} (it changed between mhp's read and its write; "
                "nothing was written: run the command again)",
            )
        if response.status_code >= 400:
            raise ApiError(response.status_code, error_message(response))
        etag = response.headers.get("etag")
        if response.status_code == 204 or not response.content:
            return None, etag
        return response.json(), etag

    def text(self, path: str, params: dict[str, Any]) -> str:
        """A GET whose answer is text (service logs)."""
        try:
            response = self._http.get(path, params=params)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code >= 400:
            raise ApiError(response.status_code, error_message(response))
        return response.text

    def stream_text(self, path: str, params: dict[str, Any]) -> Iterator[str]:
        """A GET whose text answer keeps coming (`mhp service logs -f`), chunk by chunk as it arrives."""
        try:
            with self._http.stream(
                "GET", path, params=params, timeout=httpx.Timeout(30.0, read=None)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ApiError(response.status_code, error_message(response))
                yield from response.iter_text()
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: httpx.TransportError) -> ConnectionFailed:
        return ConnectionFailed(
            f"cannot reach the control plane at {self._endpoint.url} ({type(exc).__name__}: {exc})"
        )

"""One ACME order over HTTP-01: new order, publish key-authorisations, answer, poll, finalise, download.

The certbot `acme` library is blocking (requests); every network call runs in a worker thread via
asyncio.to_thread so the event loop keeps serving the API. Polling happens here, on the loop, with an
increasing delay that honours the CA's Retry-After. Key-authorisations go to Redis (any data-plane replica
answers them) and are withdrawn when the order ends, whatever the outcome.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from acme import challenges, errors, messages
from acme.client import ClientNetwork, ClientV2
from josepy import jwa, jwk

log = logging.getLogger(__name__)

USER_AGENT = "mcp-http-proxy (acme-python)"
NETWORK_TIMEOUT_SECONDS = 30
FIRST_POLL_DELAY_SECONDS = 0.5
MAX_POLL_DELAY_SECONDS = 10.0
MAX_RETRY_AFTER_SECONDS = 60.0
FAILED_STATUSES = frozenset({"invalid", "deactivated", "expired", "revoked"})

Publish = Callable[[str, str], Awaitable[None]]  # (token, key authorisation)
Withdraw = Callable[[str], Awaitable[None]]  # (token)


class AcmeFailure(Exception):
    """The CA refused or could not be reached; `detail` is the text users see in the certificate status."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class AccountUnknown(AcmeFailure):
    """The CA does not know our stored account (CA reset, account deactivated): register a new one."""


@dataclass(frozen=True, slots=True)
class AcmeEndpoint:
    directory_url: str
    verify: bool | str  # True (system trust), or a CA bundle path for a test CA such as Pebble's


def retry_after_seconds(header: str | None, default: float, *, now: float | None = None) -> float:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP-date), bounded to [0, 60]."""
    if not header:
        return default
    value = header.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - (time.time() if now is None else now)
        except (TypeError, ValueError, IndexError):
            return default
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def describe(exc: BaseException) -> str:
    """The CA's own words for a failure, as one readable string."""
    if isinstance(exc, errors.ValidationError):
        parts = []
        for authzr in exc.failed_authzrs:
            for challb in authzr.body.challenges:
                if challb.error is not None:
                    parts.append(f"{authzr.body.identifier.value}: {_problem(challb.error)}")
        return "; ".join(parts) or "authorisation failed"
    if isinstance(exc, errors.IssuanceError):
        return _problem(exc.error)
    if isinstance(exc, messages.Error):
        return _problem(exc)
    if isinstance(exc, errors.TimeoutError):
        return "timed out waiting for the ACME server"
    if isinstance(exc, requests.RequestException):
        return f"cannot reach the ACME server: {type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _problem(error: messages.Error) -> str:
    text = f"{error.typ}: {error.detail or error.title or error.description or ''}".strip()
    for sub in error.subproblems or ():
        text += f"; {_problem(sub)}"
    return text


def _is_account_missing(exc: BaseException) -> bool:
    return isinstance(exc, messages.Error) and exc.code == "accountDoesNotExist"


def open_client(endpoint: AcmeEndpoint, account_key: jwk.JWK, account_uri: str | None) -> ClientV2:
    """Blocking: fetch the directory and bind the account (when already registered)."""
    net = ClientNetwork(
        account_key,
        alg=jwa.RS256,
        verify_ssl=endpoint.verify,  # type: ignore[arg-type]  # requests accepts a CA bundle path here
        user_agent=USER_AGENT,
        timeout=NETWORK_TIMEOUT_SECONDS,
    )
    if account_uri:
        net.account = messages.RegistrationResource(uri=account_uri, body=messages.Registration())
    directory = ClientV2.get_directory(endpoint.directory_url, net)
    return ClientV2(directory, net=net)


def register_account(client: ClientV2, email: str) -> str:
    """Blocking: register (or find, when the key is already known) the account; returns its URI."""
    registration = messages.NewRegistration.from_data(email=email or None, terms_of_service_agreed=True)
    try:
        regr = client.new_account(registration)
    except errors.ConflictError as exc:
        # The CA already knows this key: the Location it returned is the account URI.
        uri = str(exc.args[0]) if exc.args else ""
        client.net.account = messages.RegistrationResource(uri=uri, body=messages.Registration())
        return uri
    return str(regr.uri)


async def call_blocking(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return await asyncio.to_thread(fn, *args)
    except (errors.Error, requests.RequestException) as exc:
        if _is_account_missing(exc):
            raise AccountUnknown(describe(exc)) from exc
        raise AcmeFailure(describe(exc)) from exc


async def run_order(
    client: ClientV2,
    account_key: jwk.JWK,
    csr_pem: bytes,
    *,
    publish: Publish,
    withdraw: Withdraw,
    deadline: float,
    lease_lost: asyncio.Event,
) -> str:
    """Run one order to a downloaded full chain (PEM). Raises AcmeFailure with the CA's reason."""
    orderr: messages.OrderResource = await call_blocking(client.new_order, csr_pem)
    published: list[str] = []
    try:
        for authzr in orderr.authorizations:
            if authzr.body.status == messages.STATUS_VALID:
                continue  # the CA reuses a recent validation of this name
            challb = _http01(authzr)
            response, key_authorization = challb.response_and_validation(account_key)
            token = challb.chall.encode("token")
            await publish(token, key_authorization)
            published.append(token)
            await call_blocking(client.answer_challenge, challb, response)
        for authzr in orderr.authorizations:
            await _poll_authorization(client, authzr, deadline=deadline, lease_lost=lease_lost)
        _check(lease_lost, deadline)
        finalize_deadline = _naive_deadline(deadline)
        finished: messages.OrderResource = await call_blocking(
            client.finalize_order, orderr, finalize_deadline
        )
    finally:
        for token in published:
            try:
                await withdraw(token)
            except Exception:
                # A leftover key-authorisation expires with its TTL; never mask the order's outcome.
                log.warning("could not withdraw ACME challenge %s", token, exc_info=True)
    _check(lease_lost, deadline)
    if not finished.fullchain_pem:
        raise AcmeFailure("the ACME server finalised the order without a certificate")
    return str(finished.fullchain_pem)


def _http01(authzr: messages.AuthorizationResource) -> messages.ChallengeBody:
    for challb in authzr.body.challenges:
        if isinstance(challb.chall, challenges.HTTP01):
            return challb
    raise AcmeFailure(f"{authzr.body.identifier.value}: the ACME server offered no http-01 challenge")


async def _poll_authorization(
    client: ClientV2, authzr: messages.AuthorizationResource, *, deadline: float, lease_lost: asyncio.Event
) -> None:
    delay = FIRST_POLL_DELAY_SECONDS
    name = authzr.body.identifier.value
    while True:
        _check(lease_lost, deadline)
        current, response = await call_blocking(client.poll, authzr)
        status = current.body.status.name
        if status == "valid":
            return
        if status in FAILED_STATUSES:
            reasons = [_problem(c.error) for c in current.body.challenges if c.error is not None]
            raise AcmeFailure(f"{name}: " + ("; ".join(reasons) or f"authorisation {status}"))
        wait = retry_after_seconds(response.headers.get("Retry-After"), delay)
        await asyncio.sleep(min(wait, max(0.0, deadline - time.time())))
        delay = min(delay * 2, MAX_POLL_DELAY_SECONDS)


def _check(lease_lost: asyncio.Event, deadline: float) -> None:
    if lease_lost.is_set():
        raise AcmeFailure("issuance lock lost while the order was running; another issuer may take over")
    if time.time() >= deadline:
        raise AcmeFailure("timed out waiting for the ACME server")


def _naive_deadline(deadline: float) -> datetime.datetime:
    # acme's finalize_order compares against datetime.now() (naive local time).
    return datetime.datetime.fromtimestamp(deadline)

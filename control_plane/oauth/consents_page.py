"""The signed-in user's remembered consents, on the authorization server itself.

    GET  /consents          the records of the browser's signed-in user (our session cookie)
    POST /consents/revoke   delete one of them (CSRF-checked)

The user is whoever signed in at the upstream provider in this browser through one of our authorization
flows (the session cookie, SESSION_TTL_SECONDS); without a session the page says so and lists nothing.
The revoke form carries a CSRF token that must match the signed cookie set with the page, which also names
the login it was shown to; a user can only ever delete records filed under their own login.
"""

from __future__ import annotations

import secrets

from shared.secrets import constant_time_equal

from .authorization import Page, Redirect
from .consent import Consents, normalise_login
from .consent_page import consents_page
from .cookies import CONSENTS_COOKIE, CookieSigner, session_user
from .errors import PageError
from .params import Params

PAGE_TTL_SECONDS = 1800

NOT_SIGNED_IN = (
    "This page lists the applications you allowed while signed in through this server. You are not signed "
    "in in this browser: sign in through one of those applications first, then come back."
)


class ConsentsPage:
    def __init__(self, issuer: str, consents: Consents, signer: CookieSigner) -> None:
        self._issuer = issuer
        self._consents = consents
        self._signer = signer

    async def show(self, cookies: dict[str, str]) -> Page:
        user = session_user(self._signer, cookies)
        if user is None:
            raise PageError("Not signed in", NOT_SIGNED_IN, status=401)
        login = normalise_login(user.login)
        csrf = secrets.token_urlsafe(24)
        html = consents_page(
            action=f"{self._issuer}/consents/revoke",
            login=user.login,
            consents=await self._consents.list(login=login),
            csrf_token=csrf,
        )
        cookie = self._signer.set_cookie(CONSENTS_COOKIE, {"c": csrf, "u": login}, PAGE_TTL_SECONDS)
        return Page(200, html, [cookie])

    async def revoke(self, form: Params, cookies: dict[str, str]) -> Redirect:
        user = session_user(self._signer, cookies)
        bound = self._signer.decode(CONSENTS_COOKIE, cookies.get(CONSENTS_COOKIE))
        if user is None:
            raise PageError("Not signed in", NOT_SIGNED_IN, status=401)
        login = normalise_login(user.login)
        if (
            bound is None
            or not constant_time_equal(str(bound.get("c", "")), form.get("csrf_token", ""))
            or not constant_time_equal(str(bound.get("u", "")), login)
        ):
            raise PageError(
                "Request could not be verified",
                "This request did not come from the page we showed in this browser, or it expired.",
                status=403,
            )
        consent_id = form.get("consent_id")
        if consent_id:
            await self._consents.revoke(login=login, consent_id=consent_id)
        return Redirect(f"{self._issuer}/consents")

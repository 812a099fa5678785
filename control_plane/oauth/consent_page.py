"""Our own pages as HTML strings (everything shown is escaped): the consent page, the signed-in user's
list of remembered consents, and the safe error page.

The consent page names the client, the host its redirect URI points at and the scopes, and posts back a
CSRF token that must match the signed consent cookie; the consents list posts revocations the same way.
Pages are sent with security headers that forbid framing (clickjacking), scripts and referrers (see
`SECURITY_HEADERS`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from urllib.parse import urlsplit

from control_plane.records import OAuthConsent

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self' https: http:; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#222}"
    "code{background:#f3f3f3;padding:.1rem .3rem;border-radius:3px}"
    "button{font-size:1rem;padding:.5rem 1.2rem;margin-right:.6rem}"
)


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def consent_page(
    *,
    action: str,
    client_name: str,
    client_id: str,
    redirect_uri: str,
    scopes: list[str],
    resources: list[str],
    request_id: str,
    csrf_token: str,
) -> str:
    host = urlsplit(redirect_uri).netloc or redirect_uri
    name = client_name or client_id
    scope_items = "".join(f"<li><code>{escape(s)}</code></li>" for s in scopes)
    resource_items = "".join(f"<li><code>{escape(r)}</code></li>" for r in resources)
    body = (
        f"<h1>Allow {escape(name)}?</h1>"
        f"<p>The application <strong>{escape(name)}</strong> "
        f"(client <code>{escape(client_id)}</code>) wants to act on your behalf. "
        "After you sign in, you will be sent back to "
        f"<strong>{escape(host)}</strong>.</p>"
        f"<p>Access requested:</p><ul>{scope_items}</ul>"
        f"<p>For:</p><ul>{resource_items}</ul>"
        f'<form method="post" action="{escape(action)}">'
        f'<input type="hidden" name="request_id" value="{escape(request_id)}">'
        f'<input type="hidden" name="csrf_token" value="{escape(csrf_token)}">'
        '<button type="submit" name="decision" value="approve">Approve and sign in</button>'
        '<button type="submit" name="decision" value="deny">Deny</button>'
        "</form>"
    )
    return _page(f"Allow {name}?", body)


def consents_page(*, action: str, login: str, consents: list[OAuthConsent], csrf_token: str) -> str:
    if not consents:
        items = "<p>You have not allowed any application here, or every approval has expired.</p>"
    else:
        rows = []
        for consent in consents:
            name = consent.client_name or consent.client_id
            until = datetime.fromtimestamp(consent.expires_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
            scopes = ", ".join(f"<code>{escape(s)}</code>" for s in consent.scopes)
            resources = ", ".join(f"<code>{escape(r)}</code>" for r in consent.resources)
            rows.append(
                f"<li><strong>{escape(name)}</strong> (client <code>{escape(consent.client_id)}</code>): "
                f"{scopes} for {resources}, remembered until {escape(until)}."
                f'<form method="post" action="{escape(action)}">'
                f'<input type="hidden" name="consent_id" value="{escape(consent.consent_id)}">'
                f'<input type="hidden" name="csrf_token" value="{escape(csrf_token)}">'
                '<button type="submit">Revoke</button></form></li>'
            )
        items = f"<ul>{''.join(rows)}</ul>"
    body = (
        f"<h1>Applications you allowed</h1><p>Signed in as <strong>{escape(login)}</strong>. "
        "These applications get access again without asking you, for exactly what is listed. Revoking "
        "makes an application ask again; tokens it already holds run until they expire.</p>"
        f"{items}"
    )
    return _page("Applications you allowed", body)


def error_page(title: str, description: str) -> str:
    body = (
        f"<h1>{escape(title)}</h1><p>{escape(description)}</p>"
        "<p>Nothing was sent to the application. You can close this page and start again from the app.</p>"
    )
    return _page(title, body)

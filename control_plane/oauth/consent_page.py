"""Our own consent page and the safe error page, as HTML strings (everything shown is escaped).

The consent page names the client, the host its redirect URI points at and the scopes, and posts back a
CSRF token that must match the signed consent cookie. Pages are sent with security headers that forbid
framing (clickjacking), scripts and referrers (see `security_headers`).
"""

from __future__ import annotations

from html import escape
from urllib.parse import urlsplit

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


def error_page(title: str, description: str) -> str:
    body = (
        f"<h1>{escape(title)}</h1><p>{escape(description)}</p>"
        "<p>Nothing was sent to the application. You can close this page and start again from the app.</p>"
    )
    return _page(title, body)

"""Client ID Metadata Documents: a client whose client_id is an https URL logs in without registering;
the document must name itself, list the redirect URI, and live on an allowed address."""

from __future__ import annotations

import html

import httpx
import pytest
from jose import jwt

from control_plane.oauth.client_metadata_documents import address_allowed, cache_seconds, check_url
from control_plane.oauth.errors import OAuthError
from tests.control_plane.conftest import RunningControlPlane

from .conftest import RESOURCE, protect
from .https_documents import DocumentServer
from .oauth_flow import REDIRECT_URI, Browser, Client, authorize_url, login, query_of, redeem, refresh

pytestmark = pytest.mark.auth


def _publish(documents: DocumentServer, path: str, **overrides: object) -> Client:
    client_id = f"{documents.base_url}{path}"
    document = {
        "client_id": client_id,
        "client_name": "Hosted client",
        "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "none",
        **overrides,
    }
    documents.documents[path] = (document, {"Cache-Control": "max-age=120"})
    return Client(client_id, document)


async def test_metadata_document_client_logs_in(
    http: httpx.AsyncClient, cp: RunningControlPlane, documents: DocumentServer
) -> None:
    assert (await http.get("/.well-known/oauth-authorization-server")).json()[
        "client_id_metadata_document_supported"
    ]
    await protect(http)
    client = _publish(documents, "/clients/good.json")
    result = await login(Browser(http), client, resource=RESOURCE)
    tokens = (await redeem(http, client, result)).json()
    assert jwt.get_unverified_claims(tokens["access_token"])["client_id"] == client.client_id
    assert (await refresh(http, client, tokens["refresh_token"])).status_code == 200
    # Cached per its Cache-Control: fetched once for the whole flow.
    assert documents.fetches.count("/clients/good.json") == 1


@pytest.mark.parametrize(
    ("path", "overrides", "rule"),
    [
        (
            "/clients/impostor.json",
            {"client_id": "https://someone-else.example/client.json"},
            "its client_id does not equal the URL it was fetched from",
        ),
        (
            "/clients/other-redirect.json",
            {"redirect_uris": ["https://elsewhere.example/cb"]},
            "The redirect URI is not registered for this application.",
        ),
        (
            "/clients/secret.json",
            {"token_endpoint_auth_method": "client_secret_basic"},
            "token_endpoint_auth_method 'client_secret_basic' is not supported (only none)",
        ),
        (
            "/clients/bad-redirect.json",
            {"redirect_uris": ["http://evil.example/cb"]},
            "redirect URI 'http://evil.example/cb' must use https, or http on a loopback address",
        ),
        (
            "/clients/no-redirects.json",
            {"redirect_uris": []},
            "redirect_uris must be a non-empty list of strings",
        ),
    ],
)
async def test_bad_metadata_documents_get_a_page_not_a_redirect(
    http: httpx.AsyncClient,
    cp: RunningControlPlane,
    documents: DocumentServer,
    path: str,
    overrides: dict[str, object],
    rule: str,
) -> None:
    await protect(http)
    client = _publish(documents, path, **overrides)
    response = await http.get(authorize_url(client, verifier="v" * 43, resource=RESOURCE))
    assert response.status_code == 400 and "location" not in response.headers
    assert rule in html.unescape(response.text), response.text  # refused by the rule it names


async def test_missing_document_is_invalid_client_at_the_token_endpoint(
    http: httpx.AsyncClient, cp: RunningControlPlane, documents: DocumentServer
) -> None:
    response = await http.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": "x",
            "code_verifier": "v" * 43,
            "client_id": f"{documents.base_url}/clients/missing.json",
        },
    )
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_ssrf_guard_and_url_rules() -> None:
    for address in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "::1", "fc00::1", "0.0.0.0"):
        assert not address_allowed(address, allow_private=False), address
    assert address_allowed("93.184.216.34", allow_private=False)
    assert address_allowed("127.0.0.1", allow_private=True)
    for url, rule in (
        ("http://app.example/c.json", "must be an https URL"),
        ("https://app.example", "needs a path"),
        ("https://app.example/", "needs a path"),
        ("https://u:p@a.example/c", "no fragment or credentials"),
        ("https://app.example/a/../c.json", "must not contain dot segments"),
    ):
        with pytest.raises(OAuthError) as refused:
            check_url(url)
        assert rule in refused.value.description, url
    assert check_url("https://app.example:8443/client.json") == ("app.example", 8443)
    assert cache_seconds("max-age=5") == 60 and cache_seconds("max-age=999999") == 86400
    assert cache_seconds(None) == 3600 and cache_seconds("no-store") == 60


async def test_a_document_without_the_authorization_code_grant_gets_no_code(
    http: httpx.AsyncClient, cp: RunningControlPlane, documents: DocumentServer
) -> None:
    await protect(http)
    client = _publish(documents, "/clients/refresh-only.json", grant_types=["refresh_token"])
    response = await http.get(authorize_url(client, verifier="v" * 43, resource=RESOURCE))
    assert response.status_code == 302, response.text
    redirect = query_of(response.headers["location"])
    assert redirect["error"] == "unauthorized_client" and redirect["state"] == "st-123"

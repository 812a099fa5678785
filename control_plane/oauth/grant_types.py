"""The grant types this authorization server knows (RFC 6749 §4, RFC 8628), named once.

A client may use a grant only when its registration lists it (`OAuthClient.grant_types`); every endpoint
that starts or completes a grant checks that.
"""

from __future__ import annotations

AUTHORIZATION_CODE = "authorization_code"
REFRESH_TOKEN = "refresh_token"
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
CLIENT_CREDENTIALS = "client_credentials"

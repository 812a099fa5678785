"""The API's input models must offer every client-settable field of the stored models, with the same defaults,
so a field added to shared.models is either settable through the API or deliberately server-set."""

from __future__ import annotations

from pydantic import BaseModel

from control_plane.services.proxies import SERVER_SET_FIELDS, ProxyTargetSettings
from control_plane.services.routes import RouteSettings
from shared.models import ProxyTarget, Route

ROUTE_SERVER_SET = {"id", "owner", "created_at", "updated_at", "schema_version"}


def _defaults(model: type[BaseModel], names: set[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in names:
        field = model.model_fields[name]
        out[name] = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
    return out


def test_proxy_input_matches_stored_model() -> None:
    settable = set(ProxyTarget.model_fields) - SERVER_SET_FIELDS
    assert set(ProxyTargetSettings.model_fields) == settable
    assert _defaults(ProxyTargetSettings, settable - {"target_url"}) == _defaults(
        ProxyTarget, settable - {"target_url"}
    )


def test_route_input_matches_stored_model() -> None:
    settable = set(Route.model_fields) - ROUTE_SERVER_SET
    assert set(RouteSettings.model_fields) == settable
    assert _defaults(RouteSettings, settable - {"path_pattern"}) == _defaults(
        Route, settable - {"path_pattern"}
    )

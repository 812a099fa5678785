"""`/api/v1/certificates/`: ACME certificates. Issuance runs in the background; poll `/{name}/status`."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ..services.certificates import CertificateCreate, CertificateStatus, CertificateView
from .deps import PrincipalDep, RuntimeDep
from .etag import IF_MATCH, tag

router = APIRouter(prefix="/api/v1/certificates", tags=["certificates"])


@router.post("/", status_code=201, response_model=CertificateView)
async def create_certificate(
    body: CertificateCreate, runtime: RuntimeDep, principal: PrincipalDep
) -> CertificateView:
    """Request a certificate (status `pending`); a worker issues it over ACME HTTP-01."""
    return CertificateView.of(await runtime.certificates.create(principal, body))


@router.get("/", response_model=list[CertificateView])
async def list_certificates(runtime: RuntimeDep, principal: PrincipalDep) -> list[CertificateView]:
    return [CertificateView.of(c) for c in await runtime.certificates.list(principal)]


@router.get("/{cert_name}", response_model=CertificateView)
async def get_certificate(cert_name: str, runtime: RuntimeDep, principal: PrincipalDep) -> CertificateView:
    cert = await runtime.certificates.get(principal, cert_name)
    tag(cert)
    return CertificateView.of(cert)


@router.get("/{cert_name}/status", response_model=CertificateStatus)
async def certificate_status(
    cert_name: str, runtime: RuntimeDep, principal: PrincipalDep
) -> CertificateStatus:
    return CertificateStatus.of(await runtime.certificates.get(principal, cert_name))


@router.post("/{cert_name}/renew", status_code=202, response_model=CertificateView, dependencies=[IF_MATCH])
async def renew_certificate(cert_name: str, runtime: RuntimeDep, principal: PrincipalDep) -> CertificateView:
    """Issue a new chain now, whatever the expiry date (also skips a failed certificate's backoff)."""
    return CertificateView.of(await runtime.certificates.renew(principal, cert_name))


@router.post(
    "/{cert_name}/convert-to-production",
    status_code=202,
    response_model=CertificateView,
    dependencies=[IF_MATCH],
)
async def convert_to_production(
    cert_name: str, runtime: RuntimeDep, principal: PrincipalDep
) -> CertificateView:
    """Switch a staging certificate to the production directory; the staging chain serves until replaced."""
    return CertificateView.of(await runtime.certificates.convert_to_production(principal, cert_name))


@router.delete("/{cert_name}", status_code=204, dependencies=[IF_MATCH])
async def delete_certificate(cert_name: str, runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    await runtime.certificates.delete(principal, cert_name)
    return Response(status_code=204)

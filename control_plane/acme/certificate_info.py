"""Certificate material: a fresh key and CSR for an order, and the metadata read back from an issued chain.

Pure functions over bytes (no Redis, no network).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class InvalidChain(ValueError):
    """The CA returned something that is not a PEM certificate chain for our key."""


@dataclass(frozen=True, slots=True)
class KeyAndCsr:
    private_key_pem: bytes
    csr_pem: bytes


@dataclass(frozen=True, slots=True)
class ChainInfo:
    issuer: str
    serial: str
    not_before: float
    not_after: float
    fingerprint_sha256: str
    domains: tuple[str, ...]


def new_key_and_csr(domains: list[str]) -> KeyAndCsr:
    """An ECDSA P-256 key and a CSR naming every domain as a SAN (the first one also as CN)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return KeyAndCsr(private_key_pem=key_pem, csr_pem=csr.public_bytes(serialization.Encoding.PEM))


def read_chain(fullchain_pem: str, private_key_pem: bytes | None = None) -> ChainInfo:
    """Metadata of the leaf (first) certificate; checks it matches `private_key_pem` when given."""
    try:
        chain = x509.load_pem_x509_certificates(fullchain_pem.encode("ascii"))
    except ValueError as exc:
        raise InvalidChain(f"the CA returned an unreadable certificate chain: {exc}") from exc
    if not chain:
        raise InvalidChain("the CA returned an empty certificate chain")
    leaf = chain[0]
    if private_key_pem is not None:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
        ours = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        theirs = leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if ours != theirs:
            raise InvalidChain("the issued certificate does not carry our public key")
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        domains = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        domains = ()
    return ChainInfo(
        issuer=leaf.issuer.rfc4514_string(),
        serial=format(leaf.serial_number, "x"),
        not_before=leaf.not_valid_before_utc.timestamp(),
        not_after=leaf.not_valid_after_utc.timestamp(),
        fingerprint_sha256=hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
        domains=domains,
    )

"""A throw-away certificate authority and JWT signer for the deployment tests.

``TestCA`` issues server certificates for the providers' real names, so that
the egress gateway's TLS settings (SNI, SAN check, trusted CA) are exercised
as committed. ``TokenSigner`` plays the cluster's service account issuer:
it signs RS256 tokens and publishes its key as a JWKS file.
"""

from __future__ import annotations

import base64
import datetime
import json
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class ServerCertificate:
    cert_path: Path
    key_path: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_path, self.key_path)
        return context


class TestCA:
    """A root CA written to ``directory/ca.pem``; issues leaf certificates."""

    __test__ = False  # not a test class, whatever its name says

    def __init__(self, directory: Path, name: str = "Tollgate test CA") -> None:
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert_path = directory / "ca.pem"
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, dns_name: str) -> ServerCertificate:
        """A server certificate whose only name is ``dns_name``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name)])
            )
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )

        cert_path = self.directory / f"{dns_name}.pem"
        key_path = self.directory / f"{dns_name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return ServerCertificate(cert_path, key_path)


class TokenSigner:
    """Signs RS256 JWTs; ``jwks_path`` holds the public key as a JWKS."""

    def __init__(self, directory: Path, key_id: str = "test-issuer") -> None:
        self.key_id = key_id
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self._key.public_key().public_numbers()
        jwk = {
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": key_id,
            "n": _b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
            "e": _b64url(numbers.e.to_bytes(3, "big")),
        }
        self.jwks_path = directory / "jwks.json"
        self.jwks_path.write_text(json.dumps({"keys": [jwk]}))

    def token(
        self, subject: str, *, audience: str = "tollgate", ttl_s: int = 600
    ) -> str:
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "kid": self.key_id}
        claims = {
            "iss": "https://kubernetes.default.svc.cluster.local",
            "sub": subject,
            "aud": [audience],
            "iat": now,
            "nbf": now,
            "exp": now + ttl_s,
        }
        signing_input = f"{_b64url_json(header)}.{_b64url_json(claims)}".encode()
        signature = self._key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())

        return f"{signing_input.decode()}.{_b64url(signature)}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_json(obj: dict[str, object]) -> str:
    return _b64url(json.dumps(obj, separators=(",", ":")).encode())

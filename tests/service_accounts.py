"""Google service account keys for tests: a fresh RSA key, any token URI."""

from __future__ import annotations

import json

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def service_account_key(token_uri: str) -> str:
    """A service account key (JSON text) whose tokens come from ``token_uri``."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "proj",
            "private_key_id": "k1",
            "private_key": pem,
            "client_email": "tollgate@proj.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": token_uri,
        }
    )

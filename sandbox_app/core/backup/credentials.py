"""S3 credentials for the backup target, kept in the OS keyring and nowhere else.

The app's Backup settings… stores an access key id and its secret here: one keyring entry
(service ``blankslate-backup``) per endpoint and bucket, so two homes using the same bucket
share it and another bucket never gets them. Without a keyring that really protects secrets
(Secret Service, KWallet, macOS Keychain…; not the fail/null backends, not keyrings.alt's
plain files) nothing is stored: the user is told to give them the usual AWS way (environment,
``~/.aws/credentials``), which is what a target opened without stored credentials uses.
``BLANKSLATE_KEYRING=off`` never consults the keyring (as for context keys).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import AuthError
from ..storage import secret_keyring

log = logging.getLogger(__name__)

SERVICE = "blankslate-backup"


@dataclass(frozen=True)
class S3Credentials:
    """An S3 access key (the secret never shows in ``repr``)."""

    access_key_id: str
    secret_access_key: str = field(repr=False)


def s3_account(target: str, endpoint: str) -> str:
    """The keyring entry of ``target``'s bucket at ``endpoint`` (empty: AWS)."""
    bucket = target.removeprefix("s3://").partition("/")[0]
    return f"s3 {endpoint.rstrip('/') or 'aws'} {bucket}"


class CredentialStore:
    """Backup credentials in the OS keyring. ``keyring_backend`` injects a keyring-like
    object (get/set/delete_password) instead of the system's (tests)."""

    def __init__(self, use_keyring: bool = True, *, keyring_backend: Any = None) -> None:
        self.use_keyring = use_keyring
        self._injected = keyring_backend

    @classmethod
    def from_env(cls) -> CredentialStore:
        return cls(use_keyring=os.environ.get("BLANKSLATE_KEYRING", "auto") != "off")

    def available(self) -> bool:
        """Whether credentials can be stored at all (a real keyring is there)."""
        return self._backend() is not None

    def load(self, target: str, endpoint: str) -> S3Credentials | None:
        """The stored credentials of ``target``'s bucket, or None."""
        backend = self._backend()
        if backend is None or not target.startswith("s3://"):
            return None
        try:
            text = backend.get_password(SERVICE, s3_account(target, endpoint))
            if text is None:
                return None
            data = json.loads(text)
            return S3Credentials(str(data["access_key_id"]), str(data["secret_access_key"]))
        except Exception as exc:  # a locked or broken keyring: as if nothing were stored
            log.info("no backup credentials from the keyring: %s", type(exc).__name__)
            return None

    def save(self, target: str, endpoint: str, credentials: S3Credentials) -> None:
        """Store them in the keyring; AuthError (one line) when there is none to use."""
        backend = self._backend()
        if backend is None:
            raise AuthError("no OS keyring to keep the S3 credentials in: give them as "
                            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or in "
                            "~/.aws/credentials")
        secret = json.dumps({"access_key_id": credentials.access_key_id,
                             "secret_access_key": credentials.secret_access_key})
        try:
            backend.set_password(SERVICE, s3_account(target, endpoint), secret)
        except Exception as exc:
            raise AuthError(f"the OS keyring refused the S3 credentials "
                            f"({type(exc).__name__})") from None

    def forget(self, target: str, endpoint: str) -> None:
        backend = self._backend()
        if backend is not None:
            try:
                backend.delete_password(SERVICE, s3_account(target, endpoint))
            except Exception as exc:  # nothing stored, or the keyring is locked
                log.info("keyring: %s", type(exc).__name__)

    def _backend(self) -> Any:
        if self._injected is not None:
            return self._injected
        return secret_keyring() if self.use_keyring else None

"""HTTP Basic authentication the way Zuora's callouts speak it.

Unless "preemptive authentication" is on, Zuora sends each callout first without
credentials and adds them only after a `401` that carries `WWW-Authenticate: Basic
realm="..."`. So a missing `Authorization` header is the normal first step, not an attack,
and the answer must be exactly that challenge.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from pydantic import SecretStr

REALM = "zuora-sync"
CHALLENGE = f'Basic realm="{REALM}", charset="UTF-8"'


class BasicAuth:
    """Checks an `Authorization` header against one username and password.

    Both parts are always compared, each with `hmac.compare_digest`, so the time taken does
    not tell which part was wrong or how much of it matched. The expected values live only
    here, as bytes, and never in a repr.
    """

    def __init__(self, username: SecretStr, password: SecretStr) -> None:
        self._username = username.get_secret_value().encode()
        self._password = password.get_secret_value().encode()

    def __repr__(self) -> str:
        return "BasicAuth(username=***, password=***)"

    def check(self, header: bytes | None) -> bool:
        """True when the header carries exactly the expected credentials."""
        if not header:
            return False
        scheme, _, token = header.strip().partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            decoded = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        username, colon, password = decoded.partition(b":")
        if not colon:
            return False
        # `&`, not `and`: both comparisons run whatever the first one says.
        return hmac.compare_digest(username, self._username) & hmac.compare_digest(
            password, self._password
        )

"""Zuora tenant setup as code: the custom event and the callout to the webhook.

`setup_callout(settings, env=...)` is what `zuora-sync zuora setup-callout` and the demo run;
see docs/zuora_callouts.md, "Setting up a tenant".
"""

from zuora.callout_setup.profiles import BUILTIN_PROFILES, Profile, ProfileError, Target
from zuora.callout_setup.run import (
    ObjectResult,
    Request,
    SetupConfigError,
    SetupError,
    SetupResult,
    TenantMismatch,
    setup_callout,
)
from zuora.callout_setup.verify import VerifyResult

__all__ = [
    "BUILTIN_PROFILES",
    "ObjectResult",
    "Profile",
    "ProfileError",
    "Request",
    "SetupConfigError",
    "SetupError",
    "SetupResult",
    "Target",
    "TenantMismatch",
    "VerifyResult",
    "setup_callout",
]

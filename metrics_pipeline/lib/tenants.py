"""What can name a tenant: the rule shared by every place a tenant comes from (the host agent's
`--tenant`, `config/host.yaml`, WhaTap projects, `metrics-pipeline tenants create`, API keys).

Plain Python with no imports beyond the standard library: the host agent uses it and stays small.
"""

from __future__ import annotations

#: The longest tenant, as for CloudWatch's `accounts[].tenant`.
MAX_TENANT_CHARS = 200
#: = lib.points.MAX_NAME_BYTES, the limit of the indexed `series.tenant` (not imported: lib.points
#: pulls in pandas); 200 characters are at most 800 bytes, so MAX_TENANT_CHARS is what binds.
MAX_TENANT_BYTES = 1000


def tenant_problem(tenant: object) -> str | None:
    """Why `tenant` cannot name a tenant (the `tenant` label of a series), or None.

    A tenant is 1-200 characters that PostgreSQL can store (no NUL, no unpaired surrogates)."""
    if not isinstance(tenant, str) or not tenant:
        return "must be a non-empty string"
    if len(tenant) > MAX_TENANT_CHARS:
        return f"must be at most {MAX_TENANT_CHARS} characters (got {len(tenant)})"
    if "\x00" in tenant:
        return "must not contain NUL characters"
    try:
        size = len(tenant.encode("utf-8"))
    except UnicodeEncodeError:
        return "must not contain unpaired UTF-16 surrogates"
    if size > MAX_TENANT_BYTES:  # unreachable at 200 characters; kept in case the limits move
        return f"must be at most {MAX_TENANT_BYTES} bytes of UTF-8 (got {size})"
    return None

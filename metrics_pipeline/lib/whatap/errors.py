"""What a WhaTap fetch can fail with. Messages name the project, endpoint and window, never a token."""


class WhatapError(RuntimeError):
    """A WhaTap call failed after retries, or answered with an error or without data."""


class WhatapAuthError(WhatapError):
    """401/403: a token or project code is wrong. Never retried."""


class WhatapRowsCut(WhatapError):
    """An answer was cut at a cap (rows, or merged points) and its window cannot be split further."""

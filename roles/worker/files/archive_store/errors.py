"""Exceptions whose text is one line a user can act on."""


class StoreError(Exception):
    """A problem the operator must fix; str() is a single line."""


class LicenseError(StoreError):
    """The license file is missing, malformed or does not fit this worker."""

    def __init__(self, field: str, expected: str, found: str) -> None:
        self.field = field
        self.expected = expected
        self.found = found
        super().__init__(
            f"license field {field!s}: expected {expected}, found {found}"
        )


class IntegrityError(StoreError):
    """A stored object does not decrypt or does not match its digest."""

"""Exceptions whose text is one line a user can act on."""


class StoreError(Exception):
    """A problem the operator must fix; str() is a single line."""


class IntegrityError(StoreError):
    """A stored object does not decrypt or does not match its digest."""


class Refused(StoreError):
    """The store will not take mail now (maintenance, license, disk space, a write fault); the reason says why."""

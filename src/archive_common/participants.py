"""Who took part in a message: the one definition of "a user's mail".

A person may see a message when one of their addresses is among its
participants: the From, To and Cc headers and the envelope recipients (which
carry Bcc recipients once journal reports are unpacked).  The envelope
sender is not a participant: for journaled mail it is the journaling server.

The store filters searches with ``involves`` (as an SQL function) and the web
interface checks every message it shows with the same function, so the two
cannot disagree.

Shared code (see src/README.md): standard library only.
"""

from email.utils import getaddresses

# The message fields that name participants (the store's column names).
FIELDS = ("hdr_from", "hdr_to", "hdr_cc", "env_to")
# A user with more aliases than this is a configuration mistake, and each one costs every search.
MAX_ADDRESSES = 50


def normalise(address):
    """The form addresses are compared in: stripped, without angle brackets, lower case."""
    return address.strip().strip("<>").strip().lower()


def addresses(*fields):
    """The set of addresses in header values (``Name <a@b>, c@d``) or newline-separated envelope lists."""
    values = []
    for field in fields:
        if isinstance(field, (list, tuple)):
            values.extend(value for value in field if value)  # an empty value makes getaddresses give up on all
        elif field:
            values.append(field.replace("\n", ", "))
    return {normalise(addr) for _name, addr in getaddresses(values) if "@" in addr}


def of_message(row):
    """The participants of a message described by the store's metadata (a dict with FIELDS)."""
    return addresses(*(row.get(field) or "" for field in FIELDS))


def involves(row, wanted):
    """True when one of ``wanted`` (normalised addresses) took part in the message ``row``."""
    return not of_message(row).isdisjoint(wanted)

"""mailarchive-import: bring old mail into a site's workers from a terminal, with a progress meter.

    scripts/mailarchive-import --site inventories/.secrets/lab/import-site.json mbox old.mbox
    scripts/mailarchive-import --site SITE --username alice --password-file pw imap imaps://imap.example.com
    scripts/mailarchive-import --site SITE pst support.pst

The site file (JSON, written by ``playbooks/import.yml -e import_site_file=...``) names the workers and
the importer's token file: {"workers": [{"name", "url", "server_id", "ca_file"}], "token_file",
"max_message_bytes"}.  The same code runs in the Ansible module mailarchive.cluster.import_mail.

Exit status: 0 when every message is archived (imported now, or already present), 1 when a message
failed or the run stopped before the end (run it again to go on), 2 on a usage or source error.
"""

import argparse
import os
import sys
import time

from tqdm import tqdm

from archive_common import importer, mailsources
from archive_common.client import ArchiveApiError, site_apis

DEFAULT_STATE_DIR = os.path.join(os.path.expanduser("~"), ".local", "state", "mailarchive-import")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="mailarchive-import", description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("kind", choices=mailsources.KINDS, help="what the source is")
    parser.add_argument("location", help="the mbox or PST file, the Maildir or .eml folder, or imaps://host[:port]")
    parser.add_argument("--site", required=True, help="the site file: the workers and the importer's token file")
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="where the state and failures files go (%(default)s)")
    parser.add_argument("--mbox-format", choices=mailsources.MBOX_FORMATS, default="mboxrd",
                        help="how the mbox quotes 'From ' lines in bodies (default %(default)s)")
    parser.add_argument("--username", default="", help="IMAP: the account")
    parser.add_argument("--password-file", help="IMAP: a file holding the password or app password "
                        "(else $MAILARCHIVE_IMPORT_PASSWORD); never on the command line")
    parser.add_argument("--folder", action="append", default=[], help="IMAP: a folder to import (repeat; default all)")
    parser.add_argument("--imap-cafile", help="IMAP: the CA file to verify the server with (default the system's)")
    parser.add_argument("--check", action="store_true", help="read the source and ask the workers, import nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress meter (also when stderr is not a terminal)")
    return parser.parse_args(argv)


def load_site(path):
    """The workers (ArchiveApi each) and the message size limit from the site file; one-line errors."""
    try:
        apis, site = site_apis(path)
    except ArchiveApiError as exc:
        raise SystemExit("mailarchive-import: %s" % exc) from None
    return apis, int(site.get("max_message_bytes") or 52000000)


def password(args):
    if args.kind != "imap":
        return ""
    if args.password_file:
        try:
            with open(args.password_file, encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as exc:
            raise SystemExit("mailarchive-import: password file %s: %s" % (args.password_file, exc.strerror)) from None
    if "MAILARCHIVE_IMPORT_PASSWORD" in os.environ:
        return os.environ["MAILARCHIVE_IMPORT_PASSWORD"]
    raise SystemExit("mailarchive-import: IMAP needs --password-file or $MAILARCHIVE_IMPORT_PASSWORD")


def main(argv=None):
    args = parse_args(argv)
    apis, limit = load_site(args.site)
    location = args.location if args.kind == "imap" else os.path.abspath(args.location)
    state_file = importer.state_path(args.state_dir, args.kind, location + (" " + args.username if args.username else ""))
    items = mailsources.read(args.kind, location, limit=limit, mbox_format=args.mbox_format, username=args.username,
                             password=password(args), folders=args.folder, cafile=args.imap_cafile)
    meter = tqdm(total=mailsources.size_of(args.kind, location), unit="B", unit_scale=True, unit_divisor=1000,
                 dynamic_ncols=True, disable=args.no_progress or None, desc=args.kind)
    counted = [0]

    def progress(messages, nbytes):
        counted[0] += messages
        meter.set_postfix_str("%d messages" % counted[0], refresh=False)
        meter.update(nbytes)

    state = importer.State(state_file)
    started = time.monotonic()
    try:
        run = importer.Importer(apis, state, progress, check_only=args.check)
        summary = run.run(items, stop_on=(mailsources.SourceError,))
    finally:
        meter.close()
        state.close()
        for api in apis:
            api.close()
    for line in summary.lines():
        print(line)
    elapsed = time.monotonic() - started
    if summary.imported:
        print("%d messages imported in %.0f s (%.0f msg/s); state %s" % (summary.imported, elapsed, summary.imported / elapsed, state_file))
    else:
        print("nothing new imported; state %s" % state_file)
    if sum(summary.failed.values()):
        print("failures listed in %s.failures" % state_file)
    return 1 if summary.stopped or sum(summary.failed.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

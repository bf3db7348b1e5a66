"""python3 -m archive_store <command>: the store's command line."""

import argparse
import email.utils
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

from archive_common import license as licensing
from archive_store import __version__, config as configuration, crypto, metrics, retention
from archive_store.errors import StoreError

log = logging.getLogger("archive_store")


def _store(args, readonly=False):
    from archive_store.store import Store

    return Store(configuration.load(args.config), readonly=readonly)


def cmd_serve(args) -> int:
    from archive_store import access
    from archive_store.api import ApiServer, HealthServer, tls_context
    from archive_store.service import Ingestor

    conf = configuration.load(args.config)
    store = _store(args)
    ingestor = Ingestor(conf, store)
    ingestor.check_license(force=True)
    api_store = _store(args, readonly=True)
    metrics.register(api_store, ingestor)
    server = ApiServer(conf.api_address(), api_store, access.load_clients(conf.api_clients_file), ingestor.status,
                       tls_context(conf.api_cert_file, conf.api_key_file), access.AccessLog(conf.api_access_log),
                       importer=ingestor.import_batch)
    health = HealthServer(conf.health_address()) if conf.health_listen else None
    if health:
        threading.Thread(target=health.serve_forever, name="health", daemon=True).start()
    stop = threading.Event()

    def shutdown(signum, frame):
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    receiver = None

    def reload(signum, frame):
        """SIGHUP (systemctl reload): read the clients file and the certificate again; a fault keeps the old ones."""
        try:
            server.clients = access.load_clients(conf.api_clients_file)
            server.context = tls_context(conf.api_cert_file, conf.api_key_file)
            if receiver:
                receiver.tls = server.context  # SMTP's STARTTLS uses the API's certificate
        except StoreError as exc:
            log.error("reload refused, the API keeps its clients and certificate: %s", exc)
            return
        log.info("reloaded %d API clients and the certificate", len(server.clients))

    policy = None
    if conf.policy_listen:
        from archive_store.policy import PolicyServer

        policy = PolicyServer(conf.policy_address(), conf, lambda: ingestor.license_error)
        threading.Thread(target=policy.serve_forever, name="policy", daemon=True).start()

    if conf.lmtp_listen or conf.smtp_listen:
        from archive_store.receiver import Receiver

        receiver = Receiver(conf, ingestor, server.context if conf.smtp_listen else None).start()  # the API's certificate

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    signal.signal(signal.SIGHUP, reload)
    worker = threading.Thread(target=ingestor.run, args=(stop,), name="ingest")
    worker.start()
    log.info("archive-store %s serving: server_id=%d spool=%s api=%s", __version__, conf.server_id, conf.spool_dir, conf.api_listen)
    server.serve_forever()
    stop.set()
    if receiver:
        receiver.close()
    if policy:
        policy.shutdown()
    if health:
        health.shutdown()
    worker.join()
    return 0


def cmd_drain(args) -> int:
    from archive_store.service import Ingestor

    conf = configuration.load(args.config)
    ingestor = Ingestor(conf, _store(args))
    if not ingestor.check_license(force=True, report=False):
        print(f"archive_store: {ingestor.license_error}", file=sys.stderr)
        return 3
    count = ingestor.drain()
    print(f"drained {count} spool files")
    return 0


def cmd_ingest(args) -> int:
    """Store files as they are (no transit headers to strip): for imports."""
    from archive_store.spool import Arrival

    store = _store(args)
    conf = store.config
    licensing.load(conf.license_file, conf.server_id, conf.hostname)
    for path in args.files:
        data = Path(path).read_bytes()
        name = f"import:{os.path.abspath(path)}:{os.stat(path).st_mtime_ns}"
        for outcome in store.ingest([Arrival(raw=data, spool_name=name)]):
            print(outcome.log_line())
    return 0


def cmd_search(args) -> int:
    store = _store(args, readonly=True)
    for row in store.index.search(" ".join(args.query), limit=args.limit):
        if args.json:
            print(json.dumps(row, sort_keys=True))
        else:
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(row["date"] or row["arrived"]))
            print(f"{row['id']}  {when}  {row['hdr_from'][:40]:40}  {row['subject'][:60]}")
    return 0


def cmd_get(args) -> int:
    store = _store(args, readonly=True)
    sys.stdout.buffer.write(store.get_raw(args.id))
    sys.stdout.buffer.flush()
    return 0


def cmd_verify(args) -> int:
    store = _store(args, readonly=True)
    if not args.all and not args.ids:
        raise StoreError("verify: expected --all or one or more IDs, found neither")
    checked = bad = 0
    if args.all:
        results = store.verify_all()
    else:
        results = ((i, _verify_one(store, i)) for i in args.ids)
    for archive_id, error in results:
        checked += 1
        if error:
            bad += 1
            print(f"FAIL {error}")
    print(f"verified {checked} messages: {checked - bad} ok, {bad} failed")
    if args.all and not bad:
        metrics.mark_done(store.config.verified_file)
    return 1 if bad else 0


def _verify_one(store, archive_id):
    try:
        store.verify(archive_id)
    except StoreError as exc:
        return str(exc)
    return None


def cmd_export(args) -> int:
    store = _store(args, readonly=True)
    rows = store.index.search(" ".join(args.query), limit=args.limit)
    out = Path(args.out)
    if args.format == "eml":
        out.mkdir(parents=True, exist_ok=True)
        for row in rows:
            (out / f"{row['id']}.eml").write_bytes(store.get_raw(row["id"]))
    else:
        with open(out, "wb") as mbox:
            for row in rows:
                sender = row["env_from"] or email.utils.parseaddr(row["hdr_from"])[1] or "MAILER-DAEMON"
                stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(row["arrived"]))
                mbox.write(f"From {sender} {stamp}\n".encode("utf-8"))
                raw = store.get_raw(row["id"]).replace(b"\r\n", b"\n")
                for line in raw.split(b"\n")[:-1] if raw.endswith(b"\n") else raw.split(b"\n"):
                    stripped = line.lstrip(b">")
                    mbox.write((b">" + line if stripped.startswith(b"From ") else line) + b"\n")
                mbox.write(b"\n")
    print(f"exported {len(rows)} messages to {out} ({args.format})")
    return 0


def cmd_reindex(args) -> int:
    if args.prepare:
        from archive_store.index import LAYOUT, Index, OldLayout
        from archive_store.store import Store

        config = configuration.load(args.config)
        try:
            if config.db_path.exists():
                Index(config.db_path, readonly=True).close()
            print(f"index {config.db_path}: layout {LAYOUT} already, nothing to prepare")
            return 0
        except OldLayout:
            pass
        store = Store(config, recover=False, open_index=False)
        count = store.prepare_layout()
        print(f"prepared layout {LAYOUT} of the index: {count} messages in {store.prepared_path}; the service takes it at its next start")
        return 0
    store = _store(args)
    if args.missing:
        added, removed = store.reconcile_index()
        print(f"index brought up to {store.config.objects_dir}: {added} messages added, {removed} rows removed")
        return 0
    count = store.reindex()
    print(f"reindexed {count} messages from {store.config.objects_dir}")
    return 0


def cmd_snapshot(args) -> int:
    """A consistent copy of the live index, for backups (SQLite's online backup)."""
    store = _store(args, readonly=True)
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    target = sqlite3.connect(tmp)
    try:
        store.index.conn.backup(target)
    finally:
        target.close()
    os.replace(tmp, out)
    print(f"index snapshot written to {out}")
    return 0


def cmd_maintenance(args) -> int:
    """Refuse new mail with 4xx (the gateways send it to other workers), e.g. before a restart."""
    from archive_store.policy import clear_maintenance, maintenance, set_maintenance

    conf = configuration.load(args.config)
    if args.state == "on":
        set_maintenance(conf, " ".join(args.reason) or "maintenance")
        log.warning("maintenance on: new mail is refused with 451 4.3.2")
    elif args.state == "off":
        clear_maintenance(conf)
        log.warning("maintenance off: new mail is accepted")
    print(maintenance(conf) or "off")
    return 0


def cmd_stats(args) -> int:
    from archive_store.policy import maintenance
    from archive_store.spool import Maildir

    store = _store(args, readonly=True)
    conf = store.config
    stats = store.index.stats()
    stats["spool_backlog"] = Maildir(conf.spool_dir).backlog()
    stats["server_id"] = conf.server_id
    stats["maintenance"] = maintenance(conf)
    try:
        lic = licensing.load(conf.license_file, conf.server_id, conf.hostname)
        stats["license"] = lic.as_dict()
        stats["license_error"] = ""
    except licensing.LicenseError as exc:
        stats["license"] = None
        stats["license_error"] = str(exc)
    print(json.dumps(stats, indent=1, sort_keys=True))
    return 0


def cmd_purge(args) -> int:
    store = _store(args)
    removed = retention.purge(store, dry_run=args.dry_run)
    for entry in removed:
        print(f"{'would purge' if args.dry_run else 'purged'} {entry['id']} {entry['message_id'] or '-'}")
    print(f"{len(removed)} messages {'would be' if args.dry_run else ''} purged".replace("  ", " "))
    return 0


def cmd_hold(args) -> int:
    conf = configuration.load(args.config)
    holds = retention.Holds(conf.holds_file, conf.audit_log)
    if args.action == "add":
        holds.add(args.address, args.reason)
    elif args.action == "remove":
        holds.remove(args.address, args.reason)
    for address, info in sorted(holds.load().items()):
        print(f"{address}  {info['reason']}")
    return 0


def cmd_keygen(args) -> int:
    conf = configuration.load(args.config)
    if args.merge:
        added = crypto.merge(conf.key_file, args.merge)
        print(f"{len(added)} keys from {args.merge} added to {conf.key_file}: {' '.join(added) or '-'}")
        return 0
    key_id = crypto.generate(conf.key_file, rotate=args.rotate)
    print(f"key {key_id} written to {conf.key_file}")
    return 0


def cmd_license(args) -> int:
    conf = configuration.load(args.config)
    lic = licensing.load(args.file or conf.license_file, conf.server_id, conf.hostname)
    print(json.dumps(lic.as_dict(), sort_keys=True))
    warning = licensing.expiry_warning(lic)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_blobs(args) -> int:
    """The attachment blobs: how many, how many references, and every one missing or referred to by nothing."""
    store = _store(args, readonly=True)
    rows = store.index.blob_rows()
    problems = store.blob_problems()
    for problem in problems:
        print(f"FAIL {problem}")
    missing = sum(1 for p in problems if ": referred to by " in p)
    print(f"{len(rows)} blobs, {sum(rows.values())} references from messages; "
          f"{len(problems) - missing} unreferenced blobs, {missing} missing blobs")
    return 1 if problems else 0


def cmd_shards(args) -> int:
    """The closed shards of the full-text index; ``--close``: close the live rows into one now."""
    store = _store(args, readonly=not args.close)
    if args.close:
        closed = store.index.close_shard()
        print(f"closed shard {closed['file']}: messages {closed['first_rowid']}-{closed['last_rowid']} in {closed['seconds']:.1f} s"
              if closed else "no live full-text rows: nothing to close")
    report = store.index.shard_report()
    for shard in report:
        print(f"{shard['number']:5d} rows {shard['first_rowid']}-{shard['last_rowid']} {shard['messages']} messages stored,"
              f" {shard['bytes'] or 0} bytes, {shard['file']}" + ("" if shard["bytes"] is not None else " MISSING: run reindex"))
    print(f"{len(report)} closed shards; every {store.config.index_shard_messages or 'never (0)'} messages")
    return 1 if any(shard["bytes"] is None for shard in report) else 0


def cmd_convert(args) -> int:
    """Store the messages stored whole as skeleton and blobs, a batch at a time, each batch verified."""
    from archive_store.store import Store

    store = Store(configuration.load(args.config), recover=False)  # beside the running service: its open batch is not ours
    if store.config.blob_min_bytes <= 0:
        raise StoreError("convert: blob_min_bytes is 0 in the config, so there is nothing to cut out")
    all_ids = store.index.all_ids()
    converted = saved = 0
    for start in range(0, len(all_ids), args.batch):
        batch = all_ids[start:start + args.batch]
        shrunk = {archive_id: store.convert(archive_id) for archive_id in batch if store.index.get(archive_id)}
        for archive_id in (i for i, size in shrunk.items() if size):
            store.verify(archive_id)
        converted += sum(1 for size in shrunk.values() if size)
        saved += sum(shrunk.values())
        print(f"{min(start + args.batch, len(all_ids))} of {len(all_ids)} messages looked at: {converted} converted "
              f"and verified, objects {saved} bytes smaller", flush=True)
    return 0


def cmd_dedupe(args) -> int:
    """The site-wide duplicate pass (archive_common/dedupe.py) over the workers of a site file, as the
    worker role's timer runs it on one worker per site; one line per duplicate, then a summary."""
    from archive_common import dedupe
    from archive_common.client import ArchiveApiError, site_apis

    now = int(time.time())
    try:
        apis, _site = site_apis(args.site, timeout=120)
        plan, report = dedupe.find(apis, now - args.since, now + 1)  # this second's mail too
        removed = [] if args.dry_run else dedupe.remove(apis, plan)
    except ArchiveApiError as exc:
        raise StoreError(f"dedupe: {exc}") from None
    done = {entry["extra"]["id"]: entry for entry in removed}
    for entry in plan:
        held = done.get(entry["extra"]["id"], {}).get("held_by")
        print(f"{'removed' if entry['extra']['id'] in done else 'found'} {entry['extra']['worker']} {entry['extra']['id']}: "
              f"a second delivery of gateway {entry['gateway']} queue ID {entry['queue_id']}, kept as "
              f"{entry['kept']['worker']} {entry['kept']['id']} (sha256 {entry['sha256'][:16]}, {entry['message_id'] or '-'})"
              + (f"; under the hold on {held}, which the kept copy carries" if held else ""))
    print(f"dedupe: {sum(report['listed'].values())} messages listed on {len(apis)} workers in the last {args.since} s; "
          f"{report['same_bytes_on_several_workers']} held by several workers; {len(plan)} duplicate deliveries found, "
          f"{len(removed)} removed; {report['distinct_deliveries_of_the_same_bytes']} distinct deliveries of the same bytes kept")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="archive_store", description="The mailarchive worker's archive store.")
    parser.add_argument("-c", "--config", help=f"config file (default $ARCHIVE_STORE_CONF or {configuration.DEFAULT_PATH})")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="ingest from the spool and serve the HTTP API").set_defaults(func=cmd_serve)
    sub.add_parser("drain", help="ingest what is in the spool now, then exit").set_defaults(func=cmd_drain)
    p = sub.add_parser("ingest", help="store message files as they are")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_ingest)
    p = sub.add_parser("search", help="search: words, from:, to:, subject:, attachment:, msgid:, after:, before:")
    p.add_argument("query", nargs="*")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)
    p = sub.add_parser("get", help="write a message's raw bytes to stdout")
    p.add_argument("id")
    p.set_defaults(func=cmd_get)
    p = sub.add_parser("verify", help="decrypt and re-hash messages")
    p.add_argument("ids", nargs="*")
    p.add_argument("--all", action="store_true")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("export", help="export the messages a query finds")
    p.add_argument("query", nargs="*")
    p.add_argument("--format", choices=("eml", "mbox"), default="eml")
    p.add_argument("--out", required=True, help="a directory (eml) or a file (mbox)")
    p.add_argument("--limit", type=int, default=1_000_000)
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("reindex", help="rebuild the index from the stored messages")
    p.add_argument("--missing", action="store_true",
                   help="only add what the index lacks and drop rows without objects (after a restore)")
    p.add_argument("--prepare", action="store_true",
                   help="upgrade: build this release's index layout beside an earlier release's, while its service runs")
    p.set_defaults(func=cmd_reindex)
    p = sub.add_parser("snapshot", help="write a consistent copy of the live index (for backups)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_snapshot)
    p = sub.add_parser("maintenance", help="refuse new mail with 4xx while on (drain before a restart)")
    p.add_argument("state", choices=["on", "off", "status"])
    p.add_argument("reason", nargs="*", help="shown in the 451 reply and in stats")
    p.set_defaults(func=cmd_maintenance)
    sub.add_parser("stats", help="counts, bytes, spool backlog, license").set_defaults(func=cmd_stats)
    p = sub.add_parser("purge", help="remove messages past retention, except those on hold")
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=cmd_purge)
    p = sub.add_parser("hold", help="legal holds by address")
    p.add_argument("action", choices=("add", "remove", "list"))
    p.add_argument("address", nargs="?", default="")
    p.add_argument("--reason", default="")
    p.set_defaults(func=cmd_hold)
    p = sub.add_parser("dedupe", help="the site-wide duplicate pass over the workers of a site file (no store needed)")
    p.add_argument("--site", required=True, help='JSON: {"workers": [{"name", "url", "ca_file"}], "token_file"}')
    p.add_argument("--since", type=int, default=172800, help="seconds back from now (default two days)")
    p.add_argument("--dry-run", action="store_true", help="report, remove nothing")
    p.set_defaults(func=cmd_dedupe)
    sub.add_parser("blobs", help="check the attachment blobs: none missing, none referred to by nothing").set_defaults(func=cmd_blobs)
    p = sub.add_parser("shards", help="the closed, read-only shards of the full-text index")
    p.add_argument("--close", action="store_true", help="close the live full-text rows into a shard now")
    p.set_defaults(func=cmd_shards)
    p = sub.add_parser("convert", help="store messages stored whole as skeleton and attachment blobs (resumable)")
    p.add_argument("--batch", type=int, default=500, help="messages per batch, verified after each (default 500)")
    p.set_defaults(func=cmd_convert)
    p = sub.add_parser("keygen", help="create the encryption key file")
    p.add_argument("--rotate", action="store_true", help="append a new active key")
    p.add_argument("--merge", metavar="FILE", help="add the older keys of FILE (a restored key file)")
    p.set_defaults(func=cmd_keygen)
    p = sub.add_parser("license", help="check a license file against this worker")
    p.add_argument("--file")
    p.set_defaults(func=cmd_license)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(message)s" if os.environ.get("INVOCATION_ID") else "%(asctime)s %(levelname)s %(message)s",
    )
    try:
        return args.func(args)
    except (StoreError, licensing.LicenseError) as exc:
        print(f"archive_store: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0

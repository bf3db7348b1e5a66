"""Cluster-wide search benchmark on the running lab (make lab).

    python bench/cluster_search.py load   # 1,000,000 messages spread over worker0-4 (tops up; about 30 min)
    python bench/cluster_search.py load --mix realistic -n 10000   # bench/search.py's realistic mix (bench/ui.py's export)
    python bench/cluster_search.py run    # fan-out p50/p95 against one store holding the same messages

``load`` regenerates bench/search.py's one million messages (the same bytes:
``random.Random(0)`` from message 0 on) inside each worker container and
stores message n on worker n % 5 through the store's own ingest code, with
that worker's configuration and key (its store service is stopped
meanwhile). ``run`` copies the single store that ``bench/search.py -n
1000000`` built (/var/tmp/archive-search-bench) into worker0 and serves it
there on port 18025, then times the same queries both ways, alternating:
the collection's fan-out (archive_common.client.search_all, which the
search module uses) over the five workers' APIs, and one request to the
single store. It also checks that both answer alike: for every query with
fewer matches than the limit, the same set of messages.
"""

import argparse
import json
import random
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SINGLE_SRC = Path("/var/tmp/archive-search-bench")
SINGLE_DIR = "/var/lib/archive-bench-single"
SINGLE_PORT = 18025


def docker(*args, check=True):
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def in_container_ingest(args):
    """Runs inside a worker: store this worker's share of the message sequence."""
    from archive_store import config as configuration
    from archive_store.spool import Arrival
    from archive_store.store import Store
    from search import corpus, message, realistic

    store = Store(configuration.load(args.config))
    prefix = "mix" if args.mix == "realistic" else "bench"
    have = store.index.conn.execute(
        f"SELECT count(*) FROM messages WHERE message_id LIKE '<{prefix}-%@bench.example>'").fetchone()[0]
    words, cum_weights, senders = corpus()
    rng = random.Random(0)
    mine, batch, started, stored = 0, [], time.time(), 0
    for number in range(args.messages):
        if args.mix == "short":
            raw = message(rng, words, cum_weights, senders, number)  # every message, to keep the sequence
        if number % args.parts != args.part:
            continue
        mine += 1
        if mine <= have:
            continue
        if args.mix == "realistic":
            raw = realistic(words, cum_weights, senders, number)
        batch.append(Arrival(raw=raw, spool_name=f"{prefix}-{number}"))
        if len(batch) == (1000 if args.mix == "short" else 100):
            store.ingest(batch)
            stored += len(batch)
            batch = []
            if stored % 20000 == 0:
                print(f"part {args.part}: {have + stored} stored ({stored / (time.time() - started):.0f} msg/s)", flush=True)
    if batch:
        store.ingest(batch)
        stored += len(batch)
    print(f"part {args.part}: {have + stored} messages of the sequence, {stored} stored now", flush=True)


def load(args):
    import lab

    workers = lab.workers()
    procs = []
    for part, (worker, contract) in enumerate(workers.items()):
        container = contract["container"]
        docker("exec", container, "mkdir", "-p", "/opt/archive-bench")
        for name in ("search.py", "cluster_search.py"):
            docker("cp", str(HERE / name), f"{container}:/opt/archive-bench/{name}")
        docker("exec", container, "systemctl", "stop", "archive-store")
        procs.append(subprocess.Popen(
            ["docker", "exec", container, "setpriv", f"--reuid={contract['user']}", f"--regid={contract['user']}",
             "--init-groups", "env", f"PYTHONPATH={contract['lib_dir']}:/opt/archive-bench", "python3",
             "/opt/archive-bench/cluster_search.py", "ingest", "--part", str(part), "--parts", str(len(workers)),
             "-n", str(args.messages), "--mix", args.mix, "--config", contract["config_file"]]))
    failed = [worker for worker, proc in zip(workers, procs) if proc.wait() != 0]
    for contract in workers.values():
        docker("exec", contract["container"], "systemctl", "start", "archive-store")
    if failed:
        raise SystemExit(f"ingest failed on {', '.join(failed)}")


def start_single_store(contract):
    container = contract["container"]
    user = contract["user"]
    if docker("exec", container, "test", "-d", SINGLE_DIR, check=False).returncode != 0:
        print(f"copying {SINGLE_SRC} into worker0 ...", flush=True)
        docker("cp", str(SINGLE_SRC), f"{container}:{SINGLE_DIR}")
        conf = (f"[store]\nserver_id = 9\nhostname = archive.example.com\ndata_dir = {SINGLE_DIR}/data\n"
                f"spool_dir = {SINGLE_DIR}/spool/Maildir\nlicense_file = {SINGLE_DIR}/license\n"
                f"key_file = {SINGLE_DIR}/store.key\n[api]\nlisten = 0.0.0.0:{SINGLE_PORT}\n"
                f"clients_file = {contract['clients_file']}\ncert_file = {contract['cert_file']}\n"
                f"key_file = {contract['key_file']}\naccess_log = {SINGLE_DIR}/access.log\nhealth_listen =\n")
        docker("exec", container, "sh", "-c", f"cat > {SINGLE_DIR}/store.conf <<'EOF'\n{conf}EOF\n"
                                              f"chown -R {user}: {SINGLE_DIR}")
    docker("exec", container, "systemctl", "stop", "archive-bench-single", check=False)
    docker("exec", container, "systemctl", "reset-failed", "archive-bench-single", check=False)
    docker("exec", container, "systemd-run", "--unit", "archive-bench-single", f"--uid={user}",
           f"--gid={user}", f"--setenv=PYTHONPATH={contract['lib_dir']}", "python3", "-m", "archive_store",
           "-c", f"{SINGLE_DIR}/store.conf", "serve")


def run(args):
    import lab
    from archive_common import client as api
    from search import corpus, percentiles, queries

    workers = lab.workers()
    cluster = [api.ArchiveApi(name, c["api_url"], c["token"], timeout=60, cafile=c["ca_file"]) for name, c in workers.items()]
    first = next(iter(workers.values()))
    start_single_store(first)
    single = api.ArchiveApi("single", first["api_url"].rsplit(":", 1)[0] + f":{SINGLE_PORT}", first["token"], timeout=60,
                            cafile=first["ca_file"])
    for _attempt in range(120):
        try:
            single.stats()
            break
        except api.ArchiveApiError:
            time.sleep(0.5)
    counts = {a.name: a.stats()["messages"] for a in cluster + [single]}
    print(f"cluster: {sum(counts[w] for w in workers)} messages "
          f"({' '.join(f'{w}={counts[w]}' for w in workers)}); single store: {counts['single']}")
    words, _cum, senders = corpus()
    single_word, from_word = queries(words, senders, args.queries)
    for query in single_word[:20]:  # warm both the way running servers are warm
        api.search_all(cluster, query, args.limit)
        single.search(query, args.limit)
    print(f"{'query':12} {'':14} {'p50':>8} {'p95':>8} {'max':>8}   (ms, limit {args.limit})")
    for label, batch in (("single word", single_word), ("from:+word", from_word)):
        fan, one, agree, compared = [], [], 0, 0
        for number, query in enumerate(batch):
            order = [("fan", lambda: api.search_all(cluster, query, args.limit)),
                     ("one", lambda: single.search(query, args.limit))]
            answers = {}
            for name, call in (order if number % 2 else order[::-1]):
                started = time.perf_counter()
                answers[name] = call()
                (fan if name == "fan" else one).append((time.perf_counter() - started) * 1000)
            if len(answers["one"]) < args.limit:
                compared += 1
                agree += {r["sha256"] for r in answers["fan"]} == {r["sha256"] for r in answers["one"]}
        f50, f95, fmax = percentiles(fan)
        o50, o95, omax = percentiles(one)
        print(f"{label:12} {'fan-out (5)':14} {f50:8.1f} {f95:8.1f} {fmax:8.1f}")
        print(f"{label:12} {'single store':14} {o50:8.1f} {o95:8.1f} {omax:8.1f}   "
              f"fan-out/single p50 {f50 / o50:.2f} p95 {f95 / o95:.2f}")
        print(f"{label:12} same messages both ways for {agree} of {compared} queries with fewer than {args.limit} matches")
    print(json.dumps({"cluster": counts}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("load")
    p.add_argument("-n", "--messages", type=int, default=1_000_000)
    p.add_argument("--mix", choices=("short", "realistic"), default="short",
                   help="bench/search.py's short messages (the search benchmark's) or its realistic mix")
    p = sub.add_parser("ingest")
    p.add_argument("--part", type=int, required=True)
    p.add_argument("--parts", type=int, required=True)
    p.add_argument("-n", "--messages", type=int, default=1_000_000)
    p.add_argument("--mix", choices=("short", "realistic"), default="short")
    p.add_argument("--config", default="/etc/archive-store/store.conf")
    p = sub.add_parser("run")
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--limit", type=int, default=50)
    args = parser.parse_args()
    {"load": load, "ingest": in_container_ingest, "run": run}[args.command](args)


if __name__ == "__main__":
    main()

"""What Prometheus's scraping costs ingest: one store, the same spool drained with and without scraping.

    python3 bench/metrics_cost.py [-n 20000] [--rounds 2]

A real ``archive_store serve`` (Debian's python3, as on a worker) drains a spool of ``-n``
generated 2 kB messages; meanwhile a scraper reads GET /api/v1/metrics over TLS with a
metrics token: not at all, every 15 s (Prometheus's interval here), and every second (to
make the cost visible). The three runs alternate for ``--rounds`` rounds, each on a fresh
store, so that the machine's drift hits all of them alike. Prints msg/s per run and the
ratio of each scraping run to the unscraped one of its round, and the time of one scrape.
"""

import argparse
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]
from storeenv import StoreEnv  # noqa: E402 (the tests' store set-up: config, license, key, CA, tokens)


def message(n):
    body = "".join(f"line {i} of message {n}, text that compresses like mail does\r\n" for i in range(30))
    return (f"From: sender{n % 97}@customer.example\r\nTo: rcpt{n % 89}@customer.example\r\n"
            f"Subject: metrics cost {n}\r\nMessage-ID: <cost-{n}@bench>\r\n\r\n{body}").encode()


def scraper(env, every, stop, times):
    request = urllib.request.Request(env.url + "/api/v1/metrics", headers={"Authorization": f"Bearer {env.metrics_token}"})
    context = env.tls()
    while not stop.wait(every):
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            response.read()
        times.append(time.perf_counter() - started)


def run(count, every):
    with tempfile.TemporaryDirectory(prefix="metrics-cost-") as tmp:
        env = StoreEnv(Path(tmp))
        for n in range(count):
            env.deliver(message(n), name=f"{time.time_ns()}.V1I{n}M1.worker0")
        started = time.perf_counter()
        env.serve(batch_size=200)
        stop, times = threading.Event(), []
        thread = threading.Thread(target=scraper, args=(env, every, stop, times), daemon=True) if every else None
        if thread:
            thread.start()
        new = env.spool / "new"
        while any(new.iterdir()):
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        stop.set()
        env.stop()
        return count / seconds, times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    ratios = {15: [], 1: []}
    scrapes = []
    for round_ in range(1, args.rounds + 1):
        base, _none = run(args.n, 0)
        print(f"round {round_}: no scraping        {base:8.1f} msg/s")
        for every in (15, 1):
            rate, times = run(args.n, every)
            scrapes += times
            ratios[every].append(rate / base)
            print(f"round {round_}: scraped every {every:2d} s {rate:8.1f} msg/s  ratio {rate / base:.3f}  ({len(times)} scrapes)")
    for every, values in ratios.items():
        print(f"scraping every {every:2d} s: ingest rate {statistics.mean(values):.3f} of unscraped (mean of {len(values)} rounds)")
    if scrapes:
        print(f"one scrape: median {statistics.median(scrapes) * 1000:.1f} ms, max {max(scrapes) * 1000:.1f} ms ({len(scrapes)} scrapes)")


if __name__ == "__main__":
    main()

"""Import throughput into the running lab's five workers (make lab), through the workers' API.

    python bench/import.py                 # 50,000 messages of about 20 kB from one mbox
    python bench/import.py -n 5000         # a quicker look

Writes a generated mbox (each message unique: a text body and a base64 PDF-like attachment, about 20 kB
in all) to /var/tmp, then imports it with the importer the command line and the module use
(archive_common.importer), into the lab's workers as the importer client (playbooks/import.yml writes
the site file). Prints, from the same run:

* the source ceiling: reading and hashing the mbox alone, with nothing sent;
* the import: msg/s and MB/s, first message read to last committed, and its ratio to the ceiling;
* a second run over the same mbox with a fresh state file: every message found already present.

Each message is a new one (a run number in its headers), so a run never meets the last run's mail.
"""

import argparse
import base64
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from archive_common import importer, mailsources  # noqa: E402
from archive_common.client import ArchiveApi  # noqa: E402

SITE_FILE = ROOT / "inventories" / ".secrets" / "lab" / "import-site.json"
WORDS = ("invoice contract payment shipment quarterly report meeting agenda budget forecast approval review "
         "customer supplier delivery schedule project milestone risk audit compliance policy").split()


def generate(path: Path, count: int, run: str) -> int:
    rng = random.Random(run)
    total = 0
    with open(path, "wb") as out:
        for number in range(count):
            body = "\n".join(" ".join(rng.choice(WORDS) for _w in range(12)) for _line in range(110))
            attachment = rng.randbytes(9000)
            encoded = base64.encodebytes(attachment).decode()
            raw = (f"From: Sender {number % 997} <sender{number % 997}@customer.example>\n"
                   f"To: team{number % 89}@example.com\nSubject: {rng.choice(WORDS)} {number} ({run})\n"
                   f"Date: Mon, 02 Feb 2015 14:{number % 60:02d}:11 +0100\nMessage-ID: <import-{run}-{number}@bench.example>\n"
                   "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b1\"\n\n--b1\n"
                   "Content-Type: text/plain; charset=utf-8\n\n" + body + "\n--b1\n"
                   "Content-Type: application/pdf; name=\"report.pdf\"\nContent-Transfer-Encoding: base64\n"
                   "Content-Disposition: attachment; filename=\"report.pdf\"\n\n" + encoded + "--b1--\n").encode()
            out.write(b"From sender@customer.example Mon Feb  2 14:38:11 2015\n" + raw + b"\n")
            total += len(raw)
    return total


def apis_of(site):
    token = Path(site["token_file"]).read_text().strip()
    return [ArchiveApi(w["name"], w["url"], token, timeout=300, server_id=w["server_id"], cafile=w["ca_file"])
            for w in site["workers"]]


def run_import(path: Path, site, state_dir: str):
    apis = apis_of(site)
    state = importer.State(importer.state_path(state_dir, "mbox", str(path)))
    started = time.perf_counter()
    try:
        summary = importer.Importer(apis, state).run(mailsources.read_mbox(str(path), "mboxrd", site["max_message_bytes"]))
    finally:
        state.close()
        for api in apis:
            api.close()
    return summary, time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("-n", "--messages", type=int, default=50000)
    args = parser.parse_args()
    if not SITE_FILE.exists():
        subprocess.run(["ansible-playbook", "-i", "inventories/lab", "playbooks/import.yml", "-e", f"import_site_file={SITE_FILE}"],
                       cwd=ROOT, check=True)
    site = json.loads(SITE_FILE.read_text())
    run = f"r{int(time.time())}"
    path = Path("/var/tmp") / f"import-bench-{run}.mbox"
    try:
        started = time.perf_counter()
        raw_bytes = generate(path, args.messages, run)
        print(f"generated {args.messages} messages, {raw_bytes / 1e6:.0f} MB (mean {raw_bytes / args.messages / 1e3:.1f} kB) "
              f"in {time.perf_counter() - started:.0f} s: {path}")
        started = time.perf_counter()
        for item in mailsources.read_mbox(str(path), "mboxrd"):
            hashlib.sha256(item.raw).hexdigest()
        ceiling = time.perf_counter() - started
        print(f"source ceiling (read and hash only): {args.messages / ceiling:8.0f} msg/s {raw_bytes / ceiling / 1e6:6.1f} MB/s")
        with tempfile.TemporaryDirectory() as state_dir:
            summary, elapsed = run_import(path, site, state_dir)
            print(f"import into {len(site['workers'])} workers:      {summary.imported / elapsed:8.0f} msg/s "
                  f"{summary.imported_bytes / elapsed / 1e6:6.1f} MB/s  ({summary.imported} imported in {elapsed:.0f} s, "
                  f"ratio {ceiling / elapsed:.3f} of the ceiling)")
            assert summary.imported == args.messages and not summary.failed and not summary.stopped, summary.lines()
        with tempfile.TemporaryDirectory() as state_dir:  # no state: every message found by its digest
            again, elapsed = run_import(path, site, state_dir)
            print(f"second run, fresh state:          {again.present / elapsed:8.0f} msg/s  "
                  f"({again.present} already present, {again.imported} imported)")
    finally:
        os.unlink(path)


if __name__ == "__main__":
    main()

"""CPU per archived message, per component, from cgroup accounting, on the running lab (make lab).

    python bench/cpu.py                                   # both loads, each path: about 10 minutes
    python bench/cpu.py --load smtp-source --path primary -m 3000

Each run sends one load along one path and reads, before and after, the CPU time
the kernel charged to each part of the lab:

- every container's cgroup (cpuacct.usage on the host: everything in it);
- inside it, each systemd unit's cgroup (cpu.stat of the container's own
  cgroup2 hierarchy): postfix's ``postfix@-.service``, the store's
  ``archive-store.service`` and the DNS server's ``named.service``.

A container's time outside those units (journald, rsyslog writing mail.log,
the exporters, sshd) is its "other". Before each run the lab is watched idle
for ``--idle`` seconds, and each part's idle rate times the run's duration is
taken off, so Prometheus's scrapes and timers do not count as the load's.

Paths:
- ``worker0``: sent from archive-gw2 straight to worker0 (workers take SMTP only
  from the gateways), as bench/cluster.py's "worker0 alone".
- ``primary``: sent from the ns container to the gateway's journal address,
  with the gateway's copy to the DR site taken out of its virtual map for the
  run (put back after it): the gateway, its postfix and the five workers.
- ``dr``: the same with the copy to the DR site, as the lab runs: the DR
  site's containers are added, and the run ends when both sites hold the load.

The sender's container (archive-gw2, or ns) counts only its units: its "other"
is the load generator. ns's named answers the gateway's MX lookups.

Loads:
- ``smtp-source``: ``smtp-source -s 20 -m N -l 100000`` (bodies compress 200:1);
- ``realistic``: bench/search.py's realistic mix (text and HTML, median 20 kB,
  an incompressible attachment, a tail to 10 MB), each message its own, sent by
  20 SMTP sessions from the same container with Python's smtplib, with
  STARTTLS when the server offers it (as the gateway's postfix does).

Prints, per run, the CPU-milliseconds per archived message of each component
and end to end (every component but the sender), and the run's archive rate.

With ``--perf`` (root, and Debian's ``linux-perf``), ``perf record -a`` samples
the whole machine during the load's window, and the run also prints each
process's share: CPU-ms a message per role (gateway, worker, ...) and command
(smtpd, cleanup, smtp, python3 for the store), and how much of it the kernel
spent (network stack, file writes) on the process's behalf. Each sampled thread
is placed in its container from /proc, read every half second while the load
runs (postfix's processes live for up to 100 messages, so none is missed). Work
that is not the load's (a backup, a timer) shows under its own process's name.
"""

import argparse
import concurrent.futures
import contextlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import lab
from archive_common.client import ArchiveApi, ArchiveApiError
from cluster import DIRECT_SOURCE, GATEWAY_IP, PREFIX, SOURCE, sh

HERE = Path(__file__).resolve().parent
# The units measured on their own: their cgroups under the container's system.slice, and the row's name.
UNITS = {"system-postfix.slice/postfix@-.service": "postfix", "archive-store.service": "store", "named.service": "dns"}
GATEWAY_VIRTUAL = "/etc/postfix/virtual"
# Connection reuse over TLS needs this service (Debian's master.cf has it commented out).
TLSPROXY = "tlsproxy unix - - y - 0 tlsproxy"
MIX_DIR = "/var/lib/archive-cpu-mix"  # the realistic mix's messages in the sender's container
LOAD_COMMANDS = ("smtp-source", "python3")  # what sends the load in the sender's container

SENDER = r'''
import concurrent.futures, os, smtplib, ssl, sys
folder, host, port, rcpt, sessions = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
names = sorted(os.listdir(folder))
tls = ssl.create_default_context()
tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE  # as the gateway's smtp_tls_security_level = may
def send(name):
    with open(os.path.join(folder, name), "rb") as f, smtplib.SMTP(host, port, timeout=300) as smtp:
        smtp.ehlo()
        if smtp.has_extn("starttls"):  # as postfix does: TLS when the server offers it
            smtp.starttls(context=tls)
        smtp.sendmail("bench@customer.example", [rcpt], f.read())
with concurrent.futures.ThreadPoolExecutor(sessions) as pool:
    list(pool.map(send, names))
'''


def lab_containers():
    names = subprocess.run(["docker", "ps", "--format", "{{.Names}} {{.ID}}"], capture_output=True, text=True,
                           check=True).stdout.split("\n")
    return {name[len(PREFIX):]: cid for name, cid in (line.split() for line in names if line.startswith(PREFIX))}


def container_usage(cid):
    """Seconds of CPU the container's cgroup was charged (cgroup v1 cpuacct, or cgroup v2 cpu.stat)."""
    full = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", cid], capture_output=True, text=True,
                          check=True).stdout.strip()
    for path in (f"/sys/fs/cgroup/cpuacct/docker/{full}/cpuacct.usage",
                 f"/sys/fs/cgroup/system.slice/docker-{full}.scope/cpu.stat"):
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            continue
        return int(text) / 1e9 if path.endswith("usage") else int(text.split()[1]) / 1e6
    raise SystemExit(f"no CPU accounting found for container {cid}")


def unit_usage(name):
    """{unit: seconds} of the units of UNITS that run in the container (its own cgroup2 hierarchy)."""
    script = ("for u in " + " ".join(UNITS) + "; do for root in /sys/fs/cgroup/unified /sys/fs/cgroup; do "
              "f=$root/system.slice/$u/cpu.stat; [ -r $f ] && { echo \"$u $(sed -n 's/^usage_usec //p' $f)\"; break; }; "
              "done; done")
    out = sh(name, script, check=False).stdout.split("\n")
    return {unit: int(value) / 1e6 for unit, value in (line.split() for line in out if line.strip())}


def sample(containers):
    """{(container, part): seconds} for every lab container: its units and its "other" (the rest)."""
    def one(item):
        name, cid = item
        units = unit_usage(name)
        total = container_usage(cid)
        parts = {(name, UNITS[u]): s for u, s in units.items()}
        parts[(name, "other")] = total - sum(units.values())
        return parts

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        result = {}
        for parts in pool.map(one, containers.items()):
            result.update(parts)
    return result, time.monotonic()


def delta(before, after):
    (a, t0), (b, t1) = before, after
    return {key: b[key] - a.get(key, 0.0) for key in b}, t1 - t0


def role(container):
    """What a container is in the lab: the gateways, the workers and the DR site are each summed."""
    if container.startswith("dr-"):
        return "DR site"
    if container.startswith("archive-gw"):
        return "gateway"
    return "worker" if container.startswith("worker") else container


def component(container, part):
    """The row a container's part is reported under."""
    name = role(container)
    if name == "DR site":
        return "DR site (all of it)"
    if name in ("gateway", "worker"):
        return f"{name} {part}"
    if part == "dns":
        return "DNS (named)"
    return f"{container} (rest of the lab)"


def realistic_folder(count, first):
    """A folder of ``count`` realistic-mix messages numbered from ``first`` (each run's its own: the store
    would otherwise see the same bytes again)."""
    from search import corpus, realistic

    words, cum_weights, senders = corpus()
    folder = Path(tempfile.mkdtemp(prefix="archive-cpu-mix-"))
    total = 0
    for number in range(first, first + count):
        raw = realistic(words, cum_weights, senders, number)
        (folder / f"{number}.eml").write_bytes(raw)
        total += len(raw)
    return folder, total


def prepare(args, source, target, recipient):
    """Make the load ready in ``source`` (a container) for ``target`` (host:port); return (the command that
    sends it, its bytes). The realistic mix is generated and copied in before the run, not during it."""
    if args.load == "smtp-source":
        return (["docker", "exec", PREFIX + source, "smtp-source", "-s", str(args.sessions), "-m", str(args.messages),
                 "-l", str(args.length), "-f", "bench@customer.example", "-t", recipient, target],
                args.messages * args.length)
    folder, total = realistic_folder(args.messages, 20_000_000 + random.SystemRandom().randrange(10 ** 9) * 10_000)
    try:
        sh(source, f"rm -rf {MIX_DIR}", check=False)
        subprocess.run(["docker", "cp", str(folder), f"{PREFIX}{source}:{MIX_DIR}"], check=True)  # not /tmp: a tmpfs
    finally:
        shutil.rmtree(folder)
    host, port = target.rsplit(":", 1)
    return (["docker", "exec", "-i", PREFIX + source, "python3", "-", MIX_DIR, host, port, recipient, str(args.sessions)],
            total)


def stored(workers):
    """{worker: messages it holds} for the workers (name -> contract), from each store's API."""
    counts = {}
    for name, contract in workers.items():
        api = ArchiveApi(name, contract["api_url"], contract["token"], 10, cafile=contract["ca_file"])
        for _attempt in range(120):
            try:
                counts[name] = api.stats()["messages"]
                break
            except ArchiveApiError:
                time.sleep(0.25)
        else:
            raise SystemExit(f"{name}'s store API did not answer for 30 s")
    return counts


def until(workers, before, want, timeout=3600):
    """Wait until the workers hold ``want`` more messages than ``before``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if sum(stored(workers).values()) - sum(before.values()) >= want:
            return
        time.sleep(0.5)
    raise SystemExit(f"the load was not archived within {timeout} s")


def set_dr_copy(on):
    """Take the DR site's address out of the gateway's virtual map (on=False), or put the role's map back."""
    if on:
        sh("archive-gw", f"[ -f {GATEWAY_VIRTUAL}.cpu-bench ] && mv {GATEWAY_VIRTUAL}.cpu-bench {GATEWAY_VIRTUAL}; "
                         f"postmap {GATEWAY_VIRTUAL} && postfix reload")
    else:
        # A backup left by a run that was killed is the role's map: keep it.
        sh("archive-gw", f"{{ [ -f {GATEWAY_VIRTUAL}.cpu-bench ] || cp -p {GATEWAY_VIRTUAL} {GATEWAY_VIRTUAL}.cpu-bench; }} && "
                         f"sed -i -E 's/^([^#][^ ]* [^,]+),.*/\\1/' {GATEWAY_VIRTUAL} && postmap {GATEWAY_VIRTUAL} && "
                         "postfix reload")


def gateway_settings(settings):
    """Set main.cf parameters (``name=value``) and master.cf services (``service/type=entry``, as postconf -M takes
    them) on archive-gw and reload; return the postconf arguments that put back what was there."""
    undo = []
    for setting in settings:
        name = setting.split("=", 1)[0].strip()
        flag = "M" if "/" in name else ""
        was = sh("archive-gw", f"postconf -{flag or 'n'} {name}", check=False).stdout.strip()
        if not was:
            undo.append(f"-{flag}X {name}")
        else:
            undo.append(f"-{flag}e '{name}={was}'" if flag else f"-e '{was}'")
        sh("archive-gw", f"postconf -{flag}e '{setting}'")
    sh("archive-gw", "postfix reload")
    return undo


def restore_gateway(undo):
    for arguments in undo:
        sh("archive-gw", f"postconf {arguments}")
    if undo:
        sh("archive-gw", "postfix reload")


class Profile:
    """``perf record -a`` over a window, and the lab container each sampled thread ran in."""

    def __init__(self, containers):
        self.ids = {cid: name for name, cid in containers.items()}  # short container ID -> lab name
        self.where = {}  # thread id -> lab name
        self.folder = Path(tempfile.mkdtemp(prefix="archive-cpu-perf-"))
        self.done = threading.Event()
        self.watcher = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self):
        if shutil.which("perf") is None:
            raise SystemExit("--perf needs perf (Debian's linux-perf) on this machine")
        self.perf = subprocess.Popen(["perf", "record", "-a", "-q", "-e", "cpu-clock", "-F", "499",
                                      "-o", str(self.folder / "perf.data")], stderr=subprocess.PIPE, text=True)
        time.sleep(1)  # perf's start-up, so that the load's first second is sampled
        if self.perf.poll() is not None:
            shutil.rmtree(self.folder)
            raise SystemExit(f"perf record did not start: {self.perf.stderr.read().strip()}")
        self.watcher.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.watcher.join()
        self.perf.send_signal(signal.SIGINT)
        if self.perf.wait(timeout=60) not in (0, -signal.SIGINT) and not exc[0]:  # perf ends by SIGINT once written
            raise SystemExit(f"perf record failed: {self.perf.stderr.read().strip()}")

    def _watch(self):
        while not self.done.wait(0.5):
            for proc in Path("/proc").iterdir():
                if proc.name.isdigit():
                    self._place(proc)

    def _place(self, proc):
        try:
            cgroup = (proc / "cgroup").read_text()
            tasks = [task.name for task in (proc / "task").iterdir()]
        except OSError:
            return  # it ended
        for cid, name in self.ids.items():
            if f"/docker/{cid}" in cgroup or f"docker-{cid}" in cgroup:
                for tid in tasks:
                    self.where[int(tid)] = name
                return

    def samples(self):
        """(container, command, CPU-seconds, of it in the kernel) for each thread and shared object; the container is
        "host" for the machine's own processes (dockerd, for one: it answers the containers' DNS on 127.0.0.11)."""
        try:
            report = subprocess.run(["perf", "report", "-i", str(self.folder / "perf.data"), "--stdio", "-q", "--no-children",
                                     "-g", "none", "--sort", "pid,dso", "-F", "period,pid,dso", "-t", "\t"],
                                    capture_output=True, text=True, check=True).stdout
        finally:
            shutil.rmtree(self.folder)
        for line in report.splitlines():
            fields = [field.strip() for field in line.split("\t")]
            if len(fields) != 3:
                continue  # a blank line between sections
            period, thread, dso = fields
            tid, command = thread.split(":", 1)
            if int(tid) > 0:  # 0 is the idle loop
                seconds = int(period) / 1e9
                yield self.where.get(int(tid), "host"), command, seconds, seconds if dso == "[kernel.kallsyms]" else 0.0


def print_profile(profile, sender, messages):
    """Each role's commands by CPU-ms a message, with the kernel's part of each."""
    roles = {}
    for container, command, seconds, kernel in profile.samples():
        if container == sender and command in LOAD_COMMANDS:
            continue
        total, in_kernel = roles.get((role(container), command), (0.0, 0.0))
        roles[(role(container), command)] = (total + seconds, in_kernel + kernel)
    print("  by process (perf, the machine sampled at 499 Hz during the load):")
    for (name, command), (seconds, kernel) in sorted(roles.items(), key=lambda item: -item[1][0]):
        if seconds * 1000 / messages >= 0.05:
            print(f"    {name:10s} {command:16s} {seconds * 1000 / messages:6.2f} CPU-ms/msg, {kernel / seconds:4.0%} in the kernel")
    lab_total = sum(cpu[0] for key, cpu in roles.items() if key[0] != "host")
    host_total = sum(cpu[0] for key, cpu in roles.items() if key[0] == "host")
    print(f"    the lab's containers {lab_total * 1000 / messages:.2f} CPU-ms/msg; the machine's own processes "
          f"{host_total * 1000 / messages:.2f} (dockerd, perf, this script)")


def run(args, path, primary, dr):
    containers = lab_containers()
    if path != "dr":
        containers = {n: c for n, c in containers.items() if not n.startswith("dr-")}
    sender = {"worker0": DIRECT_SOURCE, "primary": SOURCE, "dr": SOURCE}[path][len(PREFIX):]
    workers = {"worker0": primary["worker0"]} if path == "worker0" else {**primary, **(dr if path == "dr" else {})}
    want = args.messages * (2 if path == "dr" else 1)

    idle0 = sample(containers)
    time.sleep(args.idle)
    idle, idle_s = delta(idle0, sample(containers))

    if path == "worker0":
        command, sent = prepare(args, sender, f"{primary['worker0']['address']}:25", "archive@archive.example.com")
    else:
        command, sent = prepare(args, sender, f"{GATEWAY_IP}:25", "archive@archive-gw.example.com")
    count = stored(workers)
    profile = Profile(containers) if args.perf else contextlib.nullcontext()
    before = sample(containers)
    with profile:
        subprocess.run(command, input=SENDER if args.load == "realistic" else None, text=True, capture_output=True,
                       check=True)
        until(workers, count, want)
    if args.load == "realistic":
        sh(sender, f"rm -rf {MIX_DIR}", check=False)
    spread = {name: held - count[name] for name, held in stored(workers).items() if not name.startswith("dr-")}
    used, seconds = delta(before, sample(containers))

    rows = {}
    for (container, part), cpu in used.items():
        if container == sender and part == "other":
            continue  # the load generator (smtp-source or smtplib) runs in the container's "other"
        rows.setdefault(component(container, part), 0.0)
        rows[component(container, part)] += max(cpu - idle.get((container, part), 0.0) * seconds / idle_s, 0.0)
    per_message = {name: cpu * 1000 / args.messages for name, cpu in rows.items()}
    settings = "".join(" " + setting for setting in args.gateway_set)
    print(f"\n{args.load} load, path {path}{settings}: {args.messages} messages ({sent / args.messages / 1000:.1f} kB mean) "
          f"archived{' by both sites' if path == 'dr' else ''} in {seconds:.1f} s = {args.messages / seconds:.1f} msg/s; "
          f"idle rates over {idle_s:.0f} s taken off")
    for name, ms in sorted(per_message.items(), key=lambda item: -item[1]):
        if ms >= 0.05:
            print(f"  {name:34s} {ms:8.2f} CPU-ms/msg")
    print(f"  {'end to end':34s} {sum(per_message.values()):8.2f} CPU-ms/msg")
    if len(spread) > 1:
        mean = sum(spread.values()) / len(spread)
        print(f"  spread: {' '.join(f'{name}={got}' for name, got in spread.items())} "
              f"(each within {max(abs(got - mean) for got in spread.values()) / mean:.1%} of the mean)")
    if args.perf:
        print_profile(profile, sender, args.messages)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load", choices=["smtp-source", "realistic"], action="append")
    parser.add_argument("--path", choices=["worker0", "primary", "dr"], action="append")
    parser.add_argument("-m", "--messages", type=int, default=3000)
    parser.add_argument("-l", "--length", type=int, default=100000, help="smtp-source's message length")
    parser.add_argument("-s", "--sessions", type=int, default=20)
    parser.add_argument("--idle", type=float, default=20, help="seconds the idle lab is watched before each run")
    parser.add_argument("--gateway-set", action="append", default=[], metavar="NAME=VALUE",
                        help="a main.cf setting, or a master.cf service as service/type=entry, on archive-gw for these runs "
                             "(put back after them), e.g. smtp_connection_cache_on_demand=yes")
    parser.add_argument("--gateway-reuse", type=int, metavar="N",
                        help="the gateway reuses each TLS connection to a worker for up to N messages: tlsproxy in "
                             "its master.cf and the three main.cf settings, for these runs")
    parser.add_argument("--perf", action="store_true",
                        help="also sample the machine with perf during each load and print CPU-ms a message by process")
    args = parser.parse_args()
    if args.gateway_reuse:
        args.gateway_set += [f"tlsproxy/unix={TLSPROXY}", "smtp_connection_cache_on_demand=yes",
                             "smtp_tls_connection_reuse=yes", f"smtp_connection_reuse_count_limit={args.gateway_reuse}"]
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit("cpu.py: terminated; the gateway's settings put back"))
    primary = lab.workers()
    dr = lab.workers("inventories/lab-dr")
    undo = gateway_settings(args.gateway_set)
    try:
        runs(args, primary, dr)
    finally:
        restore_gateway(undo)
    return 0


def runs(args, primary, dr):
    for load in args.load or ["smtp-source", "realistic"]:
        for path in args.path or ["worker0", "primary", "dr"]:
            args.load = load
            if path == "primary":
                set_dr_copy(False)
            try:
                run(args, path, primary, dr)
            finally:
                if path == "primary":
                    set_dr_copy(True)


if __name__ == "__main__":
    raise SystemExit(main())

"""Faults on the running cluster; each ends by reconciling what was sent against what is archived."""

import re
import time


from conftest import playbook
from helpers import accepts_tcp, docker, wait_system_running, wait_until
from mailflow import Load, make_messages, send, summary, wait_archived


def rcpt_from_gateway(site, worker):
    """What `worker` answers the gateway at MAIL FROM and RCPT TO (the first answer that is not 250), asked from the
    gateway itself over STARTTLS. Postfix's policy check answers at RCPT; the store receiving SMTP itself at MAIL."""
    script = ("import smtplib,ssl,sys; s=smtplib.SMTP(sys.argv[1], 25, timeout=20); s.ehlo('archive-gw.example.com');"
              "s.starttls(context=ssl._create_unverified_context()); s.ehlo('archive-gw.example.com');"
              "code, text = s.mail('journal@customer.example'); code, text = s.rcpt(sys.argv[2]) if code == 250 else (code, text);"
              "print(code, text.decode()); s.quit()")
    out = docker("exec", site.gateways[0], "python3", "-c", script, site.ip[worker], f"archive@{site.archive_domain}")
    code, _sep, text = out.stdout.strip().partition(" ")
    return int(code), text


def stats(site, worker):
    return site.client(worker).stats()


def test_an_expired_license_on_one_worker_defers_its_mail_to_the_others(site):
    worker = "worker4"
    license_file = site.contract[worker]["conf_dir"] + "/license"
    original = docker("exec", worker, "cat", license_file).stdout
    expired = original.replace(original.split("expiry=")[1].split(",")[0], "1715143432")
    docker("exec", worker, "sh", "-c", f"printf '%s' '{expired}' > {license_file}")
    try:
        for _n in range(60):
            code, text = rcpt_from_gateway(site, worker)
            if code != 250:
                break
            time.sleep(1)
        assert code == 451 and "refuses mail for now" in text and "expiry" in text, (code, text)
        state = stats(site, worker)
        assert state["ingesting"] is False and "expiry" in state["license_error"]

        started = time.time()
        tag = f"license{int(started)}"
        messages = make_messages(tag, 100)
        send(site.ip[site.gateways[0]], site.journal_address, messages)
        wanted, found = wait_archived(site, tag, messages, timeout=240)
        assert summary("expired license on worker4", messages, found, started) == (0, 0)
        assert not any(copies[0][0] == worker for copies in found.values())
        assert stats(site, worker)["spool_backlog"] == 0
    finally:
        docker("exec", worker, "sh", "-c", f"printf '%s' '{original}' > {license_file}")
    for _n in range(60):
        code, _text = rcpt_from_gateway(site, worker)
        if code == 250:
            break
        time.sleep(1)
    assert code == 250


def test_a_full_store_disk_defers_then_everything_lands_once(site):
    """worker3's store moves onto a 48 MB filesystem that then fills up; space comes back; nothing is lost."""
    worker = "worker3"
    data = site.contract[worker]["data_dir"]
    conf = site.contract[worker]["config_file"]

    def sh(command):
        return docker("exec", worker, "sh", "-c", command).stdout

    sh(f"systemctl stop archive-store && rm -rf /root/store-before && cp -a {data} /root/store-before"
       f" && mount -t tmpfs -o size=48m,mode=0700 tmpfs {data} && chown {site.contract[worker]['user']}: {data}"
       f" && cp -a /root/store-before/. {data}/ && sed -i 's/^min_free_mb = .*/min_free_mb = 8/' {conf}"
       " && systemctl start archive-store")
    try:
        free_mb = int(sh(f"df -m --output=avail {data} | tail -1").strip())
        sh(f"fallocate -l {free_mb - 12}M {data}/filler")  # leaves about 12 MB: room for a few messages
        started = time.time()
        tag = f"diskfull{int(started)}"
        messages = make_messages(tag, 200, size=100_000)
        send(site.ip[site.gateways[0]], site.journal_address, messages)
        time.sleep(10)
        log = docker("exec", site.gateways[0], "cat", "/var/log/postfix.log").stdout
        assert re.search(rf"\[{re.escape(site.ip[worker])}\] said: 452 4\.3\.1 .*archive store (data|spool) filesystem", log) or \
            "No space left" in stats(site, worker)["last_error"], "worker3 neither deferred nor refused"
        sh(f"rm -f {data}/filler")
        wanted, found = wait_archived(site, tag, messages, timeout=240)
        assert summary("store disk full on worker3", messages, found, started) == (0, 0)
        out = docker("exec", worker, "archive_store", "verify", "--all", check=False)
        assert out.returncode == 0, out.stdout[-500:]
    finally:
        # Back onto the container's own filesystem, with everything stored meanwhile.
        sh(f"systemctl stop archive-store; rm -f {data}/filler; rm -rf /root/store-after && cp -a {data} /root/store-after"
           f" && umount {data} && rm -rf {data}/* && cp -a /root/store-after/. {data}/"
           f" && sed -i 's/^min_free_mb = .*/min_free_mb = 512/' {conf} && systemctl start archive-store")


def under_load(site, name, count, fault, timeout=300, allow_resent_duplicates=False):
    """Run ``fault`` while ``count`` messages stream into the gateway, then reconcile sent against archived."""
    started = time.time()
    tag = f"{name.split()[0]}{int(started)}"
    messages = make_messages(tag, count, size=2000)
    load = Load(site.ip[site.gateways[0]], site.journal_address, messages, pause=0.01)
    load.start()
    fault(load)
    load.join(timeout)
    assert not load.is_alive(), f"{name}: the load did not finish in {timeout} s"
    assert len(load.acked) == count
    wanted, found = wait_archived(site, tag, messages, timeout=timeout)
    lost, duplicated = summary(f"{name} ({load.retries} sessions retried)", messages, found, started)
    assert lost == 0
    if allow_resent_duplicates:
        # SMTP's own window (RFC 1047): a session cut between the gateway's commit and its 250 makes the
        # sender send again. Such a duplicate has the same bytes, and there are never more than retries.
        # The same window between a worker's commit and the gateway's record of its 250 makes the gateway
        # deliver its queue file again; the site-wide duplicate pass removes those.
        if duplicated > load.retries:
            print(f"dedupe.yml: {duplicate_pass(site, started)[0]}")
            wanted, found = wait_archived(site, tag, messages, timeout=60)
            lost, duplicated = summary(f"{name}, after the duplicate pass", messages, found, started)
        assert lost == 0 and duplicated <= load.retries, (lost, duplicated, load.retries)
    else:
        assert duplicated == 0
    return found


def duplicate_pass(site, started):
    """Run playbooks/dedupe.yml over the messages since ``started``; return its report (listed, removed, kept) and its
    whole output, unfolded."""
    proc = playbook("playbooks/dedupe.yml", "-e", f"dedupe_since=-{int(time.time() - started) + 60}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    out = " ".join(proc.stdout.split())  # the YAML callback folds long lines
    report = re.search(r"msg: (\d+ messages listed on .*? kept)", out)
    assert report, proc.stdout[-3000:]
    return report.group(1), out


def wait_until_sent(load, count, timeout=120):
    deadline = time.time() + timeout
    while len(load.acked) < count and time.time() < deadline:
        time.sleep(0.2)


def come_back(container, address=None, port=25, via=None):
    """Wait until ``container`` runs again and ``address:port`` accepts connections, from this machine or,
    with ``via``, from that container (a worker's port 25 answers only the gateways: nftables)."""
    wait_system_running(container)
    if address is None:
        return
    if via is None:
        wait_until(lambda: accepts_tcp(address, port), f"{container} to accept connections on {port}", timeout=120)
        return
    probe = f"import socket; socket.create_connection(({address!r}, {port}), 2).close()"
    wait_until(lambda: docker("exec", via, "python3", "-c", probe, check=False).returncode == 0,
               f"{container} to accept connections on {port} from {via}", timeout=120)


def test_losing_one_then_two_workers_under_load_loses_nothing(site):
    def fault(load):
        wait_until_sent(load, 300)
        docker("stop", "worker1")
        wait_until_sent(load, 800)
        docker("stop", "worker2")
        wait_until_sent(load, 1400)
        docker("start", "worker1")
        docker("start", "worker2")
        come_back("worker1", site.ip["worker1"], via=site.gateways[0])
        come_back("worker2", site.ip["worker2"], via=site.gateways[0])

    under_load(site, "worker loss", 2000, fault)


def test_the_store_killed_repeatedly_under_load_loses_nothing(site):
    def running_pid():
        """The store's PID once systemd has it running again (0 while it restarts)."""
        for _n in range(60):
            pid = docker("exec", "worker0", "systemctl", "show", "-p", "MainPID", "--value", "archive-store").stdout.strip()
            if pid not in ("", "0"):
                return pid
            time.sleep(0.5)
        raise AssertionError("worker0's store was not running again within 30 s of a kill")

    def fault(load):
        for mark in (200, 500, 800):
            wait_until_sent(load, mark)
            time.sleep(3)  # let the store come back and take some mail, so that each kill hits a working store
            docker("exec", "worker0", "kill", "-9", running_pid())

    under_load(site, "store kill -9", 1200, fault)
    assert docker("exec", "worker0", "systemctl", "is-active", "archive-store", check=False).stdout.strip() == "active"
    out = docker("exec", "worker0", "archive_store", "verify", "--all", check=False)
    assert out.returncode == 0, out.stdout[-500:]


def test_restarting_the_gateway_under_load_loses_nothing(site):
    gateway = site.gateways[0]

    def fault(load):
        wait_until_sent(load, 200)
        docker("exec", gateway, "systemctl", "restart", "postfix")
        wait_until_sent(load, 500)
        docker("restart", gateway)
        come_back(gateway, site.ip[gateway])

    under_load(site, "gateway restart", 1000, fault, allow_resent_duplicates=True)


def test_a_dns_outage_of_60_s_delays_but_loses_nothing(site):
    ns = site.dns[0]

    def fault(load):
        wait_until_sent(load, 100)
        docker("exec", ns, "systemctl", "stop", "named")
        time.sleep(60)
        docker("exec", ns, "systemctl", "start", "named")

    under_load(site, "DNS outage", 600, fault)


def store_run_window(worker):
    """(stopped, started again) of the store's last restart, in the host's monotonic microseconds."""
    out = docker("exec", worker, "systemctl", "show", "archive-store", "-p",
                 "ActiveExitTimestampMonotonic,ActiveEnterTimestampMonotonic").stdout
    values = dict(line.split("=", 1) for line in out.split())
    return int(values["ActiveExitTimestampMonotonic"]), int(values["ActiveEnterTimestampMonotonic"])


def test_a_rolling_upgrade_under_load_restarts_one_drained_worker_at_a_time(site):
    """site.yml re-run with a changed store setting while mail streams in: every store restarts,
    one after the other and each drained first; nothing is lost, and since no session is cut, nothing
    is duplicated and the sender never has to retry."""
    before = {w: store_run_window(w) for w in site.workers}
    started = time.time()
    tag = f"rolling{int(started)}"
    messages = make_messages(tag, 20000, size=2000)
    load = Load(site.ip[site.gateways[0]], site.journal_address, messages, pause=0.05)
    load.start()
    wait_until_sent(load, 100)
    try:
        proc = playbook("site.yml", "--limit", "workers", "-e", "worker_batch_size=150")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    finally:
        load.stop()
    sent = load.acked
    assert len(sent) > 200 and load.retries == 0, (len(sent), load.retries)
    wanted, found = wait_archived(site, tag, sent, timeout=300)
    assert summary(f"rolling upgrade ({len(sent)} sent during the run)", sent, found, started) == (0, 0)
    assert {copies[0][0] for copies in found.values()} == set(site.workers), "mail did not keep reaching every worker"

    after = {w: store_run_window(w) for w in site.workers}
    assert all(after[w][1] > before[w][1] for w in site.workers), "not every store was restarted"
    windows = sorted(after.values())
    assert all(later[0] > earlier[1] for earlier, later in zip(windows, windows[1:])), f"restarts overlapped: {windows}"
    for worker in site.workers:
        conf = docker("exec", worker, "cat", site.contract[worker]["config_file"]).stdout
        assert "batch_size = 150" in conf
        assert stats(site, worker)["maintenance"] == ""
    log = docker("exec", site.gateways[0], "cat", "/var/log/postfix.log").stdout
    print(f"the gateway was told 451 4.3.2 (maintenance) {log.count('451 4.3.2')} times and sent elsewhere")
    # Back to the inventory's setting (another rolling restart, without load).
    proc = playbook("site.yml", "--limit", "workers", "--tags", "worker_configure")
    assert proc.returncode == 0, proc.stdout[-3000:]


def replay_delivery(site, holder, row, target):
    """Hand ``target`` the copy ``holder`` archived as the gateway did: the same bytes under the same gateway
    Received header (queue ID and all), sent from the gateway, which is what postfix does when a worker's
    250 was lost after its commit. Returns the gateway's queue ID."""
    meta = site.client(holder).message(row["id"])
    gateway_line = meta["transit"][1]
    raw = site.client(holder).raw(row["id"])
    script = ("import smtplib,ssl,sys; s=smtplib.SMTP(sys.argv[1], 25, timeout=30); s.ehlo('archive-gw.example.com');"
              "s.starttls(context=ssl._create_unverified_context()); s.ehlo('archive-gw.example.com');"
              "s.sendmail(sys.argv[2] or '<>', [sys.argv[3]], sys.stdin.buffer.read()); s.quit()")
    docker("exec", "-i", site.gateways[0], "python3", "-c", script, site.ip[target], meta["env_from"],
           f"archive@{site.archive_domain}", input=gateway_line.encode() + b"\r\n" + raw, text=False)
    return gateway_line.split(" id ", 1)[1].split()[0]


def test_the_duplicate_pass_leaves_one_copy_of_each_delivery_after_workers_postfix_is_killed_under_load(site):
    """Every worker's postfix killed (SIGKILL, no goodbye) in turn while mail streams in: nothing is lost; a
    second delivery of a gateway queue file to another worker (SMTP's window, RFC 1047; one is made for
    certain by replaying a delivery from the gateway) is found by playbooks/dedupe.yml and removed, so each
    message is archived once; verify --all is clean on every worker."""
    def fault(load):
        for mark, worker in zip((150, 350, 550, 750, 950), site.workers):
            # What answers the gateway on port 25: postfix, or the store itself with worker_receiver smtp.
            unit = "archive-store.service" if site.receiver[worker] == "smtp" else "postfix@-.service"
            wait_until_sent(load, mark)
            docker("exec", worker, "systemctl", "kill", "--signal=SIGKILL", unit)
            time.sleep(2)
            docker("exec", worker, "sh", "-c", f"systemctl reset-failed {unit}; systemctl start {unit}")
            come_back(worker, site.ip[worker], via=site.gateways[0])

    started = time.time()
    tag = f"dedupe{int(started)}"
    messages = make_messages(tag, 1200, size=2000)
    load = Load(site.ip[site.gateways[0]], site.journal_address, messages, pause=0.01)
    load.start()
    fault(load)
    load.join(300)
    assert not load.is_alive() and len(load.acked) == len(messages)
    wanted, found = wait_archived(site, tag, messages, timeout=300)
    what = "the store" if site.receiver[site.workers[0]] == "smtp" else "postfix"
    lost, duplicated = summary(f"{what} killed on every worker ({load.retries} sessions retried)", messages, found, started)
    assert lost == 0
    holder, row = next(iter(found.values()))[0]
    target = next(w for w in site.workers if w != holder)
    queue_id = replay_delivery(site, holder, row, target)
    wait_until(lambda: len(wait_archived(site, tag, messages, timeout=0)[1][row["sha256"]]) == 2,
               f"the replayed delivery on {target}", timeout=60)

    report, out = duplicate_pass(site, started)
    print(f"dedupe.yml: {report} (the queue file {queue_id} replayed to {target} among them)")
    assert int(re.search(r"(\d+) removed", report).group(1)) >= 1 and f"queue ID {queue_id}" in out

    wanted, found = wait_archived(site, tag, messages, timeout=60)
    lost, duplicated = summary("after the duplicate pass", messages, found, started)
    # What stays twice is only what the sender itself sent twice (a new gateway queue file each time).
    assert lost == 0 and duplicated <= load.retries, (lost, duplicated, load.retries)
    for worker in site.workers:
        out = docker("exec", worker, "archive_store", "verify", "--all", check=False)
        assert out.returncode == 0, f"{worker}: {out.stdout[-500:]}{out.stderr[-500:]}"

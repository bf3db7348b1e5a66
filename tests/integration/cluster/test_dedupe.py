"""The site-wide duplicate pass on its timer: on the site's first worker only, as the client "dedupe"."""

import re

from helpers import docker

UNIT = "archive-store-dedupe"


def test_the_duplicate_pass_runs_on_the_first_workers_timer_over_every_worker(site):
    first, others = site.workers[0], site.workers[1:]
    assert docker("exec", first, "systemctl", "is-enabled", f"{UNIT}.timer").stdout.strip() == "enabled"
    for worker in others:
        assert docker("exec", worker, "test", "-e", f"/etc/systemd/system/{UNIT}.timer", check=False).returncode == 1, worker
    # The token is the service user's alone; the site file names every worker.
    token = docker("exec", first, "stat", "-c", "%a %U", "/etc/archive-store/dedupe.token").stdout.split()
    assert token == ["600", site.contract[first]["user"]]
    docker("exec", first, "systemctl", "start", f"{UNIT}.service")  # a oneshot: returns once the run ended well
    log = docker("exec", first, "journalctl", "-u", f"{UNIT}.service", "-o", "cat", "--no-pager").stdout
    summary = re.findall(r"dedupe: \d+ messages listed on (\d+) workers .*", log)
    assert summary and summary[-1] == str(len(site.workers)), log[-2000:]
    # The client "dedupe" holds only its scope: it cannot read mail.
    denied = docker("exec", first, "sh", "-c", "python3 - <<'EOF'\n"
                    "import json, ssl, urllib.request, urllib.error\n"
                    "site = json.load(open('/etc/archive-store/dedupe.json'))\n"
                    "token = open(site['token_file']).read().strip()\n"
                    "worker = site['workers'][0]\n"
                    "request = urllib.request.Request(worker['url'] + '/api/v1/search?q=a', headers={'Authorization': 'Bearer ' + token})\n"
                    "try:\n"
                    "    urllib.request.urlopen(request, context=ssl.create_default_context(cafile=worker['ca_file']))\n"
                    "except urllib.error.HTTPError as exc:\n"
                    "    print(exc.code)\n"
                    "EOF", check=False)
    assert denied.stdout.strip() == "403", denied.stdout + denied.stderr

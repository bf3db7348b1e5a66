"""Run one of this collection's modules the way Ansible does and return its result."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def command(name, args, check=False, diff=False):
    return (["ansible", "localhost", "-i", "localhost,", "-c", "local", "-m", f"mailarchive.cluster.{name}",
             "-a", json.dumps(args)] + (["--check"] if check else []) + (["--diff"] if diff else []))


def environment():
    return dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
                ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
                ANSIBLE_PYTHON_INTERPRETER=sys.executable)


def result_of(stdout):
    return json.loads(stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def run_module(name, args, check=False, diff=False):
    proc = subprocess.run(command(name, args, check, diff), env=environment(), capture_output=True, text=True,
                          cwd=ROOT, check=False)
    return result_of(proc.stdout)

"""Stand-in for the get-pip.py that ansible-test downloads to bootstrap pip in
its sanity venvs. That host is not reachable here; Debian's python3-venv
ships pip in ensurepip, and PyPI is reachable, so bootstrap from those."""

import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
# get-pip's own options, which pip install does not know.
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + args))

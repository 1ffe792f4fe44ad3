"""Stand-in for get-pip.py, the pip bootstrap script of `ansible-test --venv`.

ansible-test creates each sanity virtual environment without pip and then runs
a get-pip.py it downloads from its own CI file server (not a package registry),
which this machine cannot reach. scripts/sanity puts this file where
ansible-test caches that download (~/.ansible/test/cache/get_pip_<version>.py),
and ansible-test runs it in the new environment with the same arguments it
gives get-pip.py (`--disable-pip-version-check pip==<version> [--no-setuptools]
[--no-wheel]`).
It does the same job without that server: ensurepip installs the pip that ships
with this Python (no network), then that pip installs exactly the pinned pip
from the configured package indexes, so the environment ends up as ansible-test
expects it.
"""

import ensurepip
import importlib
import os
import subprocess
import sys


def main() -> None:
    args = sys.argv[1:]
    no_setuptools = "--no-setuptools" in args
    no_wheel = "--no-wheel" in args
    args = [a for a in args if a not in ("--no-setuptools", "--no-wheel")]
    env = dict(os.environ)  # ensurepip turns pip's configuration off in os.environ; the real install needs it
    ensurepip.bootstrap(upgrade=True)
    importlib.invalidate_caches()
    pip = [sys.executable, "-m", "pip"]
    # as get-pip.py does: install (upgrade, force) what it was given
    subprocess.run(pip + ["install", "--upgrade", "--force-reinstall", "--quiet", *args], check=True, env=env)
    remove = [p for p, unwanted in (("setuptools", no_setuptools), ("wheel", no_wheel)) if unwanted]
    if remove:
        subprocess.run(pip + ["uninstall", "--yes", "--quiet", *remove], check=True, env=env)


if __name__ == "__main__":
    main()

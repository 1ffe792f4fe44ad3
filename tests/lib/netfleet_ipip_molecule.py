"""Molecule scenario ipip: the VM that has the kernel's ipip module (this machine's kernel has none).

    python tests/lib/netfleet_ipip_molecule.py create     boot the VM, build the bare lab inside, wait for its sshd
    python tests/lib/netfleet_ipip_molecule.py destroy    stop the VM (its guest script stops BIRD and sshd)

The VM's folder (``NETFLEET_IPIP_VM_DIR``) holds what the inventory (molecule/ipip/group_vars/all/vm.yml) reads:
the forwarded ssh ``port``, the client key ``id``, ``known_hosts`` with the guest's host key, the ssh ControlPath,
and one shell wrapper per host (``ns-<host>``: the host's network namespace inside the VM); the VM's process
group leader is in ``vm.pid``, so destroy stops exactly that VM. ``measure`` runs one step's measurement script in
the VM for the verifier (results in ``results/<step>``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from netfleet_ipip_site import build as build_site
from netfleet_lab import REPO
from netfleet_vm import Vm

READY_TIMEOUT = 600  # boot under software emulation plus the bare lab; a slower start is a hang


def workdir():
    return Path(os.environ.get("NETFLEET_IPIP_VM_DIR") or REPO / ".lab" / "molecule-ipip")


def _is_our_vm(pid):
    try:
        return "vng" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def create(work):
    destroy(work)  # a VM an interrupted run left
    work.mkdir(parents=True)
    vm = Vm(REPO / "tests" / "vm" / "guest.sh", work, rwdirs=[work])
    site = build_site(work, vm)
    vm.command_args = [str(site["script"])]
    vm.start()
    (work / "vm.pid").write_text(str(vm.proc.pid))
    (work / "port").write_text(str(vm.port))
    start = time.monotonic()
    vm.wait_ready("guest: ready", READY_TIMEOUT)
    print(f"ipip VM ready in {time.monotonic() - start:.0f} s, ssh on 127.0.0.1:{vm.port}")


def destroy(work, timeout=120):
    pidfile = work / "vm.pid"
    if pidfile.exists():
        pid = int(pidfile.read_text())
        (work / "stop").touch()  # the guest script stops its daemons and ends; vng and qemu exit with it
        deadline = time.monotonic() + timeout
        while _is_our_vm(pid) and time.monotonic() < deadline:
            time.sleep(1)
        if _is_our_vm(pid):
            os.killpg(pid, 9)  # vng and its qemu: the process group it leads, nothing else
    shutil.rmtree(work, ignore_errors=True)


def measure(work, step):
    """Run ``measure-<step>.sh`` (written by create) in the VM; its results land in ``results/<step>``."""
    argv = ["ssh", "-p", (work / "port").read_text().strip(), "-i", str(work / "id"),
            "-o", f"UserKnownHostsFile={work / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "root@127.0.0.1", f"bash {work}/measure-{step}.sh"]
    proc = subprocess.run(argv, capture_output=True, check=False, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"measure-{step}.sh in the VM failed (rc={proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return work / "results" / step


if __name__ == "__main__":
    command = sys.argv[1:2]
    if command == ["create"]:
        create(workdir())
    elif command == ["destroy"]:
        destroy(workdir())
    else:
        sys.exit(__doc__)

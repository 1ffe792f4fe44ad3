"""The boot-time restore: a host whose kernel lost everything a reboot takes (BIRD killed, the workloads'
namespaces and veths gone, its routes flushed, its cali-* chains gone, forwarding off) is brought back by
`netfleet-calico-restore` alone, from what the last converge recorded, with no controller run; then BIRD
starts, as its unit would after the restore's, and the fabric is exactly as it was: the same normalised state
(links, addresses, routes, rules, sysctls, processes, files), exactly the workload pairs the policy allows
ping, and the next site.yml changes nothing.

inventories/lab-policy (chains with policy and a floating IP, workloads on every host). The program and the
records are those site.yml installed (lab hosts keep them under their state directory; real hosts under
/usr/lib/netfleet-calico-restore and /var/lib/netfleet-calico/boot, run by netfleet-calico-restore.service).
A real reboot of a systemd machine is not part of this test.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from netfleet_lab import REPO, Lab, sh
from netfleet_state import diff, fleet_view

pytestmark = pytest.mark.lab

INVENTORY = REPO / "inventories" / "lab-policy"


@pytest.fixture(scope="module")
def lab():
    prefix = os.environ.get("NETFLEET_LAB_PREFIX", "t") + "bt"
    lab = Lab(INVENTORY, prefix)
    with lab.running():
        lab.playbook("site.yml")
        lab.playbook("playbooks/status.yml")
        yield lab


def restore_program(lab, host, *args):
    state = lab.state_dir(host)
    # nsenter, not `ip netns exec`: the workloads' namespaces it creates must outlive it (a private mount
    # namespace would take them along), as under systemd at boot
    return sh(["nsenter", f"--net=/run/netns/{lab.netns(host)}", "/usr/bin/python3", "-IS",
               f"{state}/boot/lib/netfleet-calico-restore.py", *args], check=False)


def lose_kernel_state(lab, host):
    """What a reboot takes from a host: its processes, its workloads, routes, chains and runtime sysctls."""
    ns, state = lab.netns(host), lab.state_dir(host)
    pid = int(open(f"{state}/bird.pid", encoding="ascii").read().split()[0])
    os.kill(pid, signal.SIGKILL)
    while os.path.exists(f"/proc/{pid}") and "Z" not in open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1][:3]:
        time.sleep(0.02)
    os.unlink(f"{state}/bird.pid")
    for workload in lab.workloads(host):
        sh(["ip", "netns", "del", lab.workload_netns(host, workload)])
    sh(["ip", "-n", ns, "route", "flush", "proto", "80"])
    sh(["ip", "-n", ns, "route", "flush", "proto", "bird"])
    for table in ("filter", "nat", "mangle", "raw"):
        save = sh(["ip", "netns", "exec", ns, "iptables-save", "-t", table]).stdout
        kept = "".join(line + "\n" for line in save.splitlines() if "cali" not in line)
        sh(["ip", "netns", "exec", ns, "iptables-restore", "-T", table], input=kept)
    sh(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=0"])


def test_a_host_comes_back_converged_without_the_controller(lab, report):
    host = "host-a"
    before = fleet_view(lab)
    denied = lab.ping_matrix()  # the pairs the lab's policy denies
    assert denied and len(denied) < len(lab.all_workloads()) ** 2 / 2, denied
    check = restore_program(lab, host, "--check")
    assert check.returncode == 0 and "would change" not in check.stdout, check.stdout + check.stderr

    lose_kernel_state(lab, host)
    lost = diff(before, fleet_view(lab))
    assert any(line.startswith(f"{host}.rules") for line in lost)
    assert any(line.startswith(f"{host}.routes") for line in lost)
    check = restore_program(lab, host, "--check")
    assert check.returncode == 0 and "would change" in check.stdout, check.stdout + check.stderr

    started = time.monotonic()
    run = restore_program(lab, host)
    took = time.monotonic() - started
    assert run.returncode == 0, run.stdout + run.stderr
    for part in ("sysctl", "routes", "workloads", "chains"):
        assert f"netfleet-calico-restore: {part} restored" in run.stdout, run.stdout
    again = restore_program(lab, host)
    assert again.returncode == 0 and "restored" not in again.stdout, again.stdout  # nothing left to do

    # BIRD's unit starts after the restore: here the lab's way of running it
    state = lab.state_dir(host)
    sh(["ip", "netns", "exec", lab.netns(host), "bird", "-c", f"{state}/bird.conf", "-s", f"{state}/bird.ctl",
        "-P", f"{state}/bird.pid"])
    lab.playbook("playbooks/status.yml")
    problems = diff(before, fleet_view(lab))
    assert not problems, "after the restore and BIRD's start:\n" + "\n".join(problems)
    assert lab.ping_matrix() == denied
    run2 = lab.playbook("site.yml")
    changed = {h: r["changed"] for h, r in run2.recap.items() if r["changed"]}
    assert not changed, f"site.yml after the restore changed {changed}"
    report(f"boot restore: {host} restored its routes, workloads, chains and sysctls in {took:.2f} s without the "
           "controller; the fleet's state is as before and site.yml changes nothing")

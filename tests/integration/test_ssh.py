"""The lab over SSH: site.yml with the standard ssh connection and become, as on a real fleet.

Needs root. inventories/lab-ssh (the article's 3-host full mesh with lab_ssh: true) is built with a
run-specific prefix ``ssh<2 hex>``: every host namespace runs its own sshd (lab_sshd) on its fabric address,
and the controller (ansible-playbook) runs inside the management namespace <prefix>-mgmt, whose leg sits
on the rack segment. The root namespace gets none of the lab's addresses or routes. lab_down must stop every
sshd and BIRD by its pid file and leave no namespace behind.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import time
from pathlib import Path

import pytest
from netfleet_lab import REPO, ControllerLab, alive, namespaces, sh

pytestmark = pytest.mark.lab

INVENTORY = REPO / "inventories" / "lab-ssh"
LAB_USER = "netfleet-lab"  # scripts/setup creates it (NOPASSWD sudo)
LAB_NETS = [ipaddress.ip_network("192.168.100.0/24"), ipaddress.ip_network("172.17.0.0/16")]


class SshLab(ControllerLab):
    """The SSH lab: sshd's own files per host."""

    def ssh_dir(self, host=None):
        base = f"/run/netfleet/{self.prefix}/ssh"
        return f"{base}/{host}" if host else base

    def pid(self, path):
        try:
            return int(Path(path).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def accepted(self, host):
        """Logins sshd accepted for the lab's user from the management leg (sshd's own log)."""
        log = Path(self.ssh_dir(host), "sshd.log").read_text()
        return len(re.findall(rf"^Accepted publickey for {LAB_USER} from 192\.168\.100\.254 port \d+ ssh2", log,
                              re.M))


def root_lab_state():
    """The root namespace's addresses and routes inside the lab's networks (must stay empty)."""
    found = []
    for link in json.loads(sh(["ip", "-j", "-4", "addr", "show"]).stdout or "[]"):
        for a in link.get("addr_info", []):
            if any(ipaddress.ip_address(a["local"]) in net for net in LAB_NETS):
                found.append(f"address {link['ifname']} {a['local']}")
    for route in json.loads(sh(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout or "[]"):
        dst = route.get("dst", "default")
        if dst not in ("default",) and any(ipaddress.ip_network(dst, strict=False).overlaps(net) for net in LAB_NETS):
            found.append(f"route {dst}")
    return found


@pytest.fixture(scope="module")
def lab():
    taken = {n.split("-", 1)[0] for n in namespaces()}
    if os.path.isdir("/run/netfleet"):
        taken |= set(os.listdir("/run/netfleet"))
    prefix = None
    for _attempt in range(64):  # a prefix no other lab uses (namespaces or state directories)
        prefix = "ssh" + os.urandom(1).hex()
        if prefix not in taken:
            break
    lab = SshLab(INVENTORY, prefix)
    lab.started = time.monotonic()
    with lab.running():
        yield lab


def test_lab_up_runs_one_sshd_per_host_on_its_fabric_address(lab):
    assert f"{lab.prefix}-mgmt" in namespaces()
    for host in lab.nodes:
        pid = lab.pid(f"{lab.ssh_dir(host)}/sshd.pid")
        assert pid and alive(pid), f"{host}: no sshd running by its pid file"
        listen = sh(["ip", "netns", "exec", lab.netns(host), "ss", "-Hltn"]).stdout.split()
        assert f"{lab.node_ip(host)}:22" in listen, listen
        assert not [a for a in listen if a.endswith(":22") and a != f"{lab.node_ip(host)}:22"], listen
    # the management leg is the only way in; the root namespace holds none of the lab's addresses or routes
    mgmt = sh(["ip", "-n", lab.mgmt, "-4", "-o", "addr", "show"]).stdout
    assert "192.168.100.254/24" in mgmt
    assert sh(["ip", "-n", lab.mgmt, "route", "show", "default"]).stdout.strip() == ""
    assert root_lab_state() == []
    # idempotent, and check mode on a built lab reports nothing to do
    again = lab.playbook("lab/playbooks/lab_up.yml")
    assert again.recap["localhost"]["changed"] == 0, again.stdout[-3000:]
    check = lab.playbook("lab/playbooks/lab_up.yml", "--check")
    assert check.recap["localhost"]["changed"] == 0, check.stdout[-3000:]


def test_site_over_ssh_converges_and_pings(lab, report):
    # check mode over ssh on the fresh lab: reports changes, makes none (no BIRD, no workload namespace)
    check = lab.controller_playbook("site.yml", "--check", "--diff")
    assert all(check.recap[h]["changed"] > 0 for h in lab.nodes), check.recap
    assert not [h for h in lab.nodes if os.path.exists(f"/run/netfleet/{lab.prefix}/{h}/bird.pid")]
    assert not [n for n in namespaces() if n.startswith(f"{lab.prefix}-host-a-")]

    t0 = time.monotonic()
    lab.controller_playbook("site.yml")
    site_s = time.monotonic() - t0
    # the connection actually used: ssh as the lab's user from the management leg to the fabric address, then
    # sudo to root (become)
    conn = lab.adhoc("ansible.builtin.shell", 'echo "$(id -un) $SSH_CONNECTION"', "-e", "ansible_become=false")
    for host in lab.nodes:
        assert re.fullmatch(rf"{LAB_USER} 192\.168\.100\.254 \d+ {re.escape(lab.node_ip(host))} 22",
                            conn.get(host, "")), conn
        assert lab.accepted(host) >= 1, f"{host}: sshd accepted no login"
    become = lab.adhoc("ansible.builtin.shell", 'echo "$(id -u) $SUDO_USER"')
    assert become == {h: f"0 {LAB_USER}" for h in lab.nodes}, become
    assert {lab.hostvars[h].get("ansible_connection") for h in lab.nodes} == {"ansible.builtin.ssh"}

    status = lab.controller_playbook("playbooks/status.yml")
    assert "fabric converged: 3 hosts, 6/6 BGP sessions Established, 3 blocks" in status.stdout, status.stdout[-3000:]
    ping = lab.controller_playbook("lab/playbooks/lab_ping.yml")
    assert "ping matrix: 30/30 workload pairs reachable" in ping.stdout, ping.stdout[-3000:]
    assert not lab.ping_matrix()

    t0 = time.monotonic()
    second = lab.controller_playbook("site.yml")
    second_s = time.monotonic() - t0
    assert {h: r["changed"] for h, r in second.recap.items() if r["changed"]} == {}
    assert root_lab_state() == []
    report(f"test_ssh: site.yml over ssh+become, 3 hosts: first {site_s:.1f} s, second (changed=0) {second_s:.1f} s")


def test_lab_down_stops_every_sshd_and_bird_by_pid_file(lab, report):
    pids = {}
    for host in lab.nodes:
        pids[f"{host} sshd"] = lab.pid(f"{lab.ssh_dir(host)}/sshd.pid")
        pids[f"{host} bird"] = lab.pid(f"/run/netfleet/{lab.prefix}/{host}/bird.pid")
    assert all(pids.values()) and all(alive(p) for p in pids.values()), pids
    down = lab.playbook("lab/playbooks/lab_down.yml", "-v")
    for what, pid in pids.items():
        assert not alive(pid), f"{what} (pid {pid}) survived lab_down"
        assert re.search(rf"pid: {pid}\s+pidfile: \S+\s+reason: pidfile", down.stdout), \
            f"{what} (pid {pid}) was not stopped by its pid file"
    assert not [n for n in namespaces() if n.startswith(lab.prefix + "-")]
    assert not os.path.exists(f"/run/netfleet/{lab.prefix}")
    assert root_lab_state() == []
    report(f"test_ssh: the lab over SSH, 3 hosts (lab_up x3, site.yml x2, status, ping, lab_down): "
           f"{time.monotonic() - lab.started:.1f} s")

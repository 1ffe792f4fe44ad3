"""The spine role's systemd path on a machine lab: inventories/lab-machines-spine (two racks, each a ToR reflector
and one host, and one spine router: 5 machines).

Needs root. The spine is a Debian machine (systemd-nspawn) like the hosts, reached over SSH with sudo from the
management namespace's leg on the spine segment. site.yml installs FRR there with apt from the lab's repository,
writes the daemons file and frr.conf and runs frr.service (enabled). A change of frr.conf (BFD on, then off: bfdd
started and stopped by the daemons file) is applied by `systemctl reload frr` (frr-reload.py) without resetting a
session, and a real reboot of the spine brings FRR, its sessions and every cross-rack ping back by itself.
"""

from __future__ import annotations

import json
import time

import pytest
from netfleet_lab import REPO
from netfleet_machines import MachineLab, converge_time, free_prefix

from ansible_collections.netfleet.calico_lab.plugins.module_utils import lab_machine

pytestmark = pytest.mark.lab

INVENTORY = REPO / "inventories" / "lab-machines-spine"
SPINE = "sp1"


class SpineLab(MachineLab):
    def vtysh(self, *commands):
        return self.inside(SPINE, "vtysh", *(arg for c in commands for arg in ("-c", c))).stdout

    def peers(self):
        """{reflector's spine address: (state, times the session was Established)} seen by the spine."""
        peers = json.loads(self.vtysh("show bgp summary json")).get("ipv4Unicast", {}).get("peers", {})
        return {ip: (p["state"], p.get("connectionsEstablished")) for ip, p in peers.items()}

    def bgp_table(self):
        return sorted(json.loads(self.vtysh("show bgp ipv4 unicast json")).get("routes", {}))

    def blocks(self):
        """The racks' blocks: each host's proto-80 blackhole, inside its machine's namespace."""
        out = set()
        for host in self.nodes:
            routes = self.inside(host, "ip", "-4", "route", "show", "proto", "80", "type", "blackhole").stdout
            out |= {line.split()[1] for line in routes.splitlines() if line.startswith("blackhole")}
        return sorted(out)

    def frr_daemons(self):
        """Which of FRR's daemons run on the spine (staticd, Debian's default, is left out)."""
        return {name for name in ("zebra", "bgpd", "bfdd", "watchfrr")
                if self.inside(SPINE, "pgrep", "-x", name, check=False).returncode == 0}

    def converged(self, timeout=90):
        """Seconds until the spine's sessions are Established, its table holds the racks' blocks and every
        workload pair pings (BIRD's sessions too)."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            peers = self.peers() if self.leader(SPINE) else {}
            if peers and {s for s, _n in peers.values()} == {"Established"} and self.bgp_table() == self.blocks():
                return converge_time(self, t0, timeout=max(1, deadline - time.monotonic()))
            time.sleep(0.5)
        raise AssertionError(f"spine not converged after {timeout} s: peers {self.peers()}, "
                             f"table {self.bgp_table()} (blocks {self.blocks()})")


@pytest.fixture(scope="module")
def lab():
    lab = SpineLab(INVENTORY, free_prefix("p"))
    with lab.running():
        yield lab


def test_site_runs_frr_from_apt_under_systemd_on_the_spine(lab, report):
    t0 = time.monotonic()
    first = lab.controller_playbook("site.yml")
    first_s = time.monotonic() - t0
    settle_s = lab.converged()
    assert first.recap[SPINE]["changed"] > 0, first.recap
    status = lab.inside(SPINE, "dpkg-query", "-W", "-f", "${Status}\n", "frr", "frr-pythontools").stdout
    assert status.split("\n")[:2] == ["install ok installed"] * 2
    assert f"file:{lab_machine.REPO_MOUNT}" in lab.inside(SPINE, "apt-cache", "policy", "frr").stdout
    assert lab.inside(SPINE, "systemctl", "is-active", "frr").stdout.strip() == "active"
    assert lab.inside(SPINE, "systemctl", "is-enabled", "frr").stdout.strip() == "enabled"
    assert lab.inside(SPINE, "stat", "-c", "%U:%G %a", "/etc/frr/frr.conf").stdout.strip() == "frr:frr 640"
    daemons = lab.inside(SPINE, "cat", "/etc/frr/daemons").stdout.splitlines()
    assert {"bgpd=yes", "bfdd=no", 'frr_profile="datacenter"'} <= set(daemons)
    # frr.conf's `frr defaults datacenter` is in force (the daemons started with that profile)
    assert "frr defaults datacenter" in lab.vtysh("show running-config")
    assert lab.frr_daemons() == {"zebra", "bgpd", "watchfrr"}
    assert sorted(lab.peers()) == ["10.255.0.11", "10.255.0.21"]
    second = lab.controller_playbook("site.yml")
    assert {h: r["changed"] for h, r in second.recap.items() if r["changed"]} == {}
    report(f"test_machines_spine: site.yml with the spine over ssh+sudo: first (apt frr, frr.service) {first_s:.1f} s "
           f"(spine table holds both racks' blocks, 12/12 pings {settle_s:.1f} s after it); second changed=0")


def test_a_new_frr_conf_is_reloaded_without_resetting_sessions(lab, report):
    before = lab.peers()
    assert {s for s, _n in before.values()} == {"Established"}, before
    t0 = time.monotonic()
    on = lab.controller_playbook("site.yml", "-e", "calico_bgp_bfd=true")
    on_s = time.monotonic() - t0
    assert "RUNNING HANDLER [netfleet.calico.spine : Reload FRR]" in on.stdout
    assert "Restart FRR" not in on.stdout
    # the daemons file turned bfdd on; the reload started it and applied the BFD profile to every neighbor
    assert "bfdd" in lab.frr_daemons()
    running = lab.vtysh("show running-config")
    assert running.count("bfd profile calico") == 2, running
    assert lab.peers() == before
    off = lab.controller_playbook("site.yml")
    assert "Restart FRR" not in off.stdout
    assert "bfdd" not in lab.frr_daemons()
    assert " bfd" not in lab.vtysh("show running-config bgpd")
    # the same sessions all along: never dropped, established once
    assert lab.peers() == before
    assert not lab.ping_matrix()
    report(f"test_machines_spine: BFD on by `systemctl reload frr` (bfdd started) in a site.yml of {on_s:.1f} s, "
           "then off (bfdd stopped): both spine sessions kept (established once)")


def test_reboot_of_the_spine_brings_frr_back_without_site(lab, report):
    t0 = time.monotonic()
    lab.wait_booted(lab.reboot([SPINE]))
    boot_s = time.monotonic() - t0
    took = lab.converged()
    assert lab.inside(SPINE, "systemctl", "is-active", "frr").stdout.strip() == "active"
    assert lab.frr_daemons() == {"zebra", "bgpd", "watchfrr"}
    # a fresh network namespace: zebra turned forwarding on again from frr.conf
    assert lab.inside(SPINE, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    failed = lab.inside(SPINE, "systemctl", "--failed", "--no-legend", "--plain").stdout.strip()
    assert failed == "", f"failed units {failed}"
    report(f"test_machines_spine: spine rebooted: booted in {boot_s:.1f} s, FRR's sessions Established, its table "
           f"complete and 12/12 pings {took:.1f} s after the reboot, without site.yml")

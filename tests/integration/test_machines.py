"""The machine lab: site.yml on Debian machines booted with systemd, that install packages and reboot.

Needs root. inventories/lab-machines (two racks, each a ToR reflector and hosts, and one FRR spine that joins them:
6 machines) is built with a run-specific prefix: every host namespace runs a systemd-nspawn machine with its own
filesystem (the cached base image under an overlay of its own), reached over SSH as the non-root user `netfleet`
with sudo from the management namespace (the spine over its leg on the spine segment). site.yml takes a real
fleet's paths there: apt (from the lab's local repository), bird.service on the hosts and reflectors,
frr.service on the spine, /etc/sysctl.d, the boot-time restore unit. A change of frr.conf (BFD on, then off) is
applied by `systemctl reload frr` without resetting a session. A reboot is a real one (systemd shuts the machine
down and boots it again) in a fresh network namespace: the kernel state of the last boot is gone, and the hosts,
their reflector, the spine, then all of them at once come back converged without site.yml.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import time

import pytest
from netfleet_lab import REPO, alive, namespaces, sh
from netfleet_machines import MachineLab, converge_time, free_prefix

from ansible_collections.netfleet.calico_lab.plugins.module_utils import lab_machine

pytestmark = pytest.mark.lab

INVENTORY = REPO / "inventories" / "lab-machines"
USER = "netfleet"
SPINE = "sp1"
MARKER = "198.51.100.0/24"  # a route only the last boot had (TEST-NET-2, never used by the lab)


@pytest.fixture(scope="module")
def lab():
    prefix = free_prefix("m")
    lab = MachineLab(INVENTORY, prefix)
    assert lab.spines == [SPINE]
    lab.base = lab_machine.base_path("/var/cache/netfleet-lab", "bookworm", "http://deb.debian.org/debian", USER)
    lab.cached = os.path.exists(os.path.join(lab.base, lab_machine.READY))
    t0 = time.monotonic()
    with lab.running():
        lab.up_s = time.monotonic() - t0
        yield lab
    assert not [n for n in namespaces() if n.startswith(prefix + "-")]
    assert not os.path.exists(f"/run/netfleet/{prefix}")


def test_machines_boot_with_systemd_in_their_namespaces(lab, report):
    for host in lab.machines():
        assert lab.system_state(host) in ("running", "degraded"), host
        assert lab.inside(host, "cat", "/proc/1/comm").stdout.strip() == "systemd"
        assert lab.inside(host, "hostname").stdout.strip() == host
        # its own filesystem: a file made in one machine is not in another
    lab.inside("m1h1", "touch", "/root/only-here")
    assert lab.inside("m1h2", "test", "-e", "/root/only-here", check=False).returncode != 0
    again = lab.playbook("lab/playbooks/lab_up.yml", "-v")
    assert again.recap["localhost"]["changed"] == 0, again.stdout[again.stdout.find("changed: [localhost]"):][:3000]
    report(f"test_machines: lab_up of {len(lab.machines())} machines {lab.up_s:.1f} s (base image {lab.base} "
           f"{'cached' if lab.cached else 'built by this run, with the apt repository'})")


def test_site_installs_packages_and_runs_bird_under_systemd(lab, report):
    t0 = time.monotonic()
    first = lab.controller_playbook("site.yml")
    first_s = time.monotonic() - t0
    # the last BIRD started moments ago: its sessions, the spine's and the routes they carry follow within BGP's
    # timers
    settle_s = converge_time(lab, time.monotonic(), timeout=60)
    assert "Install BIRD, iproute2 and iptables" in first.stdout
    for host in lab.machines():
        assert first.recap[host]["changed"] > 0, first.recap
    for host in lab.speakers():
        # the real package path: dpkg knows bird2 and iptables, from the lab's repository
        assert lab.inside(host, "dpkg-query", "-W", "-f", "${Status}\n", "bird2", "iptables").stdout.split("\n")[:2] \
            == ["install ok installed"] * 2
        assert f"file:{lab_machine.REPO_MOUNT}" in lab.inside(host, "apt-cache", "policy", "bird2").stdout
        # the real service path: the distribution's bird.service, the restore unit before it, sysctls persisted
        assert lab.inside(host, "systemctl", "is-active", "bird").stdout.strip() == "active"
        assert lab.inside(host, "systemctl", "is-enabled", "bird", "netfleet-calico-restore").stdout.split() \
            == ["enabled", "enabled"]
        assert lab.inside(host, "stat", "-c", "%U:%G %a", "/etc/bird/bird.conf").stdout.strip() == "root:bird 640"
        assert "graceful restart on;" in lab.inside(host, "cat", "/etc/bird/bird.conf").stdout
        assert "net.ipv4.ip_forward = 1" in lab.inside(host, "cat", "/etc/sysctl.d/60-netfleet-calico.conf").stdout
    # the connection: ssh as the non-root user from the management leg (on the spine segment for the spine),
    # root through sudo
    conn = lab.adhoc("ansible.builtin.shell", 'echo "$(id -un) $(sudo -n id -u) $SSH_CONNECTION"',
                     "-e", "ansible_become=false", pattern="machines")
    assert sorted(conn) == sorted(lab.machines()), conn
    for host in lab.machines():
        leg = r"10\.255\.0\.254" if host in lab.spines else r"192\.168\.11[12]\.254"
        assert re.fullmatch(rf"{USER} 0 {leg} \d+ {re.escape(lab.node_ip(host))} 22", conn[host]), conn
    # the racks meet at the spine: each reflector's one eBGP session is to the spine, and it learns the other
    # rack's blocks there
    blocks = {h: lab.block(h) for h in lab.nodes}
    for rr in lab.reflectors:
        sessions = lab.sessions(rr)
        assert sorted(n for n in sessions if n.startswith("Global_")) == ["Global_10_255_0_1"], sessions
        rack = lab.hostvars[rr]["calico_as_number"]
        learned = lab.inside(rr, "birdc", "show", "route", "protocol", "Global_10_255_0_1").stdout
        others = [b for h, b in blocks.items() if lab.hostvars[h]["calico_as_number"] != rack]
        assert others and all(b in learned for b in others), (rr, others, learned)
    status = lab.controller_playbook("playbooks/status.yml")
    assert "fabric converged: 5 hosts, 8/8 BGP sessions Established, 3 blocks" in status.stdout, status.stdout[-2000:]
    t0 = time.monotonic()
    second = lab.controller_playbook("site.yml")
    second_s = time.monotonic() - t0
    assert {h: r["changed"] for h, r in second.recap.items() if r["changed"]} == {}
    report(f"test_machines: site.yml on {len(lab.machines())} machines over ssh+sudo: first (apt, bird.service, "
           f"frr.service) {first_s:.1f} s (every session Established, the spine's table whole and 30/30 pings "
           f"{settle_s:.1f} s after it), second (changed=0) {second_s:.1f} s")


def test_site_runs_frr_from_apt_under_systemd_on_the_spine(lab):
    status = lab.inside(SPINE, "dpkg-query", "-W", "-f", "${Status}\n", "frr", "frr-pythontools").stdout
    assert status.split("\n")[:2] == ["install ok installed"] * 2
    assert f"file:{lab_machine.REPO_MOUNT}" in lab.inside(SPINE, "apt-cache", "policy", "frr").stdout
    assert lab.inside(SPINE, "systemctl", "is-active", "frr").stdout.strip() == "active"
    assert lab.inside(SPINE, "systemctl", "is-enabled", "frr").stdout.strip() == "enabled"
    assert lab.inside(SPINE, "stat", "-c", "%U:%G %a", "/etc/frr/frr.conf").stdout.strip() == "frr:frr 640"
    daemons = lab.inside(SPINE, "cat", "/etc/frr/daemons").stdout.splitlines()
    assert {"bgpd=yes", "bfdd=no", 'frr_profile="datacenter"'} <= set(daemons)
    # frr.conf's `frr defaults datacenter` is in force (the daemons started with that profile)
    assert "frr defaults datacenter" in lab.vtysh(SPINE, "show running-config")
    assert lab.frr_daemons(SPINE) == {"zebra", "bgpd", "watchfrr"}
    assert sorted(lab.spine_peers(SPINE)) == ["10.255.0.11", "10.255.0.21"]
    # the spine's table: exactly the racks' blocks (checked by converge_time after the first site.yml)
    assert lab.spine_table(SPINE) == lab.blocks()


def test_frr_conf_is_reloaded_and_bfd_turned_on_and_off(lab, report):
    before = lab.spine_peers(SPINE)
    assert {s for s, _n in before.values()} == {"Established"}, before
    t0 = time.monotonic()
    on = lab.controller_playbook("site.yml", "-e", "calico_bgp_bfd=true")
    on_s = time.monotonic() - t0
    assert "RUNNING HANDLER [netfleet.calico.spine : Reload FRR]" in on.stdout
    assert "Restart FRR" not in on.stdout
    # the daemons file turned bfdd on; the reload started it and applied the BFD profile to every neighbor
    assert "bfdd" in lab.frr_daemons(SPINE)
    running = lab.vtysh(SPINE, "show running-config")
    assert running.count("bfd profile calico") == 2, running
    # With BFD a reflector runs its GTSM spine session as `multihop 1` (FRR's BFD is multihop there), so BIRD
    # resets each spine session once; frr.conf's reload itself resets none (docs/topologies.md).
    on_took = converge_time(lab, time.monotonic(), timeout=30)
    on_peers = lab.spine_peers(SPINE)
    assert {s for s, _n in on_peers.values()} == {"Established"}, on_peers
    assert all(n <= before[ip][1] + 1 for ip, (_s, n) in on_peers.items()), (before, on_peers)
    off = lab.controller_playbook("site.yml")
    assert "Restart FRR" not in off.stdout
    assert "bfdd" not in lab.frr_daemons(SPINE)
    assert " bfd" not in lab.vtysh(SPINE, "show running-config bgpd")
    # Off: back to `direct`, and the far ends' BFD goes down once; the sessions come back by themselves.
    t0 = time.monotonic()
    took = converge_time(lab, t0, timeout=30)
    after = lab.spine_peers(SPINE)
    assert {s for s, _n in after.values()} == {"Established"}, after
    assert all(n <= on_peers[ip][1] + 1 for ip, (_s, n) in after.items()), (on_peers, after)
    report(f"test_machines: BFD on by `systemctl reload frr` (bfdd started) in a site.yml of {on_s:.1f} s, converged "
           f"{on_took:.1f} s after it; off (bfdd stopped): every session Established again and 30/30 pings "
           f"{took:.1f} s after the second site.yml (spine sessions established "
           f"{sorted(n for _s, n in after.values())} times)")


def test_reboot_of_a_host_and_its_reflector_comes_back_without_site(lab, report):
    rebooted = ["m1h1", "m1rr"]
    before = {h: lab.kernel(h) for h in rebooted}
    assert before["m1h1"]["cali"] and any("blackhole" in r for r in before["m1h1"]["routes"])
    for host in rebooted:
        sh(["ip", "-n", lab.netns(host), "route", "add", "blackhole", MARKER])
    t0 = time.monotonic()
    lab.wait_booted(lab.reboot(rebooted))
    boot_s = time.monotonic() - t0
    took = converge_time(lab, t0)
    for host in rebooted:
        after = lab.kernel(host)
        # a real reboot: what only the last boot had is gone; what the host had converged is back
        assert not [r for r in after["routes"] if MARKER in r], after["routes"]
        assert after == before[host], (host, after, before[host])
        assert after["ip_forward"] == "1"
        failed = lab.inside(host, "systemctl", "--failed", "--no-legend", "--plain").stdout.strip()
        assert failed == "", f"{host}: failed units {failed}"
        log = lab.inside(host, "journalctl", "-b", "-u", "netfleet-calico-restore", "--no-pager").stdout
        assert "Finished netfleet-calico-restore.service" in log, log
    report(f"test_machines: reboot of a host and its rack's reflector: booted in {boot_s:.1f} s, "
           f"sessions Established (the spine's too) and 30/30 pings {took:.1f} s after the reboot, without site.yml")


def test_reboot_of_the_spine_brings_frr_back_without_site(lab, report):
    t0 = time.monotonic()
    lab.wait_booted(lab.reboot([SPINE]))
    boot_s = time.monotonic() - t0
    took = converge_time(lab, t0)
    assert lab.inside(SPINE, "systemctl", "is-active", "frr").stdout.strip() == "active"
    assert lab.frr_daemons(SPINE) == {"zebra", "bgpd", "watchfrr"}
    # a fresh network namespace: zebra turned forwarding on again from frr.conf
    assert lab.inside(SPINE, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    failed = lab.inside(SPINE, "systemctl", "--failed", "--no-legend", "--plain").stdout.strip()
    assert failed == "", f"failed units {failed}"
    report(f"test_machines: spine rebooted: booted in {boot_s:.1f} s, FRR's sessions Established, its table "
           f"complete and 30/30 pings {took:.1f} s after the reboot, without site.yml")


def test_reboot_of_every_machine_at_once_converges_by_itself(lab, report):
    machines = lab.machines()
    before = {h: lab.kernel(h) for h in machines}
    t0 = time.monotonic()
    lab.wait_booted(lab.reboot(machines))
    boot_s = time.monotonic() - t0
    took = converge_time(lab, t0)
    assert {h: lab.kernel(h) for h in machines} == before
    again = lab.controller_playbook("site.yml")
    assert {h: r["changed"] for h, r in again.recap.items() if r["changed"]} == {}
    report(f"test_machines: all {len(machines)} machines (the spine too) rebooted at once: booted in {boot_s:.1f} s, "
           f"fabric converged (every session Established, the spine's table whole, 30/30 pings) {took:.1f} s after "
           "the reboot; then site.yml changed=0")


def test_lab_down_powers_every_machine_off(lab):
    supervisors = {}
    for host in lab.machines():
        with open(f"{lab.machine_dir(host)}/supervisor.pid") as f:
            supervisors[host] = int(f.read())
    lab.playbook("lab/playbooks/lab_down.yml")
    for host, pid in supervisors.items():
        assert not alive(pid), f"{host}: supervisor {pid} survived lab_down"
        assert not glob.glob(f"/sys/fs/cgroup/*/netfleet-lab/{lab.prefix}-{host}"), f"{host}: its cgroup is left"
    proc = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert lab.prefix + "-" not in proc.stdout

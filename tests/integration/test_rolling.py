"""Rolling safety and clear failures at the edge, on a real netns lab.

Needs root. One 4-host lab (one rack, full mesh, one workload per host) with a run-specific prefix
`rol<2 hex>`; site.yml rolls the nodes out two at a time (`calico_serial: [2]`): batch 1 is host-a and
host-b, batch 2 host-c and host-d.

- every edge failure (an unreachable host, BIRD missing or too old, iptables rules in both backends or
  in the other one than the forced backend) stops site.yml in its first play with one line naming the
  host and the fix, and no host changes;
- lab_up without root, or as root without CAP_SYS_ADMIN, fails with one line saying to run as root
  and creates nothing;
- a host of batch 1 whose bird.conf the real BIRD rejects (`bird -p`) stops the roll-out: batch 2 is
  untouched (no BIRD, no config, no routes, no workloads; the recap shows no change on it) and the
  failing host itself is left as it was; with the inventory fixed, the roll-out runs in two batches.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
import subprocess
import tempfile

import netfleet_lab
import pytest
import yaml
from netfleet_lab import REPO, Lab, namespaces, sh

pytestmark = pytest.mark.lab

HOSTS = {
    "host-a": "192.168.100.100",
    "host-b": "192.168.100.101",
    "host-c": "192.168.100.102",
    "host-d": "192.168.100.103",
}
BATCH1, BATCH2 = ["host-a", "host-b"], ["host-c", "host-d"]


def inventory_doc(overrides=None, extra_hosts=None):
    overrides = overrides or {}
    hosts = {name: dict({"calico_node_ip": ip, "calico_workloads": [{"name": name[-1] + "1"}]},
                        **overrides.get(name, {}))
             for name, ip in {**HOSTS, **(extra_hosts or {})}.items()}
    return {"all": {
        "vars": {"calico_pool": "172.17.0.0/16", "calico_block_prefix": 24, "calico_bgp_topology": "full_mesh"},
        "children": {
            "calico_racks": {"children": {"rack1": {
                "vars": {"calico_as_number": 64512, "lab_segment": "192.168.100.0/24"}, "hosts": hosts}}},
            "calico_nodes": {"children": {"rack1": None}},
        }}}


def write_inventory(path, doc, **all_vars):
    """An inventory directory: the lab's group_vars, two nodes per batch, then ``all_vars`` (last file wins)."""
    netfleet_lab.write_inventory(path, doc)
    (path / "group_vars" / "all" / "zz_rolling.yml").write_text(
        yaml.safe_dump({"calico_serial": [2], **all_vars}, sort_keys=False))
    return str(path)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    prefix = "rol" + secrets.token_hex(1)
    lab = Lab(write_inventory(tmp_path_factory.mktemp("inv"), inventory_doc()), prefix)
    with lab.running():
        yield lab


def lines_with(proc, text):
    """The error lines (ansible-core's one-line `[ERROR]: ...` form of a failed task) that contain ``text``."""
    return [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("[ERROR]") and text in ln]


def untouched(lab, host):
    """Nothing of the fabric on a host: no BIRD (config, pid file, process), no owned route, no workload."""
    state = lab.kernel_state(host)
    assert not [f for f in state["bird_files"] if f.startswith("bird")], (host, state["bird_files"])
    assert " proto 80" not in state["routes"] and "proto bird" not in state["routes"], (host, state["routes"])
    assert "cali" not in state["links"], host
    assert not [n for n in namespaces() if n.startswith(lab.netns(host) + "-")], host


def _refused(lab, tmp_path, doc, expect, **all_vars):
    """site.yml on a changed inventory fails in its first play with the expected one-line messages
    (``expect``: host -> regex) and changes nothing anywhere."""
    inv = write_inventory(tmp_path / "bad", doc, **all_vars)
    before = lab.fleet_state()
    proc = lab.playbook("site.yml", inventory=inv, check=False)
    after = lab.fleet_state()
    assert proc.returncode != 0, proc.stdout[-3000:]
    found = lines_with(proc, "netfleet.calico preflight: host ")
    for host, pattern in expect.items():
        mine = [ln for ln in found if f"host '{host}'" in ln]
        assert mine, f"no preflight line for {host}:\n{proc.stdout[-4000:]}"
        assert re.search(pattern, mine[0]), mine[0]
    assert before == after, "a host was changed by a run that stopped in its first play"
    assert all(r["changed"] == 0 for r in proc.recap.values()), proc.recap
    assert "PLAY [Preflight" not in proc.stdout and "PLAY [Calico nodes]" not in proc.stdout
    return found


# --- clear failures at the edge: the run stops in its first play, nothing changes ---------------------------------
# (run first, on the fresh lab, so "nothing changed" is measured on untouched hosts)

def test_unreachable_host_stops_the_run(lab, tmp_path):
    # host-e is in the inventory but its namespace was never built (lab_up ran without it)
    doc = inventory_doc(extra_hosts={"host-e": "192.168.100.104"})
    [line] = _refused(lab, tmp_path, doc, {"host-e": r"is unreachable \(network namespace "
                                                     rf"'{lab.prefix}-host-e' does not exist"})
    assert line.endswith("— check its connectivity (is it up, can this controller reach it) and its inventory "
                         "entry (ansible_host, ansible_port, ansible_user, ansible_connection)")
    for host in HOSTS:
        untouched(lab, host)


def test_bird_missing_or_too_old_stops_the_run(lab, tmp_path):
    fake = tmp_path / "old-bird"
    fake.write_text("#!/bin/sh\necho 'BIRD version 2.0.8'\n")   # what Debian bullseye's bird2 prints
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    doc = inventory_doc({"host-b": {"calico_node_bird_binary": str(fake)},
                         "host-d": {"calico_node_bird_binary": "/nonexistent/sbin/bird"}})
    found = _refused(lab, tmp_path, doc, {
        "host-b": r"BIRD 2\.0\.8 is too old \(onlink routes need 2\.0\.12\) — install BIRD >= 2\.0\.12 "
                  r"\(Debian bookworm's bird2\)$",
        "host-d": r"BIRD is not installed \(/nonexistent/sbin/bird not found\) — install BIRD >= 2\.0\.12",
    })
    assert not [ln for ln in found if "host 'host-a'" in ln or "host 'host-c'" in ln], found


def test_iptables_backend_mismatch_stops_the_run(lab, tmp_path):
    # host-b: rules in both backends; host-c: rules only in legacy while nft is forced. The addresses are
    # TEST-NET-1 (RFC 5737) in the lab hosts' own INPUT chains: no packet ever matches them.
    rules = [("host-b", "iptables-nft", "192.0.2.1"), ("host-b", "iptables-legacy", "192.0.2.2"),
             ("host-c", "iptables-legacy", "192.0.2.3"), ("host-c", "iptables-legacy", "192.0.2.4")]
    for host, tool, addr in rules:
        sh(["ip", "netns", "exec", lab.netns(host), tool, "-w", "-A", "INPUT", "-s", addr, "-j", "DROP"])
    try:
        doc = inventory_doc({"host-c": {"calico_iptables_backend": "nft"}})
        # nat_outgoing: every host's run writes cali-* rules, so the backend matters
        _refused(lab, tmp_path, doc, {
            "host-b": r"has iptables rules in both backends \(iptables-nft: 1, iptables-legacy: 1\) .* — keep the "
                      r"firewall in one backend \(flush the other\), or choose one for the cali-\* chains with "
                      r"calico_iptables_backend: nft or legacy for this host$",
            "host-c": r"calico_iptables_backend is nft but its 2 iptables rule\(s\) are in iptables-legacy \(none in "
                      r"iptables-nft\) — set calico_iptables_backend: legacy \(or auto\) for this host",
        }, calico_nat_outgoing=True)
    finally:
        for host, tool, addr in rules:
            sh(["ip", "netns", "exec", lab.netns(host), tool, "-w", "-D", "INPUT", "-s", addr, "-j", "DROP"])


@pytest.mark.parametrize("how, expect", [
    (["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin"],
     r"lab_fabric needs root with CAP_NET_ADMIN and CAP_SYS_ADMIN to create network namespaces \(this root process "
     r"lacks CAP_SYS_ADMIN\) — run it as root"),
    (["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"],
     r"lab_up needs root to create and delete network namespaces \(running as uid \d+\) — run it as root"),
], ids=["root-without-cap-sys-admin", "nobody"])
def test_lab_up_without_privileges_says_run_as_root(tmp_path, how, expect):
    prefix = "rol" + secrets.token_hex(1) + "p"
    inv = write_inventory(tmp_path / "inv", inventory_doc())
    home = tempfile.mkdtemp(prefix="rol-home-")  # HOME and Ansible's local temp, writable by nobody too
    os.chmod(home, 0o777)
    env = dict(os.environ, NETFLEET_LAB_PREFIX=prefix, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), HOME=home,
               ANSIBLE_LOCAL_TEMP=os.path.join(home, "tmp"), ANSIBLE_NOCOLOR="1")
    argv = [*how, str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", inv,
            str(REPO / "lab" / "playbooks" / "lab_up.yml")]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stdout.splitlines() if ln.startswith("[ERROR]")]
    assert errors and re.search(expect, errors[0]), proc.stdout[-3000:]
    assert not [n for n in namespaces() if n.startswith(prefix + "-")], "namespaces were created"
    assert not os.path.exists(f"/run/netfleet/{prefix}"), "the state directory was created"


# --- rolling safety -------------------------------------------------------------------------------------------

def test_host_failing_bird_validation_stops_the_rollout_before_batch_2(lab, tmp_path):
    # `error wait time 5;` passes Ansible's argument check (a list of ints) but not BIRD's parser:
    # the real `bird -p` rejects host-b's configuration, and only host-b's.
    doc = inventory_doc({"host-b": {"calico_node_bgp_error_wait": [5]}})
    inv = write_inventory(tmp_path / "bad-bird", doc)
    before = {h: lab.kernel_state(h) for h in HOSTS}
    proc = lab.playbook("site.yml", inventory=inv, check=False)
    assert proc.returncode != 0, proc.stdout[-3000:]

    [line] = lines_with(proc, "netfleet.calico: host 'host-b': ")
    assert re.search(rf"BIRD rejects the new /run/netfleet/{lab.prefix}/host-b/bird\.conf: .*syntax error.* — fix "
                     r"this host \(its variables or its BIRD\) and run site\.yml again", line), line
    assert "fatal: [host-b]" in proc.stdout and "fatal: [host-a]" not in proc.stdout

    # batch 1: host-a converged, host-b (rejected before any part changed) is as it was
    assert lab.block("host-a") == "172.17.0.0/24" and "bird.pid" in lab.kernel_state("host-a")["bird_files"]
    assert lab.kernel_state("host-b") == before["host-b"]
    untouched(lab, "host-b")
    # batch 2 never started: one batch of the nodes' play ran, host-c and host-d only had their facts read
    assert proc.stdout.count("PLAY [Calico nodes]") == 1
    for host in BATCH2:
        assert lab.kernel_state(host) == before[host], f"{host} changed"
        untouched(lab, host)
        # only the fact play ran there (the read; the host check was skipped): ok=1, nothing changed or failed
        assert proc.recap[host] == {"ok": 1, "changed": 0, "unreachable": 0, "failed": 0}, proc.recap


def test_fixed_inventory_rolls_out_in_two_batches(lab):
    proc = lab.playbook("site.yml")
    assert proc.stdout.count("PLAY [Calico nodes]") == 2, "expected two batches of two nodes"
    assert {h: r["changed"] for h, r in proc.recap.items() if r["changed"]}.keys() == {"host-b", "host-c", "host-d"}
    status = lab.playbook("playbooks/status.yml")
    assert "4 hosts, 12/12 BGP sessions Established, 4 blocks" in status.stdout, status.stdout[-3000:]
    assert not lab.ping_matrix()
    again = lab.playbook("site.yml")
    assert {h: r["changed"] for h, r in again.recap.items() if r["changed"]} == {}

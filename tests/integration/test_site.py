"""site.yml end to end on a real netns lab: check mode, idempotence, growth, preflight.

Needs root. One lab (inventories/lab copied to a temporary directory so it can be
edited) is built for the module, with a run-specific name prefix, and removed at the end.
"""

from __future__ import annotations

import copy
import os
import re
import time
from pathlib import Path

import pytest
import yaml
from netfleet_lab import REPO, Lab, ns_json, sh, write_inventory

pytestmark = pytest.mark.lab

HOSTS_YML = REPO / "inventories" / "lab" / "hosts.yml"


def rack1(doc):
    return doc["all"]["children"]["calico_racks"]["children"]["rack1"]["hosts"]


def rack_vars(doc, rack):
    return doc["all"]["children"]["calico_racks"]["children"][rack]["vars"]


@pytest.fixture(scope="module")
def base_doc():
    return yaml.safe_load(HOSTS_YML.read_text())


@pytest.fixture(scope="module")
def lab(tmp_path_factory, base_doc):
    prefix = os.environ.get("NETFLEET_LAB_PREFIX", "t") + "s"
    inv = write_inventory(tmp_path_factory.mktemp("inv"), base_doc)
    lab = Lab(inv, prefix)
    with lab.running():
        yield lab


def _bad(lab, tmp_path, base_doc, mutate, expect):
    """Run site.yml on a broken copy of the inventory: one-line error, no host changed."""
    doc = copy.deepcopy(base_doc)
    mutate(doc)
    inv = write_inventory(tmp_path / "bad", doc)
    before = lab.fleet_state()
    proc = lab.playbook("site.yml", inventory=str(inv), check=False)
    after = lab.fleet_state()
    assert proc.returncode != 0, proc.stdout[-3000:]
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "netfleet.calico preflight" in ln]
    assert lines, proc.stdout[-3000:]
    assert re.search(expect, lines[0]), lines[0]
    assert before == after, "a host was changed by a run that failed preflight"
    assert all(r["changed"] == 0 for r in proc.recap.values()), proc.recap
    proc.line = lines[0]
    return proc


# --- preflight: bad inventories fail before any host is touched -------------------------------------------
# (run first, on the fresh lab, so "nothing changed" is measured against untouched hosts)

PREFLIGHT_CASES = {
    "invalid_pool_cidr": (lambda d: d["all"]["vars"].update(calico_pool="172.17.0.0/33"), r"calico_pool"),
    "block_outside_pool": (lambda d: rack1(d)["host-c"].update(calico_block="10.9.0.0/24"),
                           r"host-c.*10\.9\.0\.0/24.*outside"),
    "block_overlap": (lambda d: rack1(d)["host-c"].update(calico_block="172.17.8.0/24"), r"host-[ac].*overlap"),
    "pool_exhausted": (lambda d: d["all"]["vars"].update(calico_pool="172.17.8.0/23"),
                       r"host-c.*no free /24 left in calico_pool 172\.17\.8\.0/23"),
    "duplicate_node_ip": (lambda d: rack1(d)["host-c"].update(calico_node_ip="192.168.100.101"),
                          r"host-[bc].*192\.168\.100\.101"),
    "duplicate_workload_ip": (lambda d: (rack1(d)["host-a"].update(calico_workloads=[
        {"name": "a1", "ip": "172.17.8.5"}, {"name": "a2", "ip": "172.17.8.5"}])), r"172\.17\.8\.5"),
    "workload_ip_outside_block": (lambda d: rack1(d)["host-b"].update(calico_workloads=[
        {"name": "b1", "ip": "172.17.8.9"}]), r"host-b.*172\.17\.8\.9"),
    # untrusted values (an inventory from a CMDB): each refused with its one line
    "bird_conf_injection_in_workload_name": (lambda d: rack1(d)["host-a"].update(calico_workloads=[
        {"name": 'w";password "pwned'}]), r"host-a.*workload name .* is not allowed"),
    "ipip_device_injection": (lambda d: d["all"]["vars"].update(calico_ipip_device='x";print"'),
                              r"calico_ipip_device .* is not a valid interface name"),
    "workload_in_the_hosts_own_namespace": (lambda d: rack1(d)["host-b"].update(calico_workloads=[
        {"name": "b1", "netns_path": "/proc/1/ns/net"}]), r"host-b.*netns_path '/proc/1/ns/net' is not allowed"),
    "floating_ip_loopback": (lambda d: rack1(d)["host-b"].update(calico_workloads=[
        {"name": "b1", "floating_ip": "127.0.0.1"}]), r"host-b.*is a loopback address"),
    "as_number_in_other_digits": (lambda d: rack_vars(d, "rack1").update(calico_as_number="٦٤٥١٢"),
                                  r"calico_as_number .* is not a number"),
}

# role variables that the first play (which contacts every host) would pass to a module: refused before it runs
INPUT_CASES = {
    "bird_binary_with_arguments": (lambda d: rack1(d)["host-a"].update(calico_node_bird_binary="bird -c /tmp/x"),
                                   r"host 'host-a': calico_node_bird_binary 'bird -c /tmp/x' is not allowed"),
    "bird_socket_outside_a_path": (lambda d: d["all"]["vars"].update(calico_node_bird_socket="../bird.ctl"),
                                   r"calico_node_bird_socket '../bird.ctl' is not allowed — use an absolute path"),
    "host_name_injection": (lambda d: rack1(d).update({'host-c";password "pwned': rack1(d).pop("host-c")}),
                            r"the host name is not allowed"),
}


@pytest.mark.parametrize("case", sorted(PREFLIGHT_CASES))
def test_preflight_rejects_bad_inventory(lab, tmp_path, base_doc, case):
    mutate, expect = PREFLIGHT_CASES[case]
    _bad(lab, tmp_path, base_doc, mutate, expect)


@pytest.mark.parametrize("case", sorted(INPUT_CASES))
def test_bad_role_variable_is_refused_before_any_host_is_contacted(lab, tmp_path, base_doc, case):
    mutate, expect = INPUT_CASES[case]
    proc = _bad(lab, tmp_path, base_doc, mutate, expect)
    assert set(proc.recap) == {"localhost"}, proc.recap  # no play reached a host


# --- check mode on a fresh lab changes nothing -----------------------------------------------------------

def test_check_diff_on_fresh_lab_changes_nothing(lab):
    before = lab.fleet_state()
    proc = lab.playbook("site.yml", "--check", "--diff")
    after = lab.fleet_state()
    assert before == after
    assert any(r["changed"] > 0 for r in proc.recap.values()), "check mode reported no change on a fresh lab"
    assert "+++ after" in proc.stdout or "after" in proc.stdout


# --- converge, idempotence ----------------------------------------------------------------------------------

def test_converge_then_second_run_changes_nothing(lab):
    lab.playbook("site.yml")
    status = lab.playbook("playbooks/status.yml")
    assert "3 hosts, 6/6 BGP sessions Established, 3 blocks" in status.stdout
    ping = lab.playbook("lab/playbooks/lab_ping.yml")
    assert "ping matrix: 30/30 workload pairs reachable" in ping.stdout
    second = lab.playbook("site.yml")
    assert {h: r["changed"] for h, r in second.recap.items() if r["changed"]} == {}
    assert not lab.ping_matrix()


# --- anti-spoofing: a workload sends only with its own address ----------------------------------------------

def _counter(netns, table, name):
    """A kernel counter of a namespace (/proc/net/snmp or /proc/net/netstat: header line, value line)."""
    lines = sh(["ip", "netns", "exec", netns, "cat", f"/proc/net/{table}"]).stdout.splitlines()
    for head, values in zip(lines[::2], lines[1::2]):
        keys = head.split()
        if name in keys:
            return int(values.split()[keys.index(name)])
    raise AssertionError(f"no counter {name} in /proc/net/{table}")


def test_a_workload_cannot_send_with_another_workloads_address(lab):
    attacker, victim, target = ("host-a", "a1"), ("host-c", "c1"), ("host-b", "b1")
    spoofed, target_ip = lab.workload_ip(*victim), lab.workload_ip(*target)
    attacker_ns, target_ns = lab.workload_netns(*attacker), lab.workload_netns(*target)
    assert sh(["ip", "netns", "exec", lab.netns("host-a"), "cat",
               f"/proc/sys/net/ipv4/conf/{iface_of(lab, *attacker)}/rp_filter"]).stdout.strip() == "1"
    # the attacker gives itself the victim's address (it is root in its own namespace) and sends from it
    sh(["ip", "-n", attacker_ns, "addr", "add", f"{spoofed}/32", "dev", "eth0"])
    try:
        echos, dropped = _counter(target_ns, "snmp", "InEchos"), _counter(lab.netns("host-a"), "netstat",
                                                                          "IPReversePathFilter")
        sh(["ip", "netns", "exec", attacker_ns, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", "-I", spoofed,
            target_ip], check=False)
        assert _counter(target_ns, "snmp", "InEchos") == echos, "a spoofed packet reached the target"
        assert _counter(lab.netns("host-a"), "netstat", "IPReversePathFilter") >= dropped + 3
        # its own address still works
        assert lab.ping(attacker_ns, target_ip)
        assert _counter(target_ns, "snmp", "InEchos") > echos
    finally:
        sh(["ip", "-n", attacker_ns, "addr", "del", f"{spoofed}/32", "dev", "eth0"])


def iface_of(lab, host, workload):
    """The host-side veth of a workload (Calico's name: cali + sha1 of the workload id)."""
    for link in ns_json(lab.netns(host), "link", "show"):
        if link["ifname"].startswith("cali") and link.get("link_netnsid") is not None:
            peer = ns_json(lab.workload_netns(host, workload), "link", "show", "dev", "eth0")[0]
            if link.get("ifindex") == peer.get("link_index"):
                return link["ifname"]
    raise AssertionError(f"no veth of {host}/{workload}")


# --- growth: add a host ----------------------------------------------------------------------------------

def test_add_host_keeps_blocks_and_sessions(lab, base_doc):
    blocks_before = {h: lab.kernel_state(h)["routes"] for h in lab.nodes}
    own = {h: re.search(r"blackhole (\S+) proto 80", blocks_before[h]).group(1) for h in lab.nodes}
    sessions_before = {h: lab.sessions(h) for h in lab.nodes}
    time.sleep(1.1)  # so a reset session would show a later Since

    doc = copy.deepcopy(base_doc)
    rack1(doc)["host-d"] = {"calico_node_ip": "192.168.100.103", "calico_workloads": [{"name": "d1"}, {"name": "d2"}]}
    write_inventory(Path(lab.inventory), doc)
    lab.reload()
    lab.playbook("lab/playbooks/lab_up.yml")
    lab.playbook("site.yml")
    lab.playbook("playbooks/status.yml")

    for h in own:
        now = re.search(r"blackhole (\S+) proto 80", lab.kernel_state(h)["routes"]).group(1)
        assert now == own[h], f"{h}: block changed from {own[h]} to {now}"
    for h, before in sessions_before.items():
        after = lab.sessions(h)
        for name, (_state, since, _info) in before.items():
            assert after[name][1] == since, f"{h}: session {name} was reset ({since} -> {after[name][1]})"
    assert not lab.ping_matrix()


# --- session security -----------------------------------------------------------------------------------

def test_bgp_password_everywhere_and_a_wrong_one_never_establishes(lab, base_doc):
    secret = "Sup3r-s3cret-pw"
    doc = copy.deepcopy(base_doc)
    doc["all"]["vars"]["calico_bgp_password"] = secret
    write_inventory(Path(lab.inventory), doc)
    lab.reload()
    run = lab.playbook("site.yml", "--diff", "-v")
    assert secret not in run.stdout + run.stderr, "the BGP password was printed"
    for h in lab.nodes:
        assert secret not in Path(lab.state_dir(h), "bird.conf").read_text()
        assert "password CALICO_BGP_PASSWORD" in Path(lab.state_dir(h), "bird.conf").read_text()
    status = lab.playbook("playbooks/status.yml")
    assert "fabric converged" in status.stdout, status.stdout[-3000:]

    rack1(doc)["host-c"]["calico_bgp_password"] = "not-the-fleet-password"
    write_inventory(Path(lab.inventory), doc)
    lab.reload()
    lab.playbook("site.yml")
    time.sleep(12)  # two connect-retry periods (5 s) and more
    assert not [n for n, s in lab.sessions("host-c").items() if s[2].startswith("Established")]
    a = lab.sessions("host-a")
    assert a["Mesh_192_168_100_101"][2].startswith("Established")
    assert not a["Mesh_192_168_100_102"][2].startswith("Established")

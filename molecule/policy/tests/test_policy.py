"""Verifier of the policy scenario: cali-* chains, real TCP and ICMP, floating IPs, failsafe ports.

Runs after molecule's converge and idempotence (site.yml twice, the second with nothing to change) on
inventories/lab-policy. Every listener is a small Python process started inside a namespace that writes its
own pid file; teardown kills each by that pid. A client namespace <prefix>-client on the lab segment (outside
the pool) is made here and deleted here. The steps that edit the policy run site.yml on a copy of the
inventory and converge back to the scenario's.

host-a's admin rules were made with `iptables` (nft here), host-b's with `iptables-legacy` (prepare.yml), so
the backend detection is exercised on both backends in one lab.
"""

from __future__ import annotations

import concurrent.futures
import copy
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from netfleet_lab import REPO, Lab, ns_json, sh

INVENTORY = REPO / "inventories" / "lab-policy"
FIP = "10.99.0.10"
CLIENT_IP = "192.168.100.50"
ADMIN = "-s 203.0.113.7/32 -m comment --comment nf-admin -j DROP"
LISTENER = r'''
import os, selectors, socket, sys
sel = selectors.DefaultSelector()
for port in sys.argv[2:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(port)))
    s.listen(64)
    sel.register(s, selectors.EVENT_READ)
# the pid file says "listening": written only once every port is bound (a test starts connecting then)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    for key, _ in sel.select():
        conn, addr = key.fileobj.accept()
        try:
            conn.sendall(("%s\n" % addr[0]).encode())
        finally:
            conn.close()
'''
CLIENT = r'''
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
peer = s.getpeername()[0]
try:
    data = s.recv(100).decode().strip()
except OSError:  # e.g. BIRD resets a connection from an unknown peer: connected all the same
    data = ""
print(data or "-", peer)
'''

# (source, destination, port) -> allowed; the policy set of inventories/lab-policy
TCP = {
    ("b1", "a1", 80): True,     # client -> web
    ("c1", "a1", 80): False,    # client but admin: denied by the order-10 policy
    ("b2", "a1", 80): False,    # not a client
    ("c2", "a1", 80): False,
    ("a2", "a1", 80): True,     # db egress allows web:80, web ingress allows db
    ("a1", "a2", 5432): True,   # web -> db
    ("b1", "a2", 5432): False,
    ("a1", "a2", 80): False,    # db accepts 5432 only
    ("a2", "b1", 80): False,    # db egress: web only
    ("b1", "c2", 80): True,     # nobody selects c2 or b1's egress: allow all
    ("c2", "b2", 80): True,
    ("a1", "b1", 80): True,
}
ICMP = {("b1", "a1"): True, ("b2", "a1"): False, ("c1", "a1"): False, ("b1", "c2"): True, ("a2", "b1"): False}
HOST_OF = {"a1": "host-a", "a2": "host-a", "b1": "host-b", "b2": "host-b", "c1": "host-c", "c2": "host-c"}


def write_inventory(path, doc):
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "group_vars").exists():
        shutil.copytree(INVENTORY / "group_vars", path / "group_vars")
    (path / "hosts.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def base_doc():
    return yaml.safe_load((INVENTORY / "hosts.yml").read_text())


class Processes:
    """Listeners started in namespaces, each killed by its own pid file."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.script = workdir / "listener.py"
        self.script.write_text(LISTENER)
        self.pidfiles = []

    def start(self, netns, *ports):
        pidfile = self.workdir / f"{netns}.pid"
        subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, str(self.script), str(pidfile),
                          *map(str, ports)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
        self.pidfiles.append(pidfile)
        for _unused in range(100):
            if pidfile.exists() and pidfile.read_text():
                return
            time.sleep(0.05)
        raise AssertionError(f"listener in {netns} did not start")

    def stop(self):
        for pidfile in self.pidfiles:
            if pidfile.exists() and pidfile.read_text().strip():
                try:
                    os.kill(int(pidfile.read_text()), signal.SIGTERM)
                except ProcessLookupError:
                    pass
                pidfile.unlink()


def iptables(lab, host, binary, *args):
    return sh(["ip", "netns", "exec", lab.netns(host), binary, "-w", *args])


def save(lab, host, backend):
    return sh(["ip", "netns", "exec", lab.netns(host), f"iptables-{backend}-save"]).stdout


def admin_lines(text):
    """Rules of INPUT and FORWARD that are not our jumps."""
    return [ln for ln in text.splitlines() if ln.startswith(("-A INPUT ", "-A FORWARD ")) and "cali-" not in ln]


BACKEND = {"host-a": "nft", "host-b": "legacy"}


def assert_admin_rules_untouched(lab):
    for host, backend in BACKEND.items():
        text = save(lab, host, backend)
        assert admin_lines(text) == [f"-A INPUT {ADMIN}", f"-A FORWARD {ADMIN}"], text
        assert text.count("-j cali-FORWARD") == 1 and text.count("-A INPUT -j cali-INPUT") == 1, text


def converge(lab, *args):
    proc = lab.playbook("site.yml", *args)
    return {h: r["changed"] for h, r in proc.recap.items() if h != "localhost"}


@pytest.fixture(scope="module")
def policy_lab(lab, tmp_path_factory, base_doc):
    """Molecule's converged lab, with listeners in every workload, host-a's port 22 and a client outside the pool.

    The steps that change the policy run site.yml on a copy of the inventory (the scenario's own stays as is)."""
    inventory = write_inventory(tmp_path_factory.mktemp("inv"), base_doc)
    policy = Lab(str(inventory), lab.prefix)
    policy.procs = Processes(tmp_path_factory.mktemp("procs"))
    policy.client = f"{lab.prefix}-client"
    try:
        # client namespace on the lab segment, outside the pool; it knows the floating IP via host-c
        fabric = f"{lab.prefix}-fabric"
        bridges = [link["ifname"] for link in ns_json(fabric, "link", "show", "type", "bridge")
                   if link["ifname"] != "spine"]
        assert bridges, f"no segment bridge in {fabric}"
        bridge = bridges[0]
        sh(["ip", "netns", "add", policy.client])
        sh(["ip", "-n", policy.client, "link", "add", "eth0", "type", "veth", "peer", "name", "pclient", "netns",
            fabric])
        sh(["ip", "-n", fabric, "link", "set", "pclient", "master", bridge, "up"])
        sh(["ip", "-n", policy.client, "addr", "add", f"{CLIENT_IP}/24", "dev", "eth0"])
        sh(["ip", "-n", policy.client, "link", "set", "eth0", "up"])
        sh(["ip", "-n", policy.client, "link", "set", "lo", "up"])
        sh(["ip", "-n", policy.client, "route", "add", f"{FIP}/32", "via", policy.node_ip("host-c")])
        # listeners: every workload on 80 and 5432; host-a on 22 (nothing else listens there in the lab); the client
        for host, wl in policy.all_workloads():
            policy.procs.start(policy.workload_netns(host, wl), 80, 5432)
        policy.procs.start(policy.netns("host-a"), 22)
        policy.procs.start(policy.client, 9000)
        yield policy
    finally:
        policy.procs.stop()
        sh(["ip", "netns", "del", policy.client], check=False)


def connect(netns, ip, port, timeout=1.5):
    r = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", CLIENT, ip, str(port), str(timeout)],
                       capture_output=True, check=False, text=True)
    return r.stdout.split() if r.returncode == 0 else None


def matrix(lab):
    """{pair: reached} for TCP and ICMP, all in parallel (denied pairs wait for their timeout)."""
    ip = {wl: lab.workload_ip(HOST_OF[wl], wl) for wl in HOST_OF}
    ns = {wl: lab.workload_netns(HOST_OF[wl], wl) for wl in HOST_OF}
    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        tcp = {k: pool.submit(connect, ns[k[0]], ip[k[1]], k[2]) for k in TCP}
        # three echo requests, 1 s each: an allowed pair needs one reply (a single request was lost once under
        # a loaded CI run), a denied pair must get none of the three
        icmp = {k: pool.submit(lab.ping, ns[k[0]], ip[k[1]], 3, 1) for k in ICMP}
        return ({k: f.result() is not None for k, f in tcp.items()}, {k: f.result() for k, f in icmp.items()})


def test_admin_rules_survive_and_each_host_keeps_its_backend(policy_lab):
    lab = policy_lab
    assert_admin_rules_untouched(lab)
    assert ":cali-FORWARD" in save(lab, "host-a", "nft") and ":cali-FORWARD" not in save(lab, "host-a", "legacy")
    assert ":cali-FORWARD" in save(lab, "host-b", "legacy") and ":cali-FORWARD" not in save(lab, "host-b", "nft")
    nat = save(lab, "host-a", "nft")
    assert f"-A cali-fip-dnat -d {FIP}/32 -j DNAT --to-destination 172.17.8.2" in nat
    assert "-A PREROUTING -j cali-PREROUTING" in nat and "-A POSTROUTING -j cali-POSTROUTING" in nat


def test_allowed_pairs_connect_and_denied_pairs_do_not(policy_lab):
    lab = policy_lab
    tcp, icmp = matrix(lab)
    assert tcp == TCP
    assert icmp == ICMP


def test_workload_to_own_host_dropped_other_hosts_reached(policy_lab):
    lab = policy_lab
    b1 = lab.workload_netns("host-b", "b1")
    assert connect(b1, lab.node_ip("host-b"), 179) is None        # calico_endpoint_to_host_action: drop
    assert connect(b1, lab.node_ip("host-a"), 179) is not None    # another host: forwarded, failsafe port


def test_floating_ip_reaches_workload_from_outside_and_replies_come_from_it(policy_lab):
    lab = policy_lab
    # announced: the other hosts learn the /32 by BGP from host-a
    for host in ("host-b", "host-c"):
        deadline = time.time() + 20
        while time.time() < deadline:
            routes = sh(["ip", "-n", lab.netns(host), "route", "show", f"{FIP}/32"]).stdout
            if "proto bird" in routes:
                break
            time.sleep(0.5)
        assert f"{FIP} via {lab.node_ip('host-a')}" in routes and "proto bird" in routes, routes
    seen = connect(lab.client, FIP, 80)
    assert seen == [CLIENT_IP, FIP], seen            # the workload sees the client; the client talks to the FIP
    ping = sh(["ip", "netns", "exec", lab.client, "ping", "-n", "-c", "1", "-W", "2", FIP], check=False)
    assert ping.returncode == 0 and f"from {FIP}:" in ping.stdout, ping.stdout
    # the workload's own connections out of the pool leave from its floating IP
    out = connect(lab.workload_netns("host-a", "a1"), CLIENT_IP, 9000)
    assert out == [FIP, CLIENT_IP], out
    assert connect(lab.client, FIP, 5432) is None    # policy still applies behind the floating IP


def test_deny_all_keeps_failsafe_then_removing_it_restores_traffic(policy_lab, base_doc):
    lab = policy_lab
    doc = copy.deepcopy(base_doc)
    # explicit deny rules at the lowest order: denies whatever the other policies allow (an empty policy would
    # only select, and the others' allow rules would still apply, as in Kubernetes)
    doc["all"]["vars"]["calico_policies"].append(
        {"name": "deny-all", "order": 1, "selector": "all()",
         "ingress": [{"action": "deny"}], "egress": [{"action": "deny"}]})
    write_inventory(Path(lab.inventory), doc)
    lab.reload()
    # check mode first: reports the change (with a diff of the cali-* chains), changes nothing
    before = {h: save(lab, h, BACKEND.get(h, "nft")) for h in lab.nodes}
    proc = lab.playbook("site.yml", "--check", "--diff")
    assert all(r["changed"] for h, r in proc.recap.items() if h != "localhost"), proc.recap
    assert "+-A cali-tw-cali6b1f53303a7 -j DROP" in proc.stdout  # c2, selected by no policy before

    def strip(text):  # comments and packet counters (legacy counts BGP keepalives on builtin chains)
        return [re.sub(r"\[\d+:\d+\]", "", ln) for ln in text.splitlines() if not ln.startswith("#")]
    assert {h: strip(save(lab, h, BACKEND.get(h, "nft"))) for h in lab.nodes} == \
        {h: strip(t) for h, t in before.items()}
    changed = converge(lab)
    assert all(changed.values()), changed
    tcp, icmp = matrix(lab)
    assert not any(tcp.values()) and not any(icmp.values()), (tcp, icmp)
    # failsafe: SSH and BGP to the host stay open (BGP from its peers: the sessions stay Established)
    for src in (lab.netns("host-b"), lab.client):
        assert connect(src, lab.node_ip("host-a"), 22) is not None, src
    assert connect(lab.client, lab.node_ip("host-a"), 179) is not None
    time.sleep(6)  # more than a connect-retry period: a dropped BGP packet would have reset a session by now
    assert all(s[2].startswith("Established") for s in lab.sessions("host-a").values()), lab.sessions("host-a")
    assert_admin_rules_untouched(lab)

    write_inventory(Path(lab.inventory), base_doc)
    lab.reload()
    converge(lab)
    tcp, icmp = matrix(lab)
    assert tcp == TCP and icmp == ICMP
    assert converge(lab) == {h: 0 for h in lab.nodes}
    assert_admin_rules_untouched(lab)


def test_removed_workload_loses_its_chains(policy_lab, base_doc):
    lab = policy_lab
    doc = copy.deepcopy(base_doc)
    hosts = doc["all"]["children"]["calico_racks"]["children"]["rack1"]["hosts"]
    hosts["host-b"]["calico_workloads"] = hosts["host-b"]["calico_workloads"][:1]
    write_inventory(Path(lab.inventory), doc)
    lab.reload()
    gone = "cali32f28ea03b1"  # b2
    assert f":cali-tw-{gone}" in save(lab, "host-b", "legacy")
    converge(lab)
    text = save(lab, "host-b", "legacy")
    assert f"cali-tw-{gone}" not in text and f"cali-fw-{gone}" not in text
    assert_admin_rules_untouched(lab)
    write_inventory(Path(lab.inventory), base_doc)
    lab.reload()

"""No host can hijack another's traffic: every BGP session imports exactly what the plan lets that peer
announce (its own block and floating IPs; a reflector: its racks' blocks), nothing more specific.

inventories/lab (three hosts in full mesh). host-a, as a compromised or misconfigured host would, starts
announcing host-b's block and a /32 inside it (a static protocol and an export filter edited by hand in its
bird.conf, `birdc configure`). host-b and host-c receive both and install neither: their routes to host-b's
workloads stay on host-b, host-c's workloads keep reaching host-b's, and status.yml names the peer and the
count. site.yml then puts host-a's configuration back and the fabric is converged again.
"""

from __future__ import annotations

import os
import re
import time

import pytest
from netfleet_lab import REPO, Lab, sh

pytestmark = pytest.mark.lab

INVENTORY = REPO / "inventories" / "lab"
HIJACKED = ["172.17.9.0/24", "172.17.9.2/32"]  # host-b's block, and workload b1 inside it


@pytest.fixture(scope="module")
def lab():
    lab = Lab(INVENTORY, os.environ.get("NETFLEET_LAB_PREFIX", "t") + "hj")
    with lab.running():
        lab.playbook("site.yml")
        lab.playbook("playbooks/status.yml")
        yield lab


def hijack(lab, host):
    """What a compromised host can do with its own BIRD: originate and export prefixes it does not own."""
    path = f"{lab.state_dir(host)}/bird.conf"
    with open(path) as f:
        conf = f.read()
    conf = conf.replace("filter calico_export {\n", 'filter calico_export {\n  if proto = "hijack" then accept;\n', 1)
    conf += "\nprotocol static hijack {\n  ipv4;\n" + "".join(f"  route {p} blackhole;\n" for p in HIJACKED) + "}\n"
    with open(path, "w") as f:
        f.write(conf)
    out = lab.birdc(host, "configure")
    assert "Reconfigured" in out, out


def kernel_route(lab, host, prefix):
    return sh(["ip", "-n", lab.netns(host), "route", "show", prefix]).stdout.strip()


def test_a_host_announcing_a_neighbours_block_is_rejected_everywhere(lab, report):
    b1 = lab.workload_ip("host-b", "b1")
    assert b1 == "172.17.9.2"
    before = {h: kernel_route(lab, h, "172.17.9.0/24") for h in ("host-b", "host-c")}
    assert "via 192.168.100.101" in before["host-c"], before

    hijack(lab, "host-a")
    t0 = time.monotonic()
    # the peers receive both prefixes (kept, marked filtered) ...
    deadline = t0 + 15
    while time.monotonic() < deadline:
        seen = {h: lab.birdc(h, "show", "route", "filtered") for h in ("host-b", "host-c")}
        if all(all(p in out for p in HIJACKED) for out in seen.values()):
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the hijacked prefixes never reached the peers: {seen}")
    # ... and install neither: host-b's workloads stay reachable through host-b only
    for host in ("host-b", "host-c"):
        assert "proto bird" not in kernel_route(lab, host, "172.17.9.2/32"), host
        assert kernel_route(lab, host, "172.17.9.0/24") == before[host], host
    assert "via 192.168.100.101" in sh(["ip", "-n", lab.netns("host-c"), "route", "get", b1]).stdout
    for src in ("c1", "c2"):
        assert lab.ping(lab.workload_netns("host-c", src), b1), f"host-c/{src} lost host-b's workload b1"
    # status.yml names the peer and what it announced
    status = lab.playbook("playbooks/status.yml", "-e", "calico_node_status_wait=0", check=False)
    assert status.returncode != 0, status.stdout[-2000:]
    for host in ("host-b", "host-c"):
        assert re.search(rf"{host}: host-a \(192\.168\.100\.100\) announced 2 route\(s\) it may not", status.stdout), \
            status.stdout[-3000:]

    # site.yml puts host-a's configuration back: nothing is rejected any more
    lab.playbook("site.yml")
    status = lab.playbook("playbooks/status.yml")
    assert "fabric converged: 3 hosts, 6/6 BGP sessions Established, 3 blocks" in status.stdout, status.stdout[-2000:]
    assert not lab.ping_matrix()
    report(f"test_hijack: host-a announced host-b's block and a /32 inside it: rejected by both peers, "
           f"host-c/c1 -> host-b/b1 unaffected, status.yml named it; {time.monotonic() - t0:.1f} s")

"""Scenario `cni`: containers that a real runtime (podman, CNI backend, runc) starts and stops on a netns lab.

inventories/lab-cni: two racks (route reflectors as ToRs, one AS each), three nodes with calico_cni, three
container networks (web, db, other) and one policy: db accepts tcp/5432 and ICMP from `app == 'web'` only.
Every podman call runs in the lab host's network namespace (tests/lib/netfleet_podman.py), so the plugin that
site.yml installed is executed by podman itself, with the conflists site.yml wrote. Nothing here calls the
plugin directly; the containers are real (busybox-static image, httpd as the server).

Checked: containers started after site.yml get an address of their network's range on their host, reach each
other across racks, and the policy declared for their networks holds (also for a static workload); a second
site.yml with the containers running changes nothing and removes none of them; removing the containers leaves
no veth, route, chain, ipset member, store record or address behind.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil

import pytest
from netfleet_lab import REPO, Lab, cni_plugin_state, sh
from netfleet_podman import Podman, prepare_image

pytestmark = pytest.mark.lab

INVENTORY = REPO / "inventories" / "lab-cni"
HTTP = ("httpd", "-f", "-h", "/www", "-p")


@pytest.fixture(scope="module")
def lab():
    prefix = os.environ.get("NETFLEET_LAB_PREFIX", "t") + "cn"
    lab = Lab(INVENTORY, prefix)
    with lab.running():
        lab.playbook("site.yml")
        lab.playbook("playbooks/status.yml")  # every session Established, every block everywhere
        yield lab


@pytest.fixture(scope="module")
def podman(lab):
    """One podman per CNI node, looking for plugins and conflists where site.yml put them."""
    image = prepare_image()
    root = f"/run/netfleet/{lab.prefix}-podman"
    hosts = {}
    try:
        for host in lab.nodes:
            cni = f"{lab.state_dir(host)}/cni"
            hosts[host] = Podman(lab.netns(host), f"{root}/{host}", cni_config_dir=f"{cni}/net.d",
                                 cni_plugin_dirs=(f"{cni}/bin",), image_tar=image).setup()
        yield hosts
    finally:
        errors = []
        for pm in hosts.values():
            try:
                pm.cleanup()
            except RuntimeError as exc:
                errors.append(str(exc))
        shutil.rmtree(root, ignore_errors=True)
        assert not errors, errors


def reachable(pm, name, ip, port=None):
    """ICMP (port None) or an HTTP GET from container `name` to ip:port, inside the container."""
    if port is None:
        argv = ("ping", "-c", "3", "-i", "0.2", "-W", "1", ip)
    else:
        argv = ("timeout", "3", "wget", "-q", "-O", "-", f"http://{ip}:{port}/")
    return pm.exec(name, *argv, check=False, timeout=20).returncode == 0


def test_containers_come_and_go(lab, podman, report):
    cfg = {host: json.loads(open(f"{lab.state_dir(host)}/cni/cni.json").read()) for host in lab.nodes}
    before = {host: cni_plugin_state(lab, host) for host in lab.nodes}
    n1a, n2a = podman["n1a"], podman["n2a"]

    # containers started after site.yml: web and other on n1a (rack1), db and web on n2a (rack2)
    n1a.run("web1", "web", *HTTP, "80")
    n1a.run("other1", "other", *HTTP, "80")
    n2a.run("db1", "db", *HTTP, "5432")
    n2a.run("web2", "web", *HTTP, "80")
    ip = {"web1": n1a.inspect_ip("web1"), "other1": n1a.inspect_ip("other1"),
          "db1": n2a.inspect_ip("db1"), "web2": n2a.inspect_ip("web2")}
    host_of = {"web1": "n1a", "other1": "n1a", "db1": "n2a", "web2": "n2a"}
    network_of = {"web1": "web", "other1": "other", "db1": "db", "web2": "web"}
    for name, addr in ip.items():
        rng = cfg[host_of[name]]["networks"][network_of[name]]["range"]
        assert ipaddress.ip_address(addr) in ipaddress.ip_network(rng), f"{name} {addr} is outside {rng}"
        inside = sh(["nsenter", f"--net={podman[host_of[name]].inspect(name)['NetworkSettings']['SandboxKey']}",
                     "ip", "-j", "route"]).stdout
        assert {"dst": "default", "gateway": "169.254.1.1"}.items() <= json.loads(inside)[0].items(), inside
    assert len(set(ip.values())) == len(ip)

    # across racks: nobody selects web, so web reaches web both ways; db admits web only
    assert reachable(n1a, "web1", ip["web2"]), "web1 (rack1) cannot ping web2 (rack2)"
    assert reachable(n2a, "web2", ip["web1"], 80), "web2 (rack2) cannot fetch from web1 (rack1)"
    assert reachable(n1a, "web1", ip["db1"], 5432), "web1 -> db1:5432 must be allowed (from app == 'web')"
    assert reachable(n1a, "web1", ip["db1"]), "web1 -> db1 ICMP must be allowed"
    assert not reachable(n1a, "other1", ip["db1"], 5432), "other1 -> db1:5432 must be denied"
    assert not reachable(n1a, "other1", ip["db1"]), "other1 -> db1 ICMP must be denied"
    assert reachable(n2a, "web2", ip["db1"], 5432), "web2 -> db1:5432 on the same host must be allowed"
    assert reachable(n1a, "other1", ip["web2"], 80), "other1 -> web2 is not policed"
    # a static workload labelled app=web (calico_workloads of n1a) is in db's ipset too
    s1 = lab.workload_netns("n1a", "s1")
    wget = ["ip", "netns", "exec", s1, "busybox", "timeout", "3", "busybox", "wget", "-q", "-O", "-"]
    assert sh(wget + [f"http://{ip['db1']}:5432/"], check=False).returncode == 0, "s1 (app web) -> db1 denied"

    # a second site.yml with the containers running: nothing changes, no container loses anything
    running = {host: cni_plugin_state(lab, host) for host in lab.nodes}
    second = lab.playbook("site.yml", "--diff")
    changed = {h: r["changed"] for h, r in second.recap.items() if r["changed"]}
    assert not changed, f"second site.yml changed {changed} with containers running:\n{second.stdout[-8000:]}"
    assert {host: cni_plugin_state(lab, host) for host in lab.nodes} == running
    lab.playbook("playbooks/status.yml")  # containers' /32s are not "stale routes" of the fleet status
    assert reachable(n1a, "web1", ip["db1"], 5432) and not reachable(n1a, "other1", ip["db1"], 5432)

    # a container removed and one started again: the address is not handed out twice
    n1a.rm("other1")
    n1a.run("other2", "other", *HTTP, "80")
    assert n1a.inspect_ip("other2") != ip["other1"]
    assert not reachable(n1a, "other2", ip["db1"], 5432)

    # stopping everything leaves nothing behind
    for pm in podman.values():
        for c in pm.ps():
            pm.rm(c["Names"][0])
    after = {host: cni_plugin_state(lab, host) for host in lab.nodes}
    assert after == before, "the containers left state behind"
    report(f"cni scenario: 5 podman containers on 2 racks, policy and second site.yml held; "
           f"nothing left after rm ({sum(len(s['sets']) for s in before.values())} static ipset members kept)")

"""The fabric picture and the fleet status on a real netns lab, the page checked in headless Chromium.

Needs root. inventories/lab-racks cut down to two racks (rack1: reflectors rr1a, rr1b and hosts r1h1,
r1h2; rack2: reflector rr2 and hosts r2h1, r2h2 -- 7 speakers, real BIRD in each) with a run-specific
prefix, removed at the end. playbooks/topology.yml draws it (Graphviz), Chromium loads the HTML page and
dumps the DOM it built: every host and every planned session must be there, Established; then r2h1's
BIRD is stopped by its pid file and an owned route nobody planned is added: playbooks/status.yml must
fail naming them, and the picture -- drawn from an inventory without r2h2, whose BIRD still runs -- must
show r2h1's session down, r2h2's block as a stale route and rr2's session to it as not in the plan.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from netfleet_lab import REPO, Lab, sh, write_inventory

pytestmark = pytest.mark.lab

RACKS = REPO / "inventories" / "lab-racks"
KEEP = {"rack1": ["rr1a", "rr1b", "r1h1", "r1h2"], "rack2": ["rr2", "r2h1", "r2h2"]}
STALE = "172.17.250.0/24"


def chromium():
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return name
    raise AssertionError("headless Chromium is needed (apt-get install chromium; scripts/setup installs it)")


def browse(page, tmp_path, *args):
    """Run headless Chromium on a local file with a fresh profile; no network, no background services."""
    profile = tmp_path / ("chromium-%d" % time.monotonic_ns())
    argv = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--disable-default-apps", "--user-data-dir=%s" % profile,
            *args, page.as_uri()]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


class Dom(HTMLParser):
    """Elements with an id as Chromium serialised them: {id: {tag, class, text, tooltip}}."""

    def __init__(self, text):
        super().__init__()
        self.by_id, self._open = {}, []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.by_id[a["id"]] = {"tag": tag, "class": (a.get("class") or "").split(), "text": "", "tooltip": ""}
        self._open.append((tag, a.get("id")))
        if a.get("xlink:title"):  # Graphviz puts an element's tooltip on an <a> inside its <g>
            for _t, i in reversed(self._open):
                if i and not self.by_id[i]["tooltip"] and not i.startswith("a_"):
                    self.by_id[i]["tooltip"] = a["xlink:title"]
                    break

    def handle_endtag(self, tag):
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data):
        for _t, i in self._open:
            if i:
                self.by_id[i]["text"] += data


def racks_doc():
    doc = yaml.safe_load((RACKS / "hosts.yml").read_text())
    racks = doc["all"]["children"]["calico_racks"]["children"]
    for rack in list(racks):
        if rack not in KEEP:
            del racks[rack]
            continue
        racks[rack]["hosts"] = {h: v for h, v in racks[rack]["hosts"].items() if h in KEEP[rack]}
    keep = {h for hosts in KEEP.values() for h in hosts}
    for group in ("calico_route_reflectors", "calico_nodes"):
        g = doc["all"]["children"][group]
        g["hosts"] = {h: None for h in g["hosts"] if h in keep}
    return doc


def expected_sessions():
    """The route-reflector plan, worked out by hand: hosts <-> their rack's reflectors, reflectors <-> reflectors."""
    reflectors = [h for hosts in KEEP.values() for h in hosts if h.startswith("rr")]
    out = set()
    for hosts in KEEP.values():
        for h in hosts:
            if not h.startswith("rr"):
                out |= {tuple(sorted((h, r))) for r in hosts if r.startswith("rr")}
    out |= {tuple(sorted((a, b))) for a in reflectors for b in reflectors if a < b}
    return {"session-%s--%s" % s for s in out}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    prefix = os.environ.get("NETFLEET_LAB_PREFIX", "t") + "g"
    inv = write_inventory(tmp_path_factory.mktemp("topology-inv"), racks_doc(), source=RACKS)
    lab = Lab(inv, prefix)
    with lab.running():
        lab.playbook("site.yml")
        yield lab


def draw(lab, out, *args):
    proc = lab.playbook("playbooks/topology.yml", "-e", "calico_topology_dir=%s" % out, *args)
    for name in ("fabric.dot", "fabric.svg", "fabric.html"):
        assert (out / name).stat().st_size > 0, name
    return proc


def test_converged_fabric_status_and_picture(lab, tmp_path, report):
    t0 = time.monotonic()
    status = lab.playbook("playbooks/status.yml")
    assert "fabric converged: 7 hosts, 18/18 BGP sessions Established, 4 blocks" in status.stdout
    assert re.search(r"\| rack1 \| 65001 \| 4 +\| 2 +\| 12/12 +\| 0 +\| 0 +\| 0 +\| converged \|", status.stdout)
    assert re.search(r"\| rack2 \| 65002 \| 3 +\| 1 +\| 6/6 +\| 0 +\| 0 +\| 0 +\| converged \|", status.stdout)
    assert "problem hosts" not in status.stdout

    out = tmp_path / "picture"
    draw(lab, out)
    assert (out / "fabric.svg").read_text().lstrip().startswith("<?xml")
    dom = Dom(browse(out / "fabric.html", tmp_path, "--dump-dom"))
    speakers = lab.speakers()
    for h in speakers:
        node = dom.by_id.get("host-%s" % h)
        assert node and node["tag"] == "g" and {"host", "ok"} <= set(node["class"]), (h, node)
        assert h in node["text"] and lab.node_ip(h) in node["text"]
        row = dom.by_id["row-%s" % h]
        assert row["tag"] == "tr" and "ok" in row["class"] and re.search(r"(\d+)/\1", row["text"]), row
    for h in lab.nodes:
        assert "block %s" % lab.block(h) in dom.by_id["host-%s" % h]["text"]
    drawn = {i for i, e in dom.by_id.items() if i.startswith("session-") and e["tag"] == "g"}
    assert drawn == expected_sessions()
    for sid in drawn:
        assert {"session", "up", "state-established", "planned"} <= set(dom.by_id[sid]["class"]), dom.by_id[sid]
        assert dom.by_id[sid]["tooltip"].count(": Established [") == 2, dom.by_id[sid]["tooltip"]
    assert {"rack-rack1", "rack-rack2"} <= set(dom.by_id)
    assert "converged: 7 hosts, 18/18 BGP sessions Established" in dom.by_id["summary"]["text"]

    png = tmp_path / "fabric.png"
    browse(out / "fabric.html", tmp_path, "--screenshot=%s" % png, "--window-size=1200,1000", "--hide-scrollbars")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20000
    report("topology: converged status + picture + 2 Chromium runs: %.1f s" % (time.monotonic() - t0))


def test_broken_fabric_fails_status_and_shows_down(lab, tmp_path, report):
    t0 = time.monotonic()
    pidfile = Path(lab.state_dir("r2h1"), "bird.pid")
    pid = int(pidfile.read_text())
    os.kill(pid, signal.SIGTERM)  # r2h1's BIRD, by its own pid file
    deadline = time.monotonic() + 10
    while Path("/proc/%d" % pid).exists():
        assert time.monotonic() < deadline, "r2h1's BIRD did not stop"
        time.sleep(0.1)
    sh(["ip", "-n", lab.netns("r1h1"), "route", "add", "blackhole", STALE, "proto", "80"])
    block = lab.block("r2h1")

    status = lab.playbook("playbooks/status.yml", "-e", "calico_node_status_wait=0", check=False)
    assert status.returncode != 0, status.stdout[-3000:]
    text = status.stdout
    assert re.search(r"\| rack2 \| 65002 \| 3 +\| 1 +\| 4/6 +\| 2 +\| 3 +\| 0 +\| NOT CONVERGED \(3 hosts\) \|",
                     text), text
    assert re.search(r"\| rack1 \| 65001 \| 4 +\| 2 +\| 12/12 +\| 0 +\| 4 +\| 1 +\| NOT CONVERGED \(4 hosts\) \|", text)
    assert "  r2h1 [rack2] sessions 0/1: BIRD not running" in text
    assert "  rr2 [rack2] sessions 3/4: session to r2h1 (%s) is " % lab.node_ip("r2h1") in text
    assert ("  r1h1 [rack1] sessions 2/2: stale route blackhole %s (planned block: %s)" % (STALE, lab.block("r1h1"))
            in text)
    assert "  %s (block of r2h1): no route on 6 of 6 hosts" % block in text
    assert "fabric not converged: " in text
    listed = re.findall(r"^\s+(\S+) \[rack\d\] sessions \d+/\d+: ", text, re.M)
    assert listed == ["r1h1", "r2h1", "rr2"], text  # only the hosts with a problem of their own
    assert "problem hosts (3 of 7):" in text

    # the picture, drawn from an inventory without r2h2 while r2h2's BIRD still runs: its block is a stale
    # BGP route everywhere and rr2's session to it is not in the plan
    doc = racks_doc()
    del doc["all"]["children"]["calico_racks"]["children"]["rack2"]["hosts"]["r2h2"]
    del doc["all"]["children"]["calico_nodes"]["hosts"]["r2h2"]
    inv = write_inventory(tmp_path / "without-r2h2", doc, source=Path(lab.inventory))
    out = tmp_path / "picture"
    proc = lab.playbook("playbooks/topology.yml", "-e", "calico_topology_dir=%s" % out, "-e",
                        "calico_node_status_wait=0", inventory=str(inv))
    assert "6 hosts, 15/17 BGP sessions Established, 3 blocks" in proc.stdout
    dom = Dom(browse(out / "fabric.html", tmp_path, "--dump-dom"))
    broken = dom.by_id["session-r2h1--rr2"]
    assert "down" in broken["class"] and "up" not in broken["class"], broken
    assert {"state-connecting", "state-down"} & set(broken["class"]), broken
    assert "r2h1: missing (BIRD not running)" in broken["tooltip"], broken["tooltip"]
    planned = expected_sessions() - {"session-r2h2--rr2"}
    for sid in planned - {"session-r2h1--rr2"}:
        assert {"state-established", "planned"} <= set(dom.by_id[sid]["class"]), (sid, dom.by_id[sid])
    unplanned = {i: e for i, e in dom.by_id.items() if i.startswith("session-") and "unplanned" in e["class"]}
    assert len(unplanned) == 1 and "192.168.102.12" in next(iter(unplanned.values()))["tooltip"], unplanned
    assert {i for i, e in dom.by_id.items() if i.startswith("session-") and e["tag"] == "g"} == planned | set(unplanned)
    assert "problem" in dom.by_id["host-r2h1"]["class"] and "BIRD down" in dom.by_id["host-r2h1"]["text"]
    row = dom.by_id["row-r2h1"]
    assert "problem" in row["class"] and "0/1" in row["text"] and "BIRD not running" in row["text"]
    r1h1 = dom.by_id["row-r1h1"]["text"]
    assert STALE in r1h1 and "%s proto bird (no host in the plan owns it)" % lab.block("r2h2") in r1h1, r1h1
    assert "Client_192_168_102_12 to 192.168.102.12 is not in the plan" in dom.by_id["row-rr2"]["text"]
    assert "NOT converged" in dom.by_id["summary"]["text"]
    assert "row-session-r2h1--rr2" in dom.by_id
    report("topology: broken status + picture + Chromium: %.1f s" % (time.monotonic() - t0))


def test_without_graphviz_one_line_says_install_it(lab, tmp_path):
    proc = lab.playbook("playbooks/topology.yml", "-e", "calico_topology_dot=%s" % (tmp_path / "no-dot"),
                        "-e", "calico_topology_dir=%s" % (tmp_path / "out"), check=False)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stdout.splitlines() if "install graphviz" in ln]
    assert lines and "netfleet.calico topology: Graphviz" in lines[0], proc.stdout[-2000:]
    assert not (tmp_path / "out").exists()
    assert "r1h1" not in proc.recap  # failed before any host was read


def test_names_reach_svg_and_page_escaped(tmp_path):
    """Real dot and Chromium on a fleet whose names try to inject markup and Graphviz escapes."""
    from ansible_collections.netfleet.calico.plugins.filter.fabric import fabric
    from ansible_collections.netfleet.calico.plugins.filter.fabric_topology import build_topology
    from ansible_collections.netfleet.calico.plugins.filter.topology_html import topology_html

    evil = 'h<img src=x onerror=alert(1)>"\\N&amp;'
    hv = {n: {"calico_pool": "172.17.0.0/16", "calico_block_prefix": 24, "calico_node_ip": ip}
          for n, ip in (("evilhost", "10.0.0.1"), ("plain", "10.0.0.2"))}
    # preflight refuses such a name; the picture and the page escape names anyway (a plan is only data)
    plan = json.loads(json.dumps(fabric(hv, {"all": list(hv), "calico_nodes": list(hv)})).replace(
        "evilhost", json.dumps(evil)[1:-1]))
    statuses = {n: {"bird_running": n == "plain", "sessions": [], "routes": {}} for n in (evil, "plain")}
    topo = build_topology(statuses, plan, title="<script>alert(2)</script>")
    (tmp_path / "f.dot").write_text(topo["dot"])
    subprocess.run(["dot", "-Tsvg", "-o", str(tmp_path / "f.svg"), str(tmp_path / "f.dot")], check=True)
    page = tmp_path / "f.html"
    page.write_text(topology_html(topo, (tmp_path / "f.svg").read_text()))
    dump = browse(page, tmp_path, "--dump-dom")
    assert "<img" not in dump and "<script>alert" not in dump
    dom = Dom(dump)
    node = next(e for i, e in dom.by_id.items() if i.startswith("host-h_img"))
    assert evil in node["text"], node  # shown as text, \N not expanded, &amp; not decoded twice
    assert evil in next(e for i, e in dom.by_id.items() if i.startswith("row-h_img"))["text"]

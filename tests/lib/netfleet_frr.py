"""A router outside the fleet for the lab tests: FRR's zebra and bgpd started by hand in a namespace of the test,
configured by the test (not by the collection), with their config, pid files, sockets and logs in a temp dir."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time

from netfleet_lab import alive, namespaces, ns_json, sh

FRR = "/usr/lib/frr"


def wait_for(what, check, timeout=20):
    """``check()`` once it is true; after ``timeout`` s a failure saying ``what`` (a callable: read then)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            assert result, what() if callable(what) else what
            return result
        time.sleep(0.25)


class Router:
    """FRR's zebra and bgpd in namespace ``<prefix>-<name>``, its eth0 on the segment of lab host ``beside``
    (plugged into the fabric bridge that host's eth0 is on) with ``address`` (CIDR) and ``address6`` (an IPv6 CIDR,
    dual stack, or None), ``loopbacks`` (CIDRs of either family) on lo."""

    def __init__(self, lab, name, beside, address, loopbacks, config, address6=None):
        self.lab = lab
        self.netns = f"{lab.prefix}-{name}"
        self.port = name
        self.beside = beside
        self.address = address
        self.address6 = address6
        self.loopbacks = loopbacks
        self.config = config
        self.dir = tempfile.mkdtemp(prefix=f"netfleet-{lab.prefix}-frr-")
        shutil.chown(self.dir, "frr", "frr")

    def _bridge(self):
        """The fabric bridge that ``beside``'s eth0 is plugged into (its veth peer's master)."""
        fabric = f"{self.lab.prefix}-fabric"
        peer = ns_json(self.lab.netns(self.beside), "link", "show", "eth0")[0]["link_index"]
        masters = [link.get("master") for link in ns_json(fabric, "link", "show") if link["ifindex"] == peer]
        assert masters and masters[0], (self.beside, masters)
        return masters[0]

    def start(self):
        fabric = f"{self.lab.prefix}-fabric"
        bridge = self._bridge()
        sh(["ip", "netns", "add", self.netns])
        sh(["ip", "-n", fabric, "link", "add", self.port, "type", "veth", "peer", "name", "eth0", "netns", self.netns])
        sh(["ip", "-n", fabric, "link", "set", self.port, "master", bridge, "up"])
        for argv in (["link", "set", "lo", "up"], *(["addr", "add", a, "dev", "lo"] for a in self.loopbacks),
                     ["addr", "add", self.address, "dev", "eth0"],
                     *([["addr", "add", self.address6, "dev", "eth0", "nodad"]] if self.address6 else []),
                     ["link", "set", "eth0", "up"]):
            sh(["ip", "-n", self.netns, *argv])
        conf = os.path.join(self.dir, "frr.conf")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(self.config)
        shutil.chown(conf, "frr", "frr")
        for daemon in ("zebra", "bgpd"):
            sh(["ip", "netns", "exec", self.netns, f"{FRR}/{daemon}", "-d", "-f", conf, "-i", self.pidfile(daemon),
                "-z", os.path.join(self.dir, "zserv.api"), "--vty_socket", self.dir, "-P", "0",
                "--log", f"file:{self.dir}/{daemon}.log"])
        with open(f"{self.dir}/bgpd.log", encoding="utf-8") as f:
            log = f.read()
        assert "No such command" not in log, log  # the configuration was taken whole

    def pidfile(self, daemon):
        return os.path.join(self.dir, f"{daemon}.pid")

    def vtysh(self, command):
        out = sh(["ip", "netns", "exec", self.netns, "vtysh", "--vty_socket", self.dir, "-c", command]).stdout
        return json.loads(out)

    def stop(self):
        for daemon in ("bgpd", "zebra"):
            with contextlib.suppress(OSError, ValueError), open(self.pidfile(daemon), encoding="utf-8") as f:
                pid = int(f.read().strip())
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 5
                while alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
        if self.netns in namespaces():
            sh(["ip", "netns", "del", self.netns], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

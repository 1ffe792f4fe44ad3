# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers for talking to BIRD 2 through birdc: parse its replies, decide whether
a daemon recorded in a pid file is alive. Stdlib only (runs on target hosts)."""

from __future__ import annotations

import os
import re

_HEADER = re.compile(r"^Name\s+Proto\s+Table\s+State\s+Since\s+Info\s*$")
# "name  Proto  Table  State  YYYY-MM-DD HH:MM:SS[.fff]  Info..." (timeformat protocol iso long)
# or the short default "HH:MM:SS.fff".
_PROTO_LINE = re.compile(
    r"^(?P<name>\S+)\s+(?P<proto>\S+)\s+(?P<table>\S+)\s+(?P<state>\S+)\s+"
    r"(?P<since>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?|\S+)\s*(?P<info>.*?)\s*$"
)
_ROUTES = re.compile(r"Routes:\s+(\d+) imported, (?:(\d+) filtered, )?(\d+) exported")

# birdc 'configure' answers; see BIRD 2 documentation, "Remote control".
CONFIGURE_OK = ("Reconfigured", "Reconfiguration in progress", "Reconfiguration already in progress")


def parse_protocols(text):
    """Parse `birdc show protocols all` into a list of dicts.

    Every protocol gets name, proto, table, state, since and info; BGP protocols
    also get description, bgp_state, neighbor_address, neighbor_as, local_as and
    imported/exported route counts when BIRD prints them.
    """
    protocols = []
    current = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line or line.startswith("BIRD ") or _HEADER.match(line):
            continue
        if not raw[0].isspace():
            m = _PROTO_LINE.match(line)
            if not m:
                continue
            current = {
                "name": m.group("name"),
                "proto": m.group("proto"),
                "table": m.group("table"),
                "state": m.group("state"),
                "since": m.group("since"),
                "info": m.group("info"),
            }
            protocols.append(current)
            continue
        if current is None:
            continue
        stripped = line.strip()
        key, sep, value = stripped.partition(":")
        if not sep:
            continue
        value = value.strip()
        key = key.strip()
        if key == "Description":
            current["description"] = value
        elif key == "BGP state":
            current["bgp_state"] = value
        elif key == "Neighbor address":
            current["neighbor_address"] = value
        elif key == "Neighbor AS":
            current["neighbor_as"] = int(value)
        elif key == "Local AS":
            current["local_as"] = int(value)
        elif key == "Last error":
            current["last_error"] = value
        elif key == "Routes":
            m = _ROUTES.search(stripped)
            if m:
                current["imported"] = int(m.group(1))
                current["exported"] = int(m.group(3))
    return protocols


def bgp_sessions(protocols):
    """BGP sessions from parse_protocols(), in the shape the status playbook prints."""
    sessions = []
    for p in protocols:
        if p["proto"] != "BGP":
            continue
        local_as = p.get("local_as")
        neighbor_as = p.get("neighbor_as")
        kind = None
        if local_as is not None and neighbor_as is not None:
            kind = "ibgp" if local_as == neighbor_as else "ebgp"
        sessions.append({
            "name": p["name"],
            "description": p.get("description", ""),
            "peer_ip": p.get("neighbor_address"),
            "peer_as": neighbor_as,
            "local_as": local_as,
            "type": kind,
            "state": p["state"],
            "since": p["since"],
            "info": p.get("bgp_state") or p["info"] or p["state"],
            "established": (p.get("bgp_state") or p["info"]).startswith("Established"),
            "imported": p.get("imported", 0),
            "exported": p.get("exported", 0),
            "last_error": p.get("last_error", ""),
        })
    return sessions


def configure_result(text):
    """Return (ok, message) for the reply of `birdc configure`."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("BIRD ")]
    for ln in lines:
        if ln.startswith(CONFIGURE_OK):
            return True, ln
    return False, " ".join(lines) or "no answer from birdc"


def pid_alive(pidfile, must_contain=None):
    """Return the pid recorded in pidfile if that process exists (and, when
    must_contain is given, its command line contains that string); else None.
    A stale pid file (process gone or pid reused by another program) gives None."""
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return None
    if must_contain and must_contain not in cmdline:
        return None
    return pid


def same_netns(pid):
    """True if process pid lives in the caller's network namespace."""
    try:
        return os.readlink("/proc/%d/ns/net" % pid) == os.readlink("/proc/self/ns/net")
    except OSError:
        return False

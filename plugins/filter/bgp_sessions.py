# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bgp_sessions: name a host's BGP sessions and plan a make-before-break change of them."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.netfleet.calico.plugins.plugin_utils.bgp import session_timing

# Protocol name prefix per kind of session (status_report reads them back).
KINDS = {"mesh": "Mesh", "to_reflector": "RR", "client": "Client", "reflector_peer": "Peer", "ebgp": "Global"}


def protocol_name(peer, topology, role):
    """BIRD protocol name of a session: kind prefix + peer address (Calico names mesh peers Mesh_<ip>)."""
    if topology == "full_mesh":
        kind = "mesh"
    elif peer.get("type") == "ebgp":
        kind = "ebgp"
    elif peer.get("rr_client"):
        kind = "client"
    else:
        kind = "reflector_peer" if role == "reflector" else "to_reflector"
    return "%s_%s" % (KINDS[kind], str(peer["ip"]).replace(".", "_").replace(":", "_"))


def bgp_sessions(plan, topology, status=None):
    """Sessions of one host from its fabric plan entry (``calico_fabric.hosts[host]``).

    Returns ``peers`` (the planned peers, each with its ``protocol`` name) and, given the host's current
    ``calico_bgp_status`` result, the transition that keeps traffic flowing while peers change:

    - ``wait_for``: planned protocols that are not Established under that name now (new, renamed, or down);
    - ``lingering``: Established sessions the plan drops, to keep until ``wait_for`` is empty, as
      ``{name, description, ip, as_number, local_as, passive}`` so the template renders them unchanged
      (a session whose peer address the plan keeps under another name cannot stay: same neighbour twice);
    - ``needed``: true when both are non-empty (e.g. full mesh -> route reflectors).
    """
    if not isinstance(plan, dict) or not isinstance(plan.get("peers"), list):
        raise AnsibleFilterError("netfleet.calico.bgp_sessions: expects a host entry of the fabric plan")
    role = plan.get("role", "node")
    peers = [dict(p, protocol=protocol_name(p, topology, role)) for p in plan["peers"]]
    out = {"peers": peers, "wait_for": [], "lingering": [], "needed": False}
    status = status or {}
    if not status.get("bird_running"):
        return out
    running = {s["name"]: s for s in status.get("sessions", []) if s.get("name")}
    wanted = {p["protocol"] for p in peers}
    wanted_ips = {str(p["ip"]) for p in peers}
    wait_for = sorted(p["protocol"] for p in peers if not running.get(p["protocol"], {}).get("established"))
    node_ip = plan.get("node_ip")
    lingering = [
        {"name": name, "description": s.get("description") or name, "ip": s["peer_ip"],
         "as_number": s.get("peer_as"), "local_as": s.get("local_as"),
         # rendered as the plan rendered it while it ran (any change would make BIRD reset it)
         "passive": bool(node_ip) and session_timing(node_ip, s["peer_ip"])[0],
         "connect_delay_offset": session_timing(node_ip, s["peer_ip"], spread=name.startswith("Mesh_"))[1]
         if node_ip else 0}
        for name, s in sorted(running.items())
        if name not in wanted and s.get("established") and s.get("peer_ip") and s["peer_ip"] not in wanted_ips
    ]
    needed = bool(wait_for and lingering)
    out.update(wait_for=wait_for, lingering=lingering if needed else [], needed=needed)
    return out


class FilterModule:
    def filters(self):
        return {"bgp_sessions": bgp_sessions}

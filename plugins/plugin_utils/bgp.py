# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who dials a BGP session and when: one rule for the fabric plan and for the sessions a
make-before-break transition keeps (their configuration must not change, or BIRD resets them)."""

from __future__ import annotations

import ipaddress
import zlib

from ansible.errors import AnsibleFilterError

# Dialers wait calico_node_bgp_connect_delay plus 0, 1 or 2 s (the article's 2 s is the base).
CONNECT_DELAY_SPREAD = 3


def session_timing(local, remote, spread=True):
    """``(passive, connect_delay_offset)`` of a session between two speakers (not reflector-client).

    Exactly one end dials (the other is ``passive on``), chosen by a hash of the two addresses rather
    than "the lower address waits": with that rule the lowest host of a 120-host mesh takes 119 SYNs at
    once, and BIRD's listen backlog of 8 drops most of them, which then wait for SYN retransmits
    (1 s, 3 s, ...). The hash gives every host about half of its sessions to accept, and the dialers'
    connect delays are spread over CONNECT_DELAY_SPREAD seconds, so each listener sees a trickle.
    The result depends only on the two addresses: adding hosts never changes an existing session.
    ``spread=False`` (the few reflector-to-reflector sessions of the route_reflector topology, where no
    listener gets a burst) keeps the offset 0: the spread only delays them (measured: 120 hosts with
    reflectors took 5.3 s instead of 2.9 s with it).
    """
    a, b = int(ipaddress.ip_address(str(local))), int(ipaddress.ip_address(str(remote)))
    low, high = min(a, b), max(a, b)
    digest = zlib.crc32(('%d-%d' % (low, high)).encode())
    dialer = low if digest & 1 else high
    return a != dialer, (digest >> 1) % CONNECT_DELAY_SPREAD if spread else 0


def announced(host):
    """What a host itself announces: its blocks and its workloads' floating IPs (exact prefixes)."""
    return host_blocks(host) + list(host.get('floating_ips') or [])


def host_blocks(host):
    """Every block of a host's plan entry (``blocks``, the first is ``block``); a plan without ``blocks``
    (made before hosts could hold several) has its ``block`` only."""
    if host.get('blocks'):
        return list(host['blocks'])
    return [host['block']] if host.get('block') else []


def plan_imports(plan_hosts, topology, pool, block_prefix, floating_ips, shares=None):
    """Per host and session, what the plan lets that peer announce, as ``host['imports'][peer]``:

    - ``prefixes``: exact prefixes accepted (nothing more specific);
    - ``any_block``: the BIRD prefix pattern of any block of the pool (exactly the block length), or None;
      ``any_floating``: any floating IP of the fleet -- both but ``except`` (prefixes refused with everything
      inside them);
    - ``origin_check`` (sessions from a reflector or a spine only): the route's origin AS must be that of the
      rack it belongs to (``plan['origins']``);
    - ``receive_limit``: a bound on what the session may send at all.

    A reflector takes from its client, and a full-mesh host from its peer, what that peer announces itself. A
    host takes from its rack's reflector (and a reflector from one of its own rack) any block and floating
    IP but its own; a reflector from another rack's reflector, or from a spine, any but its own rack's (a third
    rack's too, as a transit path), each with its rack's origin AS. So a host that announces a block it does not
    own, or a /32 inside one, is refused by every session, and adding a host changes the configuration of its
    peers only. With ``shares`` (``{rack: share}``, ``calico_rack_block_pool``) every session from a reflector or
    a spine also takes the other racks' shares (their aggregates), never the host's own rack's."""
    shares = shares or {}
    by_rack = {}
    for host in plan_hosts.values():
        by_rack.setdefault(host.get('rack'), []).extend(announced(host))
    net = ipaddress.ip_network(pool)
    any_count = 2 ** (block_prefix - net.prefixlen) + len(floating_ips) + len(shares)
    for host in plan_hosts.values():
        host['imports'] = {}
        own_share = [shares[host['rack']]] if host.get('rack') in shares else []
        aggregates = _sorted(s for rack, s in shares.items() if rack != host.get('rack'))
        for peer in host['peers']:
            other = plan_hosts.get(peer['name']) if not peer.get('spine') else None
            if peer.get('spine') or (topology == 'route_reflector' and other['role'] == 'reflector'):
                same = other is not None and other.get('rack') == host.get('rack')
                refused = announced(host) if same else by_rack.get(host.get('rack'), [])
                imports = {'prefixes': aggregates, 'any_block': f'{net}{{{block_prefix},{block_prefix}}}',
                           'any_floating': bool(floating_ips),
                           'except': [p if _is_host(p) else p + '+' for p in _sorted(refused)] + own_share,
                           'origin_check': not same,
                           'receive_limit': any_count + 64}
            else:
                prefixes = _sorted(announced(other))
                imports = {'prefixes': prefixes, 'any_block': None, 'any_floating': False, 'except': [],
                           'receive_limit': 4 * len(prefixes) + 64}
            host['imports'][peer['name']] = imports


def _is_host(prefix):
    """A floating IP's exact prefix (``/32``, ``/128``): nothing lies inside it."""
    return prefix.endswith(('/32', '/128'))


def _sorted(prefixes):
    return sorted(set(prefixes), key=_prefix_key)


def _prefix_key(prefix):
    net = ipaddress.ip_network(prefix)
    return int(net.network_address), net.prefixlen


# Protocol name prefix per kind of session (status_report reads them back).
# External: a router outside the fleet (calico_bgp_peers, plugin_utils.external_peers).
KINDS = {"mesh": "Mesh", "to_reflector": "RR", "client": "Client", "reflector_peer": "Peer", "ebgp": "Global",
         "external": "External"}


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
      ``{name, description, ip, as_number, local_as, passive}`` (and ``local_ip, type, direct`` for a reflector's
      eBGP session, which ran from its spine address) so the template renders them unchanged
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
    # sessions to routers outside the fleet are never waited for nor kept: they are not part of a peer change
    external = [p for p in plan.get("external_peers") or [] if isinstance(p, dict)]
    wanted = {p["protocol"] for p in peers} | {p["protocol"] for p in external}
    wanted_ips = {str(p["ip"]) for p in peers} | {str(p["ip"]) for p in external}
    wait_for = sorted(p["protocol"] for p in peers if not running.get(p["protocol"], {}).get("established"))
    lingering = [_lingering(plan, topology, role, name, s) for name, s in sorted(running.items())
                 if name not in wanted and s.get("established") and s.get("peer_ip") and s["peer_ip"] not in wanted_ips]
    needed = bool(wait_for and lingering)
    out.update(wait_for=wait_for, lingering=lingering if needed else [], needed=needed)
    return out


def _lingering(plan, topology, role, name, session):
    """A running session the plan drops, rendered as the plan rendered it while it ran (any change of its
    addresses, dialing side, ``direct``/``multihop`` or GTSM would make BIRD reset it). A reflector's eBGP
    session in route_reflector ran from its spine address: to another rack's reflector, or to a spine."""
    peer_ip = session["peer_ip"]
    spine = (topology == "route_reflector" and role == "reflector" and plan.get("spine_ip")
             and session.get("local_as") is not None and session.get("local_as") != session.get("peer_as"))
    local = plan.get("spine_ip") if spine else plan.get("node_ip")
    prefixlen = plan.get("spine_prefixlen") if spine else plan.get("node_prefixlen")
    direct = None
    if local and prefixlen is not None:
        direct = ipaddress.ip_address(str(peer_ip)) in ipaddress.ip_network(f"{local}/{prefixlen}", strict=False)
    timing = session_timing(local, peer_ip, spread=name.startswith("Mesh_") and not spine) if local else (False, 0)
    out = {"name": name, "description": session.get("description") or name, "ip": peer_ip,
           "as_number": session.get("peer_as"), "local_as": session.get("local_as"),
           "passive": bool(local) and timing[0], "connect_delay_offset": timing[1],
           # the template reads these of every kept session; None renders a session as it always was
           "local_ip": None, "type": None, "direct": None}
    if spine:
        out.update(local_ip=local, type="ebgp", direct=direct)
    return out

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


def bgp_sessions(plan, topology, status=None, later=None):
    """Sessions of one host from its fabric plan entry (``calico_fabric.hosts[host]``).

    Returns ``peers`` (the planned peers, each with its ``protocol`` name), ``peers6`` (with
    ``calico_bgp_ipv6_sessions``: the IPv6 session beside each peer's IPv4 one, :func:`ipv6_session`) and, given the
    host's current ``calico_bgp_status`` result, the transition that keeps traffic flowing while peers change:

    - ``wait_for``: planned protocols that are not Established under that name now (new, renamed, or down);
    - ``lingering``: Established sessions the plan drops, to keep until ``wait_for`` is empty, as
      ``{name, description, ip, as_number, local_as, passive, family: 4}`` (and ``local_ip, type, direct`` for a
      reflector's eBGP session, which ran from its spine address) so the template renders them unchanged
      (a session whose peer address the plan keeps under another name cannot stay: same neighbour twice); an IPv6
      session of a peer the plan keeps (``calico_bgp_ipv6_sessions`` turned off) as :func:`ipv6_session` renders it
      (``family: 6``): its IPv6 routes go back into the IPv4 session;
    - ``carry_v6``: IPv4 sessions whose ipv6 channel keeps carrying the IPv6 routes until the new IPv6 session
      beside it brings them (``calico_bgp_ipv6_sessions`` turned on; a channel cannot be added to or removed from
      a running session without BIRD resetting it, so with the option on it stays, empty);
    - ``replaced``: what must come through other sessions before the old ones go: the names of ``lingering``
      and ``<name>:ipv6`` for each of ``carry_v6`` (its IPv6 routes only);
    - ``needed``: true when a transition is (e.g. full mesh -> route reflectors, the IPv6 sessions on or off).

    ``later``: peers converged after this host (site.yml: a reflector-only host's nodes). An IPv6 session to one
    cannot come up, nor can its IPv4 session bring the IPv6 routes, before that peer runs its new configuration:
    the change toward it is neither waited for nor finished here. ``final_lingering`` and ``final_carry_v6`` keep
    it in the configuration this run leaves, and ``unfinished`` says a later run of this host finishes it.
    """
    if not isinstance(plan, dict) or not isinstance(plan.get("peers"), list):
        raise AnsibleFilterError("netfleet.calico.bgp_sessions: expects a host entry of the fabric plan")
    role = plan.get("role", "node")
    later = set(later or [])
    peers = [dict(p, protocol=protocol_name(p, topology, role)) for p in plan["peers"]]
    peers6 = [ipv6_session(p, p["ip_v6"], topology, role) for p in peers if p.get("ip_v6")]
    out = {"peers": peers, "peers6": peers6, "wait_for": [], "lingering": [], "carry_v6": [], "replaced": [],
           "needed": False, "final_lingering": [], "final_carry_v6": [], "unfinished": False}
    status = status or {}
    if not status.get("bird_running"):
        return out
    running = {s["name"]: s for s in status.get("sessions", []) if s.get("name")}

    def established(name):
        return bool(running.get(name, {}).get("established"))

    # sessions to routers outside the fleet are never waited for nor kept: they are not part of a peer change
    external = [p for p in plan.get("external_peers") or [] if isinstance(p, dict)]
    wanted = {p["protocol"] for p in peers + peers6 + external}
    wanted_ips = {str(p["ip"]) for p in peers + peers6 + external}
    wait_for = sorted(p["protocol"] for p in peers + peers6 if not established(p["protocol"])
                      and not (p.get("family") == 6 and p["name"] in later))
    dropped = [(name, s) for name, s in sorted(running.items())
               if name not in wanted and s.get("established") and s.get("peer_ip") and s["peer_ip"] not in wanted_ips]
    lingering = [_lingering(plan, topology, role, name, s) for name, s in dropped if not _fleet_v6(name, s)]
    # an IPv6 session the plan drops while it keeps the IPv4 session to that peer: its routes move back there
    by_name = {p["name"]: p for p in peers if p.get("next_hop_v6")}
    lingering6 = [dict(ipv6_session(by_name[s.get("description")], s["peer_ip"], topology, role), protocol=name,
                       name=name)
                  for name, s in dropped if _fleet_v6(name, s) and s.get("description") in by_name
                  and s.get("peer_as") == by_name[s["description"]]["as_number"]
                  and established(by_name[s["description"]]["protocol"])]
    carry = [p for p in peers6 if not established(p["protocol"]) and established(p["v4_protocol"])]
    now6 = [k for k in lingering6 if k["description"] not in later]
    carry_now = [p["v4_protocol"] for p in carry if p["name"] not in later]
    needed = bool((wait_for and (lingering or carry_now)) or now6)
    kept = (lingering if needed else []) + now6
    final_lingering = [k for k in lingering6 if k["description"] in later]
    final_carry = [p["v4_protocol"] for p in carry if p["name"] in later]
    out.update(wait_for=wait_for, lingering=kept + final_lingering,
               carry_v6=(carry_now if needed else []) + final_carry, needed=needed,
               replaced=[k["name"] for k in kept] + ["%s:ipv6" % name for name in (carry_now if needed else [])],
               final_lingering=final_lingering, final_carry_v6=final_carry,
               unfinished=bool(final_lingering or final_carry))
    return out


def ipv6_session(peer, ip, topology, role):
    """The IPv6 session to ``ip`` beside a peer's IPv4 one (``calico_bgp_ipv6_sessions``): from the host's IPv6
    address of that relation (the peer's ``next_hop_v6``), the same dialing side, GTSM, BFD, ``direct`` and
    reflector client as the IPv4 session; named like it after the IPv6 address (``Mesh_fd00__2``), so distinct
    and stable. ``description``: the peer's name; ``v4_protocol``: the IPv4 session's name."""
    six = {k: v for k, v in peer.items() if k != "ip_v6"}
    six.update(ip=str(ip), local_ip=peer["next_hop_v6"], family=6, v4_protocol=peer["protocol"],
               description=peer["name"])
    six["protocol"] = protocol_name(six, topology, role)
    return six


def _fleet_v6(name, session):
    """A running session of the fleet (not a router outside it) over IPv6: a ``calico_bgp_ipv6_sessions`` one."""
    return ":" in str(session.get("peer_ip")) and name.split("_", 1)[0] in set(KINDS.values()) - {KINDS["external"]}


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
           "local_ip": None, "type": None, "direct": None, "family": 4}
    if spine:
        out.update(local_ip=local, type="ebgp", direct=direct)
    return out

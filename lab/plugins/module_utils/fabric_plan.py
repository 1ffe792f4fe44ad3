# Copyright (c) netfleet.calico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the lab fabric needs: the namespaces' state as `ip -j -d` reports it (NsState), the wiring as found and
as wanted in the same words (the diff), and the plan of `ip -batch` lines that turns one into the other."""

from __future__ import annotations

GC_THRESH = '/proc/sys/net/ipv4/neigh/default/gc_thresh%d'
ROUTE_PROTO = 'static'       # the lab's own routes on reflectors and the router (BIRD's are proto bird, ours 80)


class NsState:
    """What one namespace holds, as `ip -j -d` reports it."""

    def __init__(self, name, addrs=(), routes=(), nsids=(), netconf=()):
        self.name = name
        self.links = {link['ifname']: link for link in addrs}
        self.by_index = {link['ifindex']: link for link in addrs}
        self.routes = list(routes)
        self.nsids = {e['nsid']: e.get('name') for e in nsids if 'nsid' in e}
        self.forwarding = any(c.get('family') == 'inet' and c.get('interface') == 'all' and c.get('forwarding')
                              for c in netconf)

    def kind(self, dev):
        return (self.links[dev].get('linkinfo') or {}).get('info_kind')

    def up(self, dev):
        return 'UP' in self.links[dev].get('flags', ())

    def inet(self, dev):
        """The device's IPv4 addresses and its global IPv6 ones (the kernel's link-local ones are not the lab's)."""
        return [f"{a['local']}/{a['prefixlen']}" for a in self.links[dev].get('addr_info', ())
                if a.get('family') == 'inet' or (a.get('family') == 'inet6' and a.get('scope') == 'global')]

    def peer(self, dev):
        """(namespace name, ifindex) of a veth's peer, or None; the name is None unless nsids were read."""
        link = self.links.get(dev)
        if link is None or self.kind(dev) != 'veth' or 'link_index' not in link:
            return None
        if 'link_netnsid' in link:
            return self.nsids.get(link['link_netnsid']), link['link_index']
        return self.name, link['link_index']


# --------------------------------------------------------------------------------------------- describe (diff)


def _peer_name(states, ns_state, dev, fabric_ports):
    peer = ns_state.peer(dev)
    if peer is None:
        return '?'
    peer_ns, index = peer
    if peer_ns is None:  # a host or router end: look its pair up from the fabric side
        port = fabric_ports.get((ns_state.name, ns_state.links[dev]['ifindex']))
        if port and index == port[1]:
            return port[0]
    other = states.get(peer_ns)
    if other and index in other.by_index:
        return f"{peer_ns}/{other.by_index[index]['ifname']}"
    return f'{peer_ns or "?"}/#{index}'


def _updown(ns_state, dev):
    return 'up' if ns_state.up(dev) else 'down'


def _owned_route(route):
    """A route this module manages on a reflector or the router (dst, via, dev; tagged proto static)."""
    return (route.get('protocol') == ROUTE_PROTO and route.get('type', 'unicast') == 'unicast'
            and route.get('dst') not in (None, 'default'))


def describe_observed(spec, states, gc_thresh, state_dir_exists):
    """The lab's wiring as found, in the same words describe_desired uses."""
    fabric = states.get(spec.fabric) or None
    fabric_ports = {}  # (peer namespace, peer ifindex) -> ('<fabric>/<port>', port ifindex)
    for dev, link in (fabric.links.items() if fabric else ()):
        if fabric.peer(dev):
            fabric_ports[fabric.peer(dev)] = (f'{spec.fabric}/{dev}', link['ifindex'])
    out = {'root': [f'net.ipv4.neigh.default.gc_thresh{i + 1} {v}' for i, v in enumerate(gc_thresh)]}
    if state_dir_exists:
        out['root'].append(f'directory {spec.state_dir}')
    for ns, st in states.items():
        if st is None:
            continue
        if st is False:
            out[ns] = ['unreadable']
            continue
        lines = [f"lo {_updown(st, 'lo')}"] if 'lo' in st.links and ns != spec.fabric else []
        for dev in sorted(st.links):
            if dev == 'lo' or (ns not in (spec.fabric, spec.router, spec.mgmt_netns) and dev not in ('eth0', 'eth1')):
                continue
            kind = st.kind(dev) or 'device'
            if kind == 'veth':
                master = f" master {st.links[dev]['master']}" if st.links[dev].get('master') else ''
                peer = _peer_name(states, st, dev, fabric_ports)
                lines.append(f'veth {dev}{master} peer {peer} {_updown(st, dev)}')
            else:
                lines.append(f'{kind} {dev} {_updown(st, dev)}')
            lines.extend(f'address {dev} {a}' for a in st.inet(dev))
        if ns == spec.router:
            lines.extend(f'route {_route_text(r)}' for r in st.routes if r.get('protocol') != 'kernel')
            lines.append(f'ip_forward {int(st.forwarding)}')
        elif ns == spec.mgmt_netns:
            lines.extend(f'route {_route_text(r)}' for r in st.routes if r.get('protocol') != 'kernel')
        elif ns != spec.fabric:
            lines.extend(f'route {_route_text(r)}' for r in st.routes if r.get('dst') == 'default' or _owned_route(r))
        out[ns] = lines
    return out


def describe_desired(spec, gc_thresh):
    """The lab's wiring as the spec wants it (compare describe_observed)."""
    out = {'root': [f'net.ipv4.neigh.default.gc_thresh{i + 1} {max(v, w)}'
                    for i, (v, w) in enumerate(zip(gc_thresh, spec.gc_thresh))] + [f'directory {spec.state_dir}']}
    fabric, router = [], []
    legs = [seg for seg in spec.segments.values() if seg['router']] + ([spec.spine] if spec.spine else [])
    for seg in spec.segments.values():
        fabric.append(f"bridge {seg['bridge']} up")
    if spec.spine:
        fabric.append(f"bridge {spec.spine['bridge']} up")
    if spec.router_wanted:
        for seg in legs:
            port = seg['router_port']
            fabric.append(f"veth {port} master {seg['bridge']} peer {spec.router}/{port} up")
            router.append((port, [f"veth {port} peer {spec.fabric}/{port} up", f"address {port} {seg['gateway']}"]))
    for host in spec.hosts.values():
        fabric.append(f"veth {host['fabric_port']} master {host['bridge']} peer {host['netns']}/eth0 up")
        lines = ['lo up', f"veth eth0 peer {spec.fabric}/{host['fabric_port']} up", f"address eth0 {host['address']}"]
        lines += [f"address eth0 {host['address6']}"] if host['address6'] else []
        if host['spine_address']:
            fabric.append(f"veth {host['spine_port']} master {spec.spine['bridge']} peer {host['netns']}/eth1 up")
            lines += [f"veth eth1 peer {spec.fabric}/{host['spine_port']} up",
                      f"address eth1 {host['spine_address']}"]
            lines += [f"address eth1 {host['spine_address6']}"] if host['spine_address6'] else []
        if host['gateway'] is not None:
            lines.append(f"route default via {host['gateway']} dev {host['gateway_dev']}")
        lines += [f'route {cidr} via {gw} dev {dev} proto {ROUTE_PROTO}' for cidr, gw, dev in host['routes']]
        out[host['netns']] = lines
    for spine_router in spec.spine_routers().values():
        port, netns = spine_router['spine_port'], spine_router['netns']
        fabric.append(f"veth {port} master {spec.spine['bridge']} peer {netns}/eth1 up")
        out[netns] = ['lo up', f"veth eth1 peer {spec.fabric}/{port} up", f"address eth1 {spine_router['address']}"]
        out[netns] += [f"address eth1 {spine_router['address6']}"] if spine_router['address6'] else []
    if spec.mgmt:
        mgmt = ['lo up']
        for leg in sorted(spec.mgmt.values(), key=lambda leg: leg['port']):
            fabric.append(f"veth {leg['port']} master {leg['bridge']} peer {spec.mgmt_netns}/{leg['port']} up")
            mgmt += [f"veth {leg['port']} peer {spec.fabric}/{leg['port']} up",
                     f"address {leg['port']} {leg['address']}"]
        out[spec.mgmt_netns] = mgmt
    out[spec.fabric] = sorted(fabric, key=lambda line: line.split()[1])
    if spec.router_wanted:
        out[spec.router] = (['lo up'] + [line for _unused, lines in sorted(router) for line in lines]
                            + [f'route {cidr} via {gw} dev {dev} proto {ROUTE_PROTO}'
                               for cidr, gw, dev in spec.router_routes]
                            + ['ip_forward 1'])
    return out


def _route_text(route):
    parts = [route.get('type', ''), route.get('dst', '')] if route.get('type', 'unicast') != 'unicast' \
        else [route.get('dst', '')]
    if route.get('gateway'):
        parts += ['via', route['gateway']]
    if route.get('dev'):
        parts += ['dev', route['dev']]
    if route.get('protocol'):
        parts += ['proto', route['protocol']]
    if route.get('metric'):
        parts += ['metric', str(route['metric'])]
    return ' '.join(p for p in parts if p)


# --------------------------------------------------------------------------------------------- plan (present)


class Plan:
    def __init__(self):
        self.root = []            # netns add/del in the root namespace
        self.pre = {}             # netns -> deletions, run before the fabric batch
        self.fabric = []          # fabric namespace: bridges, veth pairs (peers created in their namespaces)
        self.post = {}            # netns -> addresses, links up, routes
        self.root_late = []       # netns del of a router no longer needed (after its fabric legs are gone)
        self.forward = False      # set ip_forward in the router
        self.sysctls = {}         # root-namespace sysctl path -> value
        self.make_state_dir = False
        self.created, self.removed, self.updated = [], [], []

    def add(self, table, ns, line):
        table.setdefault(ns, []).append(line)

    @property
    def changed(self):
        return bool(self.created or self.removed or self.updated)


def _plan_routes(plan, st, wanted, gone):
    """Make the namespace's proto-static routes exactly `wanted` [(dst, via, dev)] (devices in `gone` vanish anyway)."""
    have = [r for r in st.routes if _owned_route(r) and r.get('dev') not in gone]
    keep = set()
    for route in have:
        key = (route.get('dst'), route.get('gateway'), route.get('dev'))
        if key in wanted and key not in keep and 'metric' not in route:
            keep.add(key)
            continue
        plan.add(plan.post, st.name, f'route del {_route_selector(route)}')
        plan.removed.append(f'route {st.name} {_route_text(route)}')
    for dst, via, dev in wanted:
        if (dst, via, dev) not in keep:
            plan.add(plan.post, st.name, f'route add {dst} via {via} dev {dev} proto {ROUTE_PROTO}')
            plan.created.append(f'route {st.name} {dst} via {via} dev {dev} proto {ROUTE_PROTO}')


def _plan_drop_links(plan, ns, state, keep, doomed, fresh):
    """Delete the links of namespace ``ns`` other than lo and ``keep`` (the router's and the management
    namespace's legs); return the devices that are gone or about to be recreated (their routes go with them)."""
    for name, link in sorted(state.links.items()):
        if name != 'lo' and name not in keep and (ns, link['ifindex']) not in doomed:
            plan.add(plan.pre, ns, f'link del {name}')
            plan.removed.append(f'link {ns}/{name}')
            doomed.add((ns, link['ifindex']))
    return {dev for dev, link in state.links.items() if (ns, link['ifindex']) in doomed or (ns, dev) in fresh}


def plan_present(spec, states, gc_now, state_dir_exists):
    plan = Plan()
    F, R = spec.fabric, spec.router

    for i, (now, want) in enumerate(zip(gc_now, spec.gc_thresh), start=1):
        if now < want:
            plan.sysctls[GC_THRESH % i] = want
            plan.updated.append(f'sysctl net.ipv4.neigh.default.gc_thresh{i} {now} -> {want}')
    if not state_dir_exists:
        plan.make_state_dir = True
        plan.created.append(f'directory {spec.state_dir}')

    st = {}
    for ns in spec.namespaces():
        if states[ns] is None:
            plan.root.append(f'netns add {ns}')
            plan.created.append(f'netns {ns}')
        elif states[ns] is False:
            plan.root += [f'netns del {ns}', f'netns add {ns}']
            plan.updated.append(f'netns {ns} (recreated: it could not be read)')
        st[ns] = states[ns] or NsState(ns, [{'ifindex': 1, 'ifname': 'lo', 'flags': ['LOOPBACK']}])
    fab = st[F]
    if not spec.router_wanted and states.get(R) is not None:
        # every segment has a reflector as gateway now: the router goes, after its fabric legs (pass 1)
        plan.root_late.append(f'netns del {R}')
        plan.removed.append(f'netns {R}')
    M = spec.mgmt_netns
    if not spec.mgmt and states.get(M) is not None:
        # the lab no longer has a management namespace (lab_ssh turned off): it goes after its fabric legs
        plan.root_late.append(f'netns del {M}')
        plan.removed.append(f'netns {M}')

    # the fabric namespace's wanted links: name -> (kind, bridge it belongs to, peer namespace, peer name)
    want = {}
    for seg in spec.segments.values():
        want[seg['bridge']] = ('bridge', None, None, None)
        if spec.router_wanted and seg['router']:
            want[seg['router_port']] = ('veth', seg['bridge'], R, seg['router_port'])
    if spec.spine:
        want[spec.spine['bridge']] = ('bridge', None, None, None)
        if spec.router_wanted:
            want[spec.spine['router_port']] = ('veth', spec.spine['bridge'], R, spec.spine['router_port'])
    for leg in (spec.mgmt or {}).values():
        want[leg['port']] = ('veth', leg['bridge'], M, leg['port'])
    for host in spec.hosts.values():
        want[host['fabric_port']] = ('veth', host['bridge'], host['netns'], 'eth0')
        if host['spine_address']:
            want[host['spine_port']] = ('veth', spec.spine['bridge'], host['netns'], 'eth1')
    for router in spec.spine_routers().values():
        want[router['spine_port']] = ('veth', spec.spine['bridge'], router['netns'], 'eth1')

    # pass 1: fabric links to delete (stale, wrong kind, or veths not paired with the right peer)
    doomed = set()        # (netns, ifindex) of links that vanish with the fabric deletions
    fresh = set()         # (netns, name) of veth ends (re)created by this run

    def paired(name, peer_ns, peer_name):
        other = st[peer_ns]
        if name not in fab.links or peer_name not in other.links:
            return False
        # the fabric end names its peer's namespace; the peer end's link_index closes the pair
        return (fab.peer(name) == (peer_ns, other.links[peer_name]['ifindex'])
                and other.kind(peer_name) == 'veth'
                and other.links[peer_name].get('link_index') == fab.links[name]['ifindex'])

    for name, link in sorted(fab.links.items()):
        if name == 'lo':
            continue
        wanted = want.get(name)
        ok = wanted is not None and fab.kind(name) == wanted[0]
        if ok and wanted[0] == 'veth':
            ok = paired(name, wanted[2], wanted[3])
        if not ok:
            plan.add(plan.pre, F, f'link del {name}')
            plan.removed.append(f'link {F}/{name}')
            doomed.add((F, link['ifindex']))
            if fab.peer(name):
                doomed.add(fab.peer(name))

    # pass 2: create what is missing in the fabric; clear the way in the peer namespaces
    for name, (kind, bridge, peer_ns, peer_name) in sorted(want.items(), key=lambda kv: kv[1][0] != 'bridge'):
        exists = name in fab.links and (F, fab.links[name]['ifindex']) not in doomed
        if kind == 'bridge':
            if not exists:
                plan.fabric += [f'link add {name} type bridge', f'link set {name} up']
                plan.created.append(f'bridge {F}/{name}')
            elif not fab.up(name):
                plan.fabric.append(f'link set {name} up')
                plan.updated.append(f'link {F}/{name} up')
            continue
        if not exists:
            other = st[peer_ns]
            if peer_name in other.links and (peer_ns, other.links[peer_name]['ifindex']) not in doomed:
                plan.add(plan.pre, peer_ns, f'link del {peer_name}')
                plan.removed.append(f'link {peer_ns}/{peer_name}')
            plan.fabric += [f'link add {name} type veth peer name {peer_name} netns {peer_ns}',
                            f'link set {name} alias {peer_ns} master {bridge} up']
            plan.created.append(f'veth {F}/{name} <-> {peer_ns}/{peer_name}')
            fresh.add((peer_ns, peer_name))
            continue
        link = fab.links[name]
        if link.get('master') != bridge or not fab.up(name):
            plan.fabric.append(f'link set {name} master {bridge} up')
            plan.updated.append(f'link {F}/{name} master {bridge} up')

    # the router (if any segment needs it): legs up with the gateway address, connected routes plus the
    # routes to the segments behind reflectors (via their spine address), forwarding on
    if spec.router_wanted:
        rtr = st[R]
        legs = {seg['router_port']: seg for seg in spec.segments.values() if seg['router']}
        if spec.spine:
            legs[spec.spine['router_port']] = spec.spine
        gone = _plan_drop_links(plan, R, rtr, legs, doomed, fresh)
        wanted_routes = set(spec.router_routes)
        for route in rtr.routes:
            if route.get('protocol') != 'kernel' and route.get('dev') not in gone and not _owned_route(route):
                plan.add(plan.post, R, f'route del {_route_selector(route)}')
                plan.removed.append(f'route {R} {_route_text(route)}')
        _plan_lo(plan, rtr)
        for dev, seg in legs.items():
            _plan_iface(plan, rtr, dev, [str(seg['gateway'])], (R, dev) in fresh)
        _plan_routes(plan, rtr, wanted_routes, gone)
        if not (states[R] and rtr.forwarding):
            plan.forward = True
            plan.updated.append(f'sysctl {R} net.ipv4.ip_forward 1')

    # the management namespace (SSH labs): lo and its legs up with their addresses, nothing else (no routes but
    # the connected ones, no forwarding)
    if spec.mgmt:
        mst = st[M]
        legs = {leg['port']: leg for leg in spec.mgmt.values()}
        gone = _plan_drop_links(plan, M, mst, legs, doomed, fresh)
        for route in mst.routes:
            if route.get('protocol') != 'kernel' and route.get('dev') not in gone:
                plan.add(plan.post, M, f'route del {_route_selector(route)}')
                plan.removed.append(f'route {M} {_route_text(route)}')
        _plan_lo(plan, mst)
        for dev, leg in sorted(legs.items()):
            _plan_iface(plan, mst, dev, [str(leg['address'])], (M, dev) in fresh)

    # the hosts: lo and eth0 up, the address, the default route (stale routes go before the addresses change);
    # a reflector also eth1 on the spine, its default route via the router's spine leg (if there is a router)
    # and the routes to the other reflectors' segments
    for host in spec.hosts.values():
        ns = host['netns']
        hst = st[ns]
        is_fresh = (ns, 'eth0') in fresh
        gone = {dev for dev, link in hst.links.items() if (ns, link['ifindex']) in doomed or (ns, dev) in fresh}
        gw = None if host['gateway'] is None else str(host['gateway'])
        dev = host['gateway_dev']
        defaults = [r for r in hst.routes if r.get('dst') == 'default' and r.get('dev') not in gone]
        good = [r for r in defaults if gw is not None and r.get('gateway') == gw and r.get('dev') == dev
                and r.get('type', 'unicast') == 'unicast'][:1]
        for route in defaults:
            if route not in good:
                plan.add(plan.post, ns, f'route del {_route_selector(route)}')
                plan.removed.append(f'route {ns} {_route_text(route)}')
        _plan_lo(plan, hst)
        _plan_iface(plan, hst, 'eth0', _addresses(host['address'], host['address6']), is_fresh)
        if host['spine_address']:
            _plan_iface(plan, hst, 'eth1', _addresses(host['spine_address'], host['spine_address6']),
                        (ns, 'eth1') in fresh)
            _plan_routes(plan, hst, set(host['routes']), gone)
        if gw is not None and not good:
            plan.add(plan.post, ns, f'route add default via {gw} dev {dev}')
            plan.created.append(f'route {ns} default via {gw} dev {dev}')

    # spine routers: lo and eth1 up with the spine address (and IPv6 one); their routes are FRR's (zebra), never
    # the lab's
    for router in spec.spine_routers().values():
        ns = router['netns']
        _plan_lo(plan, st[ns])
        _plan_iface(plan, st[ns], 'eth1', _addresses(router['address'], router['address6']), (ns, 'eth1') in fresh)
    return plan


def _plan_lo(plan, st):
    if 'lo' in st.links and not st.up('lo'):
        plan.add(plan.post, st.name, 'link set lo up')
        plan.updated.append(f'link {st.name}/lo up')


def _addresses(address, address6):
    return [str(address)] + ([str(address6)] if address6 else [])


def _plan_iface(plan, st, dev, addresses, fresh):
    """Bring dev up and make its IPv4 and global IPv6 addresses exactly `addresses` (dev exists or is being
    created). An IPv6 one is added without duplicate address detection (usable at once, as BGP next hop)."""
    have = [] if fresh or dev not in st.links else st.inet(dev)
    if fresh or dev not in st.links or not st.up(dev):
        plan.add(plan.post, st.name, f'link set {dev} up')
        if not fresh:
            plan.updated.append(f'link {st.name}/{dev} up')
    for addr in have:
        if addr not in addresses:
            plan.add(plan.post, st.name, f'address del {addr} dev {dev}')
            plan.removed.append(f'address {st.name}/{dev} {addr}')
    for addr in addresses:
        if addr not in have:
            plan.add(plan.post, st.name, f'address add {addr} dev {dev} nodad' if ':' in addr
                     else f'address add {addr} brd + dev {dev}')
            plan.created.append(f'address {st.name}/{dev} {addr}')


def _route_selector(route):
    parts = [route['type']] if route.get('type', 'unicast') != 'unicast' else []
    parts.append(route.get('dst', 'default'))
    if route.get('gateway'):
        parts += ['via', route['gateway']]
    if route.get('dev'):
        parts += ['dev', route['dev']]
    if 'metric' in route:
        parts += ['metric', str(route['metric'])]
    parts += ['table', 'main']
    return ' '.join(parts)

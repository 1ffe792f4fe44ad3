"""A small in-memory imitation of iproute2 for unit tests of the netfleet.calico kernel modules.

FakeKernel.runner(argv, data, timeout) answers the ``ip`` invocations the modules make (JSON
reads, ``-force -batch -`` writes, ``ip -n NS`` and ``nsenter --net=PATH ip``) from a model of
links, addresses, routes and namespaces, printing what iproute2 6.1 prints (JSON shapes,
"Command failed -:N" lines). Per-interface sysctls live as files under ``sysctl_root`` and
namespace names as files under ``run_dir``, so the modules' direct /proc/sys and /run/netns
access works unchanged against tmp_path. It is deliberately strict: an unknown command fails
the test instead of being ignored.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil

SYSCTL_DEFAULTS = {
    ('conf', 'proxy_arp'): '0',
    ('neigh', 'proxy_delay'): '80',
    ('conf', 'forwarding'): '0',
    ('conf', 'route_localnet'): '0',
}
# net.ipv6.conf.<if>.* of a new interface (only on a FakeKernel made with ipv6=True)
SYSCTL6_DEFAULTS = {'disable_ipv6': '0', 'addr_gen_mode': '0', 'accept_dad': '1', 'accept_ra': '1',
                    'forwarding': '0', 'proxy_ndp': '0'}
ROUTE_TYPES = ('unicast', 'blackhole', 'unreachable', 'prohibit')


class FakeError(Exception):
    pass


class Namespace:
    def __init__(self, name):
        self.name = name
        self.links = {}
        self.routes = []
        lo = {'ifname': 'lo', 'ifindex': 1, 'flags': ['LOOPBACK'], 'mtu': 65536, 'address': '00:00:00:00:00:00',
              'kind': None, 'addrs': ['127.0.0.1/8'], 'group': 'default'}
        self.links['lo'] = lo


class FakeKernel:
    def __init__(self, tmp_path, ipv6=False):
        self.host = Namespace('host')
        self.ipv6 = ipv6
        self.netns = {}
        self.paths = {}
        self.calls = []
        self.next_ifindex = 100
        self.sysctl_root = str(tmp_path / 'proc_sys')
        self.run_dir = str(tmp_path / 'run_netns')
        os.makedirs(self.sysctl_root, exist_ok=True)
        os.makedirs(self.run_dir, exist_ok=True)
        if ipv6:
            self.set_sysctl6('all', 'forwarding', '0')
        self.host.links['eth1'] = {'ifname': 'eth1', 'ifindex': 2, 'flags': ['BROADCAST', 'MULTICAST', 'UP'],
                                   'mtu': 1500, 'address': '52:54:00:00:00:01', 'kind': None,
                                   'addrs': ['192.168.100.100/24'], 'group': 'default'}
        self.host.routes.append(self._route(dst='0.0.0.0/0', gateway='192.168.100.1', dev='eth1', proto='boot'))

    # ---------------------------------------------------------------- helpers for tests
    @staticmethod
    def _route(dst, rtype='unicast', gateway=None, dev=None, metric=None, proto='boot', table='main', scope=None,
               onlink=False):
        net = ipaddress.ip_network(dst)
        if metric is None:
            metric = 1024 if net.version == 6 else 0
        if scope is None:
            scope = 'link' if rtype == 'unicast' and not gateway else 'global'
        return {'dst': net.with_prefixlen, 'type': rtype, 'gateway': gateway, 'dev': dev, 'metric': int(metric),
                'proto': str(proto), 'table': table, 'scope': scope, 'onlink': onlink}

    def add_route(self, ns=None, **kw):
        (ns or self.host).routes.append(self._route(**kw))

    def add_netns(self, name):
        self.netns[name] = Namespace(name)
        open(os.path.join(self.run_dir, name), 'w').close()
        return self.netns[name]

    def add_path_netns(self, path):
        self.paths[path] = Namespace(path)
        return self.paths[path]

    def netns_state(self, name):
        if name in self.netns:
            return 'present'
        return 'broken' if os.path.exists(os.path.join(self.run_dir, name)) else 'absent'

    def path_exists(self, path):
        return path in self.paths or path.startswith(self.run_dir + '/') and os.path.basename(path) in self.netns

    def sysctl(self, ifname, kind, key):
        with open(os.path.join(self.sysctl_root, 'net', 'ipv4', kind, ifname, key)) as handle:
            return handle.read().strip()

    def sysctl6(self, ifname, key):
        with open(os.path.join(self.sysctl_root, 'net', 'ipv6', 'conf', ifname, key)) as handle:
            return handle.read().strip()

    def set_sysctl6(self, ifname, key, value):
        directory = os.path.join(self.sysctl_root, 'net', 'ipv6', 'conf', ifname)
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, key), 'w') as handle:
            handle.write(value + '\n')

    def set_sysctl(self, ifname, kind, key, value):
        with open(os.path.join(self.sysctl_root, 'net', 'ipv4', kind, ifname, key), 'w') as handle:
            handle.write(value)

    def writes(self):
        """The write calls (batches) made so far."""
        return [(argv, data) for argv, data in self.calls if '-batch' in argv and '-j' not in argv]

    def resolve(self, nsref):
        if nsref in self.paths:
            return self.paths[nsref]
        if '/' in nsref:
            if os.path.dirname(nsref) == self.run_dir and os.path.basename(nsref) in self.netns:
                return self.netns[os.path.basename(nsref)]
            raise FakeError('Invalid "netns" value')
        if nsref not in self.netns:
            raise FakeError('Invalid "netns" value')
        return self.netns[nsref]

    # ---------------------------------------------------------------- runner
    def runner(self, argv, data=None, timeout=None):
        self.calls.append((list(argv), data))
        args = list(argv)
        ns = self.host
        if os.path.basename(args[0]) == 'nsenter':
            path = args[1].split('=', 1)[1]
            if path not in self.paths:
                return 1, '', 'nsenter: cannot open %s: No such file or directory\n' % path
            ns = self.paths[path]
            args = args[2:]
        assert os.path.basename(args[0]) == 'ip', argv
        args = args[1:]
        opts = {'json': False, 'family': 4, 'force': False, 'batch': False, 'details': False}
        while args and args[0].startswith('-'):
            opt = args.pop(0)
            if opt == '-n':
                name = args.pop(0)
                if name not in self.netns:
                    return 255, '', 'Cannot open network namespace "%s": No such file or directory\n' % name
                ns = self.netns[name]
            elif opt == '-j':
                opts['json'] = True
            elif opt == '-d':
                opts['details'] = True
            elif opt in ('-4', '-6'):
                opts['family'] = int(opt[1])
            elif opt == '-force':
                opts['force'] = True
            elif opt == '-batch':
                assert args.pop(0) == '-'
                opts['batch'] = True
            else:
                raise AssertionError('unexpected ip option %s' % opt)
        if not opts['batch']:
            try:
                out = self.execute(ns, args, opts)
            except FakeError as exc:
                return 2, '', '%s\n' % exc
            return 0, out, ''
        outs, errs = [], []
        for num, line in enumerate((data or '').splitlines(), 1):
            if '#' in line:
                line = line.split('#', 1)[0]
            words = line.split()
            if not words:
                continue
            try:
                outs.append(self.execute(ns, words, opts))
            except FakeError as exc:
                errs.append('%s\nCommand failed -:%d\n' % (exc, num))
                if not opts['force']:
                    break
        return (1 if errs else 0), ''.join(outs), ''.join(errs)

    # ---------------------------------------------------------------- commands
    def execute(self, ns, words, opts):
        obj, verb, rest = words[0], words[1] if len(words) > 1 else 'show', words[2:]
        if obj == 'netns':
            return self.cmd_netns(ns, verb, rest)
        if obj == 'link':
            return getattr(self, 'link_' + verb)(ns, rest, opts)
        if obj == 'addr':
            return getattr(self, 'addr_' + verb)(ns, rest, opts)
        if obj == 'route':
            return getattr(self, 'route_' + verb)(ns, rest, opts)
        raise AssertionError('unexpected ip command %s' % words)

    def cmd_netns(self, ns, verb, rest):
        assert ns is self.host, 'netns add/del must not run under ip -n'
        name = rest[0]
        path = os.path.join(self.run_dir, name)
        if verb == 'add':
            if os.path.exists(path):
                raise FakeError('Cannot create namespace file "%s": File exists' % path)
            self.add_netns(name)
        elif verb == 'del':
            if not os.path.exists(path):
                raise FakeError('Cannot remove namespace file "%s": No such file or directory' % path)
            os.unlink(path)
            gone = self.netns.pop(name, None)
            if gone:
                for link in list(gone.links.values()):
                    if link.get('peer'):
                        self._destroy(gone, link)
        else:
            raise AssertionError(verb)
        return ''

    def _new_link(self, ns, ifname, address, mtu):
        if ifname in ns.links:
            raise FakeError('RTNETLINK answers: File exists')
        self.next_ifindex += 1
        link = {'ifname': ifname, 'ifindex': self.next_ifindex, 'flags': ['BROADCAST', 'MULTICAST'], 'mtu': mtu or 1500,
                'address': address or '02:00:00:00:%02x:%02x' % divmod(self.next_ifindex, 256), 'kind': 'veth',
                'addrs': [], 'group': 'default'}
        ns.links[ifname] = link
        if ns is self.host:
            for (kind, key), value in SYSCTL_DEFAULTS.items():
                directory = os.path.join(self.sysctl_root, 'net', 'ipv4', kind, ifname)
                os.makedirs(directory, exist_ok=True)
                with open(os.path.join(directory, key), 'w') as handle:
                    handle.write(value + '\n')
            if self.ipv6:
                for key, value in SYSCTL6_DEFAULTS.items():
                    self.set_sysctl6(ifname, key, value)
        return link

    def _destroy(self, ns, link):
        """Delete a veth and its peer, their addresses and routes."""
        pairs = [(ns, link)]
        if link.get('peer'):
            pairs.append(link['peer'])
        for space, item in pairs:
            space.links.pop(item['ifname'], None)
            space.routes = [r for r in space.routes if r['dev'] != item['ifname']]
            if space is self.host:
                for kind in ('ipv4/conf', 'ipv4/neigh', 'ipv6/conf'):
                    shutil.rmtree(os.path.join(self.sysctl_root, 'net', kind, item['ifname']),
                                  ignore_errors=True)

    def _kv(self, rest, flags=()):
        out, i = {}, 0
        while i < len(rest):
            if rest[i] in flags:
                out[rest[i]] = True
                i += 1
            else:
                out[rest[i]] = rest[i + 1]
                i += 2
        return out

    def link_add(self, ns, rest, opts):
        peer_at = rest.index('peer')
        mine, peer = rest[:peer_at], rest[peer_at + 1:]
        assert mine[0] == 'name' and 'type' in mine and mine[mine.index('type') + 1] == 'veth', rest
        kv = self._kv([w for w in mine if w not in ('type', 'veth')])
        pkv = self._kv(peer)
        target = self.resolve(pkv['netns']) if 'netns' in pkv else ns
        if pkv['name'] in target.links:
            raise FakeError('RTNETLINK answers: File exists')
        link = self._new_link(ns, kv['name'], kv.get('address'), int(kv['mtu']) if 'mtu' in kv else None)
        other = self._new_link(target, pkv['name'], None, int(pkv['mtu']) if 'mtu' in pkv else None)
        link['peer'], other['peer'] = (target, other), (ns, link)
        return ''

    def _link(self, ns, name):
        if name not in ns.links:
            raise FakeError('Cannot find device "%s"' % name)
        return ns.links[name]

    def link_set(self, ns, rest, opts):
        assert rest[0] == 'dev'
        link = self._link(ns, rest[1])
        kv = self._kv(rest[2:], flags=('up', 'down'))
        if 'address' in kv:
            link['address'] = kv['address']
        if 'mtu' in kv:
            link['mtu'] = int(kv['mtu'])
        if 'alias' in kv:
            link['ifalias'] = kv['alias']
        if 'group' in kv:
            link['group'] = kv['group']
        if kv.get('up') and 'UP' not in link['flags']:
            link['flags'].append('UP')
        return ''

    def link_del(self, ns, rest, opts):
        if rest[0] == 'group':
            victims = [link for link in ns.links.values() if link['group'] == rest[1]]
            if not victims:
                raise FakeError('RTNETLINK answers: No such device')
            for link in victims:
                self._destroy(ns, link)
            return ''
        assert rest[0] == 'dev'
        self._destroy(ns, self._link(ns, rest[1]))
        return ''

    def _link_json(self, ns, link, with_addrs=False):
        out = {'ifindex': link['ifindex'], 'ifname': link['ifname'], 'flags': list(link['flags']), 'mtu': link['mtu'],
               'group': link['group'], 'address': link['address']}
        if link.get('peer'):
            peer_ns, peer = link['peer']
            if peer_ns is ns:
                out['link'] = peer['ifname']
            else:
                out['link_index'] = peer['ifindex']
                out['link_netnsid'] = 0
        if link.get('ifalias'):
            out['ifalias'] = link['ifalias']
        if link['kind']:
            out['linkinfo'] = {'info_kind': link['kind']}
        if with_addrs:
            out['addr_info'] = []
            for cidr in link['addrs']:
                iface = ipaddress.ip_interface(cidr)
                out['addr_info'].append({'family': 'inet' if iface.version == 4 else 'inet6', 'local': str(iface.ip),
                                         'prefixlen': iface.network.prefixlen,
                                         'scope': 'link' if iface.ip.is_link_local else 'global'})
        return out

    def link_show(self, ns, rest, opts):
        assert opts['json']
        links = sorted(ns.links.values(), key=lambda item: item['ifindex'])
        if rest[:1] == ['type']:
            links = [link for link in links if link['kind'] == rest[1]]
        out = []
        for link in links:
            item = self._link_json(ns, link)
            if not opts['details'] and 'linkinfo' in item:
                del item['linkinfo']
            out.append(item)
        return json.dumps(out) + '\n'

    def addr_show(self, ns, rest, opts):
        assert opts['json'] and not rest
        return json.dumps([self._link_json(ns, link, True) for link in
                           sorted(ns.links.values(), key=lambda item: item['ifindex'])]) + '\n'

    def addr_replace(self, ns, rest, opts):
        if rest[-1] == 'nodad':
            assert ':' in rest[0], 'nodad on an IPv4 address'
            rest = rest[:-1]
        cidr, _dev, name = rest
        link = self._link(ns, name)
        if cidr not in link['addrs']:
            link['addrs'].append(cidr)
        return ''

    def addr_del(self, ns, rest, opts):
        cidr, _dev, name = rest
        link = self._link(ns, name)
        if cidr not in link['addrs']:
            raise FakeError('RTNETLINK answers: Cannot assign requested address')
        link['addrs'].remove(cidr)
        return ''

    # routes
    def _parse_route(self, ns, rest):
        rtype = 'unicast'
        if rest[0] in ROUTE_TYPES:
            rtype = rest.pop(0)
        dst = rest.pop(0)
        dst = '0.0.0.0/0' if dst == 'default' else dst
        if 'via' in rest and ':' in rest[rest.index('via') + 1]:
            assert ':' in dst, 'an IPv6 gateway for an IPv4 destination %s' % dst
        if '/' not in dst:
            dst += '/128' if ':' in dst else '/32'
        kv = self._kv(rest, flags=('onlink',))
        if 'dev' in kv:
            self._link(ns, kv['dev'])
        return {'dst': ipaddress.ip_network(dst).with_prefixlen, 'type': rtype, 'gateway': kv.get('via'),
                'dev': kv.get('dev'), 'metric': int(kv['metric']) if 'metric' in kv else None,
                'proto': kv.get('proto', 'boot'), 'table': kv.get('table', 'main'), 'scope': kv.get('scope'),
                'onlink': bool(kv.get('onlink'))}

    def _fill(self, spec):
        route = dict(spec)
        if route['metric'] is None:
            route['metric'] = 1024 if ':' in route['dst'] else 0
        if route['scope'] is None:
            route['scope'] = 'link' if route['type'] == 'unicast' and not route['gateway'] else 'global'
        return route

    def _same_key(self, a, b):
        return a['dst'] == b['dst'] and a['metric'] == b['metric'] and a['table'] == b['table']

    def route_add(self, ns, rest, opts):
        route = self._fill(self._parse_route(ns, rest))
        if route['type'] == 'unicast' and route['dev'] and 'UP' not in ns.links[route['dev']]['flags']:
            raise FakeError('Error: Nexthop device is not up.')
        if any(self._same_key(route, r) for r in ns.routes):
            raise FakeError('RTNETLINK answers: File exists')
        ns.routes.append(route)
        return ''

    def route_replace(self, ns, rest, opts):
        route = self._fill(self._parse_route(ns, rest))
        for i, cur in enumerate(ns.routes):
            if self._same_key(route, cur):
                ns.routes[i] = route
                return ''
        ns.routes.append(route)
        return ''

    def route_del(self, ns, rest, opts):
        spec = self._parse_route(ns, rest)
        for i, cur in enumerate(ns.routes):
            if cur['dst'] != spec['dst'] or cur['table'] != spec['table']:
                continue
            if spec['metric'] is not None and cur['metric'] != spec['metric']:
                continue
            if 'proto' in rest and cur['proto'] != spec['proto']:
                continue
            if cur['type'] != spec['type'] or (spec['gateway'] and cur['gateway'] != spec['gateway']):
                continue
            if spec['dev'] and cur['dev'] != spec['dev']:
                continue
            del ns.routes[i]
            return ''
        raise FakeError('RTNETLINK answers: No such process')

    def route_show(self, ns, rest, opts):
        assert opts['json']
        kv = self._kv(rest)
        table = kv.get('table', 'main')
        out = []
        for route in ns.routes:
            family = 6 if ':' in route['dst'] else 4
            # as ip: "table main" without -6 lists IPv4 only, "table all" both families
            if table != 'all' and (family != opts['family'] or route['table'] != table):
                continue
            if 'proto' in kv and route['proto'] != kv['proto']:
                continue
            if 'exact' in kv and route['dst'] != ipaddress.ip_network(kv['exact']).with_prefixlen:
                continue
            if 'root' in kv:
                root, net = ipaddress.ip_network(kv['root']), ipaddress.ip_network(route['dst'])
                if net.version != root.version or not net.subnet_of(root):
                    continue
            item = {}
            if route['type'] != 'unicast':
                item['type'] = route['type']
            net = ipaddress.ip_network(route['dst'])
            if net.prefixlen == 0:
                item['dst'] = 'default'
            elif net.prefixlen == net.max_prefixlen:
                item['dst'] = str(net.network_address)
            else:
                item['dst'] = route['dst']
            if table == 'all' and route['table'] != 'main':
                item['table'] = route['table']
            if route['gateway']:
                item['gateway'] = route['gateway']
            if route['dev'] and route['type'] == 'unicast':
                item['dev'] = route['dev']
            elif family == 6:
                item['dev'] = 'lo'
            if 'proto' not in kv:
                item['protocol'] = route['proto']
            if route['scope'] != 'global':
                item['scope'] = route['scope']
            if route['metric'] or family == 6:
                item['metric'] = route['metric']
            item['flags'] = ['onlink'] if route['onlink'] else []
            out.append(item)
        return json.dumps(out) + '\n'


# -------------------------------------------------------------------- running a module in-process
class _Exit(Exception):
    def __init__(self, result):
        super().__init__(result)
        self.result = result


def run_module(monkeypatch, module, args, check_mode=False, diff=False):
    """Run ``module.main()`` with ``args``; return the result dict (``failed: True`` on fail_json)."""
    from ansible.module_utils import basic
    from ansible.module_utils.testing import patch_module_args

    def exit_json(self, **kwargs):
        kwargs.setdefault('changed', False)
        raise _Exit(kwargs)

    def fail_json(self, msg, **kwargs):
        kwargs.update(failed=True, msg=msg)
        raise _Exit(kwargs)

    monkeypatch.setattr(basic.AnsibleModule, 'exit_json', exit_json)
    monkeypatch.setattr(basic.AnsibleModule, 'fail_json', fail_json)
    args = dict(args)
    if check_mode:
        args['_ansible_check_mode'] = True
    if diff:
        args['_ansible_diff'] = True
    with patch_module_args(args):
        try:
            module.main()
        except _Exit as done:
            return done.result
    raise AssertionError('module returned without exit_json/fail_json')


class FakeTunnelHost:
    """Just enough of ip(8) and iptables-save/-restore for module_utils.tunnel (calico_tunnel, calico_node_state)."""

    def __init__(self, parent_mtu=1500, local='192.168.100.100'):
        self.links = {'eth0': {'ifname': 'eth0', 'mtu': parent_mtu, 'flags': ['UP'], 'addr': local}}
        self.chains = {'INPUT': []}
        self.builtin = {'INPUT'}
        self.calls = []

    def __call__(self, argv, data=None):
        self.calls.append((argv, data))
        if argv[0] == 'ip':
            return self.ip(argv[1:], data)
        if argv[0] == 'iptables-save':
            return 0, self.save(), ''
        if argv[0] == 'iptables-restore':
            assert argv[1:] == ['--noflush']
            self.restore(data)
            return 0, '', ''
        raise AssertionError(argv)

    def ip(self, args, data):
        if args == ['-j', '-d', 'link', 'show']:
            out = []
            for link in self.links.values():
                entry = {'ifname': link['ifname'], 'mtu': link['mtu'], 'flags': link['flags']}
                if link.get('kind'):
                    entry['linkinfo'] = {'info_kind': link['kind'], 'info_data': link.get('data', {})}
                out.append(entry)
            return 0, json.dumps(out), ''
        if args == ['-j', 'addr', 'show']:
            return 0, json.dumps([{'ifname': lk['ifname'], 'mtu': lk['mtu'],
                                   'addr_info': [{'family': 'inet', 'local': lk['addr'], 'prefixlen': 24}]
                                   if lk.get('addr') else []} for lk in self.links.values()]), ''
        if args == ['-batch', '-']:
            for line in data.splitlines():
                self.batch(line.split())
            return 0, '', ''
        raise AssertionError(args)

    def batch(self, words):
        if words[:2] == ['link', 'add']:
            name, local = words[3], words[words.index('local') + 1]
            self.links[name] = {'ifname': name, 'mtu': 1480, 'flags': [], 'kind': 'ipip',
                                'data': {'proto': 'ip', 'remote': 'any', 'local': local}}
        elif words[:3] == ['link', 'del', 'dev']:
            del self.links[words[3]]
        elif words[:3] == ['link', 'set', 'dev']:
            link = self.links[words[3]]
            if 'mtu' in words:
                link['mtu'] = int(words[words.index('mtu') + 1])
            if 'up' in words:
                link['flags'] = ['POINTOPOINT', 'NOARP', 'UP', 'LOWER_UP']
        else:
            raise AssertionError(words)

    def save(self):
        lines = ['*filter', ':INPUT ACCEPT [0:0]']
        lines += [':%s - [0:0]' % c for c in self.chains if c not in self.builtin]
        for chain, rules in self.chains.items():
            lines += ['-A %s %s' % (chain, r) for r in rules]
        return '\n'.join(lines + ['COMMIT']) + '\n'

    def restore(self, data):
        lines = data.splitlines()
        assert lines[0] == '*filter' and lines[-1] == 'COMMIT'
        for line in lines[1:-1]:
            words = line.split()
            if line.startswith(':'):
                self.chains[words[0][1:]] = []
            elif words[0] == '-A':
                self.chains[words[1]].append(' '.join(words[2:]))
            elif words[0] == '-I':
                self.chains[words[1]].insert(int(words[2]) - 1, ' '.join(words[3:]))
            elif words[0] == '-D':
                self.chains[words[1]].remove(' '.join(words[2:]))
            elif words[0] == '-F':
                self.chains[words[1]] = []
            elif words[0] == '-X':
                del self.chains[words[1]]
            else:
                raise AssertionError(line)

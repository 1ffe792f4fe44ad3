"""The lab itself (netfleet.calico_lab): lab_up.yml, lab_down.yml, lab_fabric and the netns connection, on the
real kernel.

Needs root. One lab is built from inventories/lab for the module with a run-specific prefix
(NETFLEET_LAB_PREFIX=t<4 hex>) and always torn down by lab_down.yml in the fixture's finalizer (plus a
last-resort cleanup of that prefix's namespaces and state directory). Tests run in file order and share
the lab; the last one tears it down and checks that a second teardown is a no-op.

The second half does the same for inventories/lab-racks (route-reflector racks: every reflector is its
rack's gateway with a leg on the spine; no router namespace), with a prefix of its own.
"""

from __future__ import annotations

import base64
import concurrent.futures
import copy
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import netfleet_lab
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / '.venv' / 'bin'
INVENTORY = REPO / 'inventories' / 'lab'
RACKS_INVENTORY = REPO / 'inventories' / 'lab-racks'
RECAP = re.compile(r'^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)'
                   r'\s+failed=(?P<failed>\d+)')
TIMINGS: dict[str, float] = {}

pytestmark = pytest.mark.lab


def sh(argv, check=True, **kw):
    return subprocess.run([str(a) for a in argv], check=check, capture_output=True, text=True, **kw)


def ipj(*args):
    return json.loads(sh(['ip', '-j', *args]).stdout or '[]')


def namespaces():
    return {line.split()[0] for line in sh(['ip', 'netns', 'list']).stdout.splitlines() if line.strip()}


def root_snapshot():
    """Interfaces, addresses and routes of the root namespace (what the lab must never add to)."""
    links = sorted((link['ifname'], link['ifindex']) for link in ipj('link', 'show'))
    addrs = sorted((link['ifname'], a['family'], a['local'], a['prefixlen'])
                   for link in ipj('addr', 'show') for a in link.get('addr_info', []))
    routes = sorted(json.dumps({k: r.get(k) for k in ('type', 'dst', 'gateway', 'dev', 'table', 'protocol')},
                               sort_keys=True)
                    for r in ipj('route', 'show', 'table', 'all') + ipj('-6', 'route', 'show', 'table', 'all'))
    return {'links': links, 'addrs': addrs, 'routes': routes}


def racks(doc):
    return doc['all']['children']['calico_racks']['children']


def rack1(doc):
    return racks(doc)['rack1']


def write_inventory(path, doc, source=INVENTORY):
    return netfleet_lab.write_inventory(path, doc, source)


def new_prefix():
    prefix = 't' + secrets.token_hex(2)
    while any(n.startswith(prefix + '-') for n in namespaces()) or os.path.exists(f'/run/netfleet/{prefix}'):
        prefix = 't' + secrets.token_hex(2)
    return prefix


class Lab:
    def __init__(self, prefix, inventory=INVENTORY):
        self.prefix = prefix
        self.inventory = inventory
        self.state_dir = Path(f'/run/netfleet/{prefix}')
        self.env = dict(os.environ, NETFLEET_LAB_PREFIX=prefix, ANSIBLE_CONFIG=str(REPO / 'ansible.cfg'),
                        ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0', ANSIBLE_DEPRECATION_WARNINGS='0')
        self.doc = yaml.safe_load((inventory / 'hosts.yml').read_text())
        self.hosts = {name: hv['calico_node_ip'] for rack in racks(self.doc).values()
                      for name, hv in rack['hosts'].items()}
        self.fabric = f'{prefix}-fabric'
        self.router = f'{prefix}-router'

    def netns(self, host):
        return f'{self.prefix}-{host}'

    def run(self, tool, *args, check=True, label=None):
        start = time.monotonic()
        proc = subprocess.run([str(VENV_BIN / tool), *map(str, args)], capture_output=True, check=False, text=True,
                              env=self.env, cwd=REPO)
        if label:
            TIMINGS[label] = round(time.monotonic() - start, 2)
        proc.recap = {m['host']: {k: int(v) for k, v in m.groupdict().items() if k != 'host'}
                      for m in map(RECAP.match, proc.stdout.splitlines()) if m}
        if check and proc.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(map(str, args))} failed rc={proc.returncode}\n"
                                 f'{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}')
        return proc

    def playbook(self, name, *args, **kw):
        if '-i' not in args:
            args = ('-i', self.inventory, *args)
        return self.run('ansible-playbook', REPO / 'lab' / 'playbooks' / name, *args, **kw)

    def adhoc(self, host, module, module_args, **kw):
        return self.run('ansible', '-i', self.inventory, host, '-m', module, '-a', module_args, **kw)

    def ns_json(self, netns, *args):
        return json.loads(sh(['ip', '-n', netns, '-j', *args]).stdout or '[]')

    def ifindexes(self):
        """ifindex of every fabric port and host eth0: unchanged means not rebuilt."""
        out = {f'{self.fabric}/{link["ifname"]}': link['ifindex'] for link in self.ns_json(self.fabric, 'link')}
        for host in self.hosts:
            for link in self.ns_json(self.netns(host), 'link', 'show'):
                if link['ifname'] in ('eth0', 'eth1'):  # eth1: a reflector's spine leg
                    out[f'{self.netns(host)}/{link["ifname"]}'] = link['ifindex']
        return out

    def ping(self, netns, address):
        return sh(['ip', 'netns', 'exec', netns, 'ping', '-n', '-c', '1', '-W', '2', address], check=False)

    def leftovers(self):
        return sorted(n for n in namespaces() if n.startswith(self.prefix + '-'))


@pytest.fixture(scope='module')
def lab():
    prefix = new_prefix()
    lab = Lab(prefix)
    lab.root_before = root_snapshot()
    try:
        lab.up = lab.playbook('lab_up.yml', label='lab_up (first run)')
        yield lab
    finally:
        lab.playbook('lab_down.yml', check=False, label='lab_down (finalizer)')
        left = lab.leftovers()
        for ns in left:  # last resort, our prefix only
            sh(['ip', 'netns', 'del', ns], check=False)
        shutil.rmtree(lab.state_dir, ignore_errors=True)
        print(f'\nlab {prefix} timings (s): {json.dumps(TIMINGS)}')
        assert not left, f'lab_down left namespaces behind: {left}'


def test_lab_up_builds_namespaces(lab):
    assert lab.up.recap['localhost']['changed'] == 1, lab.up.stdout
    want = {lab.fabric, lab.router} | {lab.netns(h) for h in lab.hosts}
    assert want <= namespaces()
    assert lab.state_dir.is_dir()
    bridges = [link['ifname'] for link in lab.ns_json(lab.fabric, '-d', 'link')
               if link.get('linkinfo', {}).get('info_kind') == 'bridge']
    assert bridges == ['br-rack1']


def test_host_addresses_and_default_routes(lab):
    for host, ip in lab.hosts.items():
        eth0 = lab.ns_json(lab.netns(host), '-d', 'addr', 'show', 'dev', 'eth0')[0]
        assert eth0['linkinfo']['info_kind'] == 'veth'
        assert 'UP' in eth0['flags']
        inet = [f"{a['local']}/{a['prefixlen']}" for a in eth0['addr_info'] if a['family'] == 'inet']
        assert inet == [f'{ip}/24'], (host, inet)
        routes = lab.ns_json(lab.netns(host), 'route', 'show', 'default')
        assert [(r['gateway'], r['dev']) for r in routes] == [('192.168.100.1', 'eth0')], (host, routes)
        lo = lab.ns_json(lab.netns(host), 'link', 'show', 'dev', 'lo')[0]
        assert 'UP' in lo['flags']
    # the router: the gateway address, forwarding on, only connected routes
    leg = lab.ns_json(lab.router, 'addr', 'show', 'dev', 'gw-rack1')[0]
    assert [f"{a['local']}/{a['prefixlen']}" for a in leg['addr_info'] if a['family'] == 'inet'] == ['192.168.100.1/24']
    assert sh(['ip', 'netns', 'exec', lab.router, 'cat', '/proc/sys/net/ipv4/ip_forward']).stdout.strip() == '1'
    assert {r.get('protocol') for r in lab.ns_json(lab.router, 'route', 'show', 'table', 'main')} == {'kernel'}


def test_hosts_ping_each_other_and_the_router(lab):
    names = sorted(lab.hosts)
    for src in names:
        for dst in [*names, 'router']:
            if dst == src:
                continue
            address = '192.168.100.1' if dst == 'router' else lab.hosts[dst]
            result = lab.ping(lab.netns(src), address)
            assert result.returncode == 0, f'{src} -> {dst} ({address}): {result.stdout}{result.stderr}'


def test_root_namespace_untouched(lab):
    after = root_snapshot()
    for key in ('links', 'addrs', 'routes'):
        assert after[key] == lab.root_before[key], f'the lab changed the root namespace ({key})'
    assert not any(link['ifname'].startswith(('br-', 'gw-', 'h-')) for link in ipj('link', 'show'))
    # the only root-namespace change allowed: a larger neighbour table
    gc3 = int(Path('/proc/sys/net/ipv4/neigh/default/gc_thresh3').read_text())
    assert gc3 >= 32768


def test_netns_connection_runs_inside_the_namespace(lab):
    proc = lab.adhoc('host-a', 'ansible.builtin.command', 'ip -j addr', label='ansible command via netns')
    first, _unused, stdout = proc.stdout.partition('\n')
    assert first.startswith('host-a | CHANGED | rc=0'), proc.stdout
    seen = {(link['ifname'], a['local']) for link in json.loads(stdout) for a in link.get('addr_info', [])
            if a['family'] == 'inet'}
    assert seen == {('lo', '127.0.0.1'), ('eth0', lab.hosts['host-a'])}, seen
    root_inet = {a for (_unused, fam, a, _unused) in lab.root_before['addrs'] if fam == 'inet' and a != '127.0.0.1'}
    assert not root_inet & {a for _unused, a in seen}

    # /sys is the namespace's: eth0's MAC there is the veth's, not the root eth0's
    proc = lab.adhoc('host-a', 'ansible.builtin.slurp', 'src=/sys/class/net/eth0/address')
    content = re.search(r'content:\s*(\S+)', proc.stdout).group(1)
    mac = base64.b64decode(content).decode().strip()
    assert mac == lab.ns_json(lab.netns('host-a'), 'link', 'show', 'dev', 'eth0')[0]['address']
    assert mac not in {link.get('address') for link in ipj('link', 'show')}


def test_delegate_to_and_become(lab, tmp_path):
    """The lab's ansible_netns_prefix (not an ansible_netns built from inventory_hostname) follows delegate_to."""
    inventory = write_inventory(tmp_path / 'inv', lab.doc)
    playbook = tmp_path / 'delegate.yml'
    playbook.write_text(yaml.safe_dump([{
        'hosts': 'host-a', 'gather_facts': False,
        'tasks': [
            {'ansible.builtin.command': 'ip -j -4 addr show dev eth0', 'delegate_to': 'host-b', 'register': 'b'},
            {'ansible.builtin.command': 'ip -j -4 addr show dev eth0', 'register': 'a'},
            {'ansible.builtin.command': 'id -u', 'become': True, 'register': 'root'},
            {'ansible.builtin.copy': {
                'dest': f'{lab.state_dir}/delegate.json', 'mode': '0644',
                'content': '{{ {"a": a.stdout | from_json, "b": b.stdout | from_json, "uid": root.stdout}'
                           ' | to_json }}'},
             'delegate_to': 'localhost'},
        ],
    }]))
    lab.run('ansible-playbook', '-i', inventory, playbook)
    seen = json.loads((lab.state_dir / 'delegate.json').read_text())
    assert seen['a'][0]['addr_info'][0]['local'] == lab.hosts['host-a']
    assert seen['b'][0]['addr_info'][0]['local'] == lab.hosts['host-b']
    assert seen['uid'] == '0'


@pytest.mark.parametrize('pipelining', ['true', 'false'])
def test_file_transfer(lab, tmp_path, pipelining):
    src = tmp_path / 'payload.txt'
    src.write_text('payload for {{ not templated }}\n')
    (tmp_path / 'hello.j2').write_text('host={{ inventory_hostname }} ip={{ calico_node_ip }} '
                                       'netns={{ ansible_netns_prefix }}{{ inventory_hostname }}\n')
    fetched = tmp_path / 'fetched'
    playbook = tmp_path / 'transfer.yml'
    playbook.write_text(yaml.safe_dump([{
        'name': 'file transfer through the netns connection',
        'hosts': 'host-a:host-b',
        'gather_facts': False,
        'tasks': [
            {'name': 'copy', 'ansible.builtin.copy': {
                'src': str(src), 'dest': f'{lab.state_dir}/xfer-{pipelining}-{{{{ inventory_hostname }}}}.txt',
                'mode': '0644'}},
            {'name': 'template', 'ansible.builtin.template': {
                'src': str(tmp_path / 'hello.j2'),
                'dest': f'{lab.state_dir}/tmpl-{pipelining}-{{{{ inventory_hostname }}}}.txt', 'mode': '0644'}},
            {'name': 'fetch', 'ansible.builtin.fetch': {
                'src': f'{lab.state_dir}/tmpl-{pipelining}-{{{{ inventory_hostname }}}}.txt',
                'dest': f'{fetched}/{{{{ inventory_hostname }}}}.txt', 'flat': True}},
        ],
    }]))
    env_backup = lab.env
    lab.env = dict(lab.env, ANSIBLE_PIPELINING=pipelining)
    try:
        first = lab.run('ansible-playbook', playbook, label=f'file transfer (pipelining={pipelining})')
        second = lab.run('ansible-playbook', playbook)
    finally:
        lab.env = env_backup
    for host in ('host-a', 'host-b'):
        assert first.recap[host]['changed'] == 3, first.stdout
        assert second.recap[host]['changed'] == 0, second.stdout
        assert (lab.state_dir / f'xfer-{pipelining}-{host}.txt').read_text() == src.read_text()
        want = f'host={host} ip={lab.hosts[host]} netns={lab.netns(host)}\n'
        assert (lab.state_dir / f'tmpl-{pipelining}-{host}.txt').read_text() == want
        assert (fetched / f'{host}.txt').read_text() == want


def test_lab_up_is_idempotent(lab):
    before = lab.ifindexes()
    proc = lab.playbook('lab_up.yml', label='lab_up (second run)')
    assert proc.recap['localhost']['changed'] == 0, proc.stdout
    proc = lab.playbook('lab_up.yml', '--check', '--diff', label='lab_up --check --diff')
    assert proc.recap['localhost']['changed'] == 0, proc.stdout
    assert lab.ifindexes() == before


def test_adding_a_host_adds_only_that_host(lab, tmp_path):
    doc = copy.deepcopy(lab.doc)
    rack1(doc)['hosts']['host-d'] = {'calico_node_ip': '192.168.100.103', 'calico_workloads': [{'name': 'd1'}]}
    inventory = write_inventory(tmp_path / 'inv', doc)
    before_ns, before_idx = namespaces(), lab.ifindexes()
    proc = lab.playbook('lab_up.yml', '-i', inventory, label='lab_up (one host added)')
    assert proc.recap['localhost']['changed'] == 1, proc.stdout
    assert namespaces() - before_ns == {lab.netns('host-d')}
    after_idx = lab.ifindexes()
    assert {k: after_idx.get(k) for k in before_idx} == before_idx, 'existing hosts were rewired'
    assert lab.ping(lab.netns('host-d'), lab.hosts['host-a']).returncode == 0
    assert lab.playbook('lab_up.yml', '-i', inventory).recap['localhost']['changed'] == 0


@pytest.mark.parametrize('case', ['node_ip_outside_segment', 'rack_without_segment'])
def test_bad_inventory_fails_with_one_line(lab, tmp_path, case):
    doc = copy.deepcopy(lab.doc)
    if case == 'node_ip_outside_segment':
        rack1(doc)['hosts']['host-c']['calico_node_ip'] = '10.0.0.5'
        expect = r"netfleet\.calico_lab\.lab_spec: host 'host-c': calico_node_ip 10\.0\.0\.5 is outside rack 'rack1'"
    else:
        del rack1(doc)['vars']['lab_segment']
        expect = r"netfleet\.calico_lab\.lab_spec: rack 'rack1': has no lab_segment — set lab_segment"
    before = lab.ifindexes()
    proc = lab.playbook('lab_up.yml', '-i', write_inventory(tmp_path / 'inv', doc), check=False)
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if 'netfleet.calico_lab.lab_spec:' in line]
    assert lines and re.search(expect, lines[0]), proc.stdout[-3000:]
    assert lab.ifindexes() == before


def test_lab_down_removes_everything_and_is_idempotent(lab):
    # a daemon of a lab host, the way the roles run BIRD: inside the host's namespace, its pid file in state_dir
    pidfile = lab.state_dir / 'host-a' / 'fake.pid'
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    daemon = subprocess.Popen(['ip', 'netns', 'exec', lab.netns('host-a'), sys.executable, '-c',
                               'import time; time.sleep(600)', str(pidfile)], start_new_session=True)
    pidfile.write_text(f'{daemon.pid}\n')  # `ip netns exec` execs: same pid
    # a decoy whose pid file is in state_dir but whose command line does not name it: must survive
    decoy = subprocess.Popen(['sleep', '600'], start_new_session=True)
    (lab.state_dir / 'decoy.pid').write_text(f'{decoy.pid}\n')
    try:
        proc = lab.playbook('lab_down.yml', label='lab_down')
        assert proc.recap['localhost']['changed'] == 1, proc.stdout
        assert daemon.wait(timeout=5) is not None
        assert decoy.poll() is None, 'lab_down killed a process its pid file did not identify'
        assert lab.leftovers() == []
        assert not lab.state_dir.exists()
        proc = lab.playbook('lab_down.yml', label='lab_down (second run)')
        assert proc.recap['localhost']['changed'] == 0, proc.stdout
        # the connection now says what to do
        proc = lab.adhoc('host-a', 'ansible.builtin.ping', '', check=False)
        assert f"network namespace '{lab.netns('host-a')}' does not exist: run netfleet.calico_lab.lab_up first" \
            in proc.stdout + proc.stderr
    finally:
        for proc in (daemon, decoy):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# --------------------------------------------------------------------------------------------- route-reflector racks
# inventories/lab-racks: three racks, each its own segment; every reflector is its rack's gateway (ToR) with eth0 on
# the rack segment and eth1 on the spine bridge; hosts default via their rack's first reflector; no router namespace.


class RacksLab(Lab):
    def __init__(self, prefix, inventory=RACKS_INVENTORY):
        super().__init__(prefix, inventory)
        self.load(self.doc)

    def load(self, doc):
        """Names and addresses of a lab-racks inventory document."""
        self.doc = doc
        self.reflectors = sorted(doc['all']['children']['calico_route_reflectors']['hosts'])
        self.hosts, self.spine, self.rack_of, self.segment, self.gateway = {}, {}, {}, {}, {}
        for rack, group in racks(doc).items():
            self.segment[rack] = group['vars']['lab_segment']
            for name, hv in group['hosts'].items():
                self.hosts[name] = hv['calico_node_ip']
                self.rack_of[name] = rack
                if name in self.reflectors:
                    self.spine[name] = hv['calico_rr_spine_ip']
            # the rack's first reflector (natural order; plain order for these names) is its hosts' gateway
            self.gateway[rack] = next(r for r in self.reflectors if self.rack_of.get(r) == rack)
        self.nodes = sorted(h for h in self.hosts if h not in self.reflectors)

    def pings(self, pairs):
        """Ping (netns, address) pairs in parallel; return the failures."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(lambda pair: self.ping(*pair), pairs))
        return [f'{ns} -> {address}: {r.stdout.strip().splitlines()[-1:] or r.stderr}'
                for (ns, address), r in zip(pairs, results) if r.returncode != 0]

    def forward_on_reflectors(self):
        """Test only: the route_reflector role sets net.ipv4.ip_forward=1 on reflectors; the lab does not."""
        for name in self.reflectors:
            sh(['ip', 'netns', 'exec', self.netns(name), 'sh', '-c', 'echo 1 > /proc/sys/net/ipv4/ip_forward'])

    def kernel(self, host):
        """IPv4 addresses and main-table routes of a host namespace, as comparable sets."""
        ns = self.netns(host)
        addrs = {(link['ifname'], f"{a['local']}/{a['prefixlen']}") for link in self.ns_json(ns, '-4', 'addr', 'show')
                 for a in link.get('addr_info', [])}
        routes = {(r.get('dst'), r.get('gateway'), r.get('dev'), r.get('protocol'))
                  for r in self.ns_json(ns, 'route', 'show', 'table', 'main')}
        return addrs, routes


@pytest.fixture(scope='module')
def racks_lab():
    lab = RacksLab(new_prefix())
    lab.root_before = root_snapshot()
    try:
        lab.up = lab.playbook('lab_up.yml', label='racks: lab_up (first run)')
        yield lab
    finally:
        lab.playbook('lab_down.yml', check=False, label='racks: lab_down (finalizer)')
        left = lab.leftovers()
        for ns in left:  # last resort, our prefix only
            sh(['ip', 'netns', 'del', ns], check=False)
        shutil.rmtree(lab.state_dir, ignore_errors=True)
        print(f'\nlab {lab.prefix} (lab-racks) timings (s): {json.dumps(TIMINGS)}')
        assert not left, f'lab_down left namespaces behind: {left}'


def test_racks_wiring(racks_lab):
    lab = racks_lab
    assert lab.up.recap['localhost']['changed'] == 1, lab.up.stdout
    # every rack has a reflector: no router namespace
    assert set(lab.leftovers()) == {lab.fabric} | {lab.netns(h) for h in lab.hosts}
    bridges = sorted(link['ifname'] for link in lab.ns_json(lab.fabric, '-d', 'link')
                     if link.get('linkinfo', {}).get('info_kind') == 'bridge')
    assert bridges == ['br-rack1', 'br-rack2', 'br-rack3', 'spine']
    spine_ports = {link['ifname']: link.get('master') for link in lab.ns_json(lab.fabric, 'link')
                   if link['ifname'].startswith('s-')}
    assert spine_ports == {f's-{r}': 'spine' for r in lab.reflectors}
    for host, ip in lab.hosts.items():
        addrs, routes = lab.kernel(host)
        defaults = sorted((gw, dev) for dst, gw, dev, _unused in routes if dst == 'default')
        if host in lab.reflectors:
            assert addrs == {('lo', '127.0.0.1/8'), ('eth0', f'{ip}/24'), ('eth1', f'{lab.spine[host]}/24')}, host
            assert defaults == [], (host, routes)  # no router to default to
            static = sorted((dst, gw, dev) for dst, gw, dev, proto in routes if proto == 'static')
            assert static == sorted((lab.segment[rack], lab.spine[lab.gateway[rack]], 'eth1')
                                    for rack in lab.segment if rack != lab.rack_of[host]), (host, routes)
        else:
            assert addrs == {('lo', '127.0.0.1/8'), ('eth0', f'{ip}/24')}, host
            assert defaults == [(lab.hosts[lab.gateway[lab.rack_of[host]]], 'eth0')], (host, routes)
    assert lab.gateway['rack1'] == 'rr1a'


def test_racks_hosts_ping_their_gateway_and_reflectors_ping_over_the_spine(racks_lab):
    lab = racks_lab
    pairs = [(lab.netns(h), lab.hosts[lab.gateway[lab.rack_of[h]]]) for h in lab.nodes]
    pairs += [(lab.netns(h), lab.hosts[r]) for h in lab.nodes for r in lab.reflectors
              if lab.rack_of[r] == lab.rack_of[h]]  # rack1's second reflector too
    pairs += [(lab.netns(a), lab.spine[b]) for a in lab.reflectors for b in lab.reflectors if a != b]
    assert lab.pings(pairs) == []


def test_racks_cross_rack_host_pings_through_forwarding_reflectors(racks_lab):
    lab = racks_lab
    lab.forward_on_reflectors()
    pairs = [(lab.netns(a), lab.hosts[b]) for a in lab.nodes for b in lab.nodes if lab.rack_of[a] != lab.rack_of[b]]
    assert len(pairs) == 54
    assert lab.pings(pairs) == []


def test_racks_root_namespace_untouched(racks_lab):
    after = root_snapshot()
    for key in ('links', 'addrs', 'routes'):
        assert after[key] == racks_lab.root_before[key], f'the lab changed the root namespace ({key})'
    assert not any(link['ifname'].startswith(('br-', 'gw-', 'h-', 's-', 'rt-')) or link['ifname'] == 'spine'
                   for link in ipj('link', 'show'))


def test_racks_lab_up_is_idempotent(racks_lab):
    before = racks_lab.ifindexes()
    proc = racks_lab.playbook('lab_up.yml', label='racks: lab_up (second run)')
    assert proc.recap['localhost']['changed'] == 0, proc.stdout
    proc = racks_lab.playbook('lab_up.yml', '--check', '--diff', label='racks: lab_up --check --diff')
    assert proc.recap['localhost']['changed'] == 0, proc.stdout
    assert racks_lab.ifindexes() == before


def test_racks_adding_a_rack_adds_only_that_rack(racks_lab, tmp_path):
    lab = racks_lab
    doc = copy.deepcopy(lab.doc)
    racks(doc)['rack4'] = {
        'vars': {'calico_as_number': 65004, 'lab_segment': '192.168.104.0/24'},
        'hosts': {'rr4': {'calico_node_ip': '192.168.104.1', 'calico_rr_spine_ip': '10.255.0.41'},
                  'r4h1': {'calico_node_ip': '192.168.104.11', 'calico_workloads': [{'name': 'r4h1w1'}]}},
    }
    doc['all']['children']['calico_route_reflectors']['hosts']['rr4'] = None
    doc['all']['children']['calico_nodes']['hosts']['r4h1'] = None
    inventory = write_inventory(tmp_path / 'inv', doc, RACKS_INVENTORY)
    old_hosts = sorted(lab.hosts)
    before_ns, before_idx = namespaces(), lab.ifindexes()
    before_kernel = {h: lab.kernel(h) for h in old_hosts}

    proc = lab.playbook('lab_up.yml', '-i', inventory, label='racks: lab_up (rack4 added)')
    assert proc.recap['localhost']['changed'] == 1, proc.stdout
    lab.load(doc)
    assert namespaces() - before_ns == {lab.netns('rr4'), lab.netns('r4h1')}
    after_idx = lab.ifindexes()
    assert {k: after_idx.get(k) for k in before_idx} == before_idx, 'existing hosts were rewired'
    assert set(after_idx) - set(before_idx) == (
        {f'{lab.fabric}/{port}' for port in ('br-rack4', 'h-rr4', 's-rr4', 'h-r4h1')}
        | {f'{lab.netns(h)}/{dev}' for h, dev in (('rr4', 'eth0'), ('rr4', 'eth1'), ('r4h1', 'eth0'))})
    # the existing namespaces gain nothing but, on each reflector, the route to the new rack's segment
    new_route = ('192.168.104.0/24', '10.255.0.41', 'eth1', 'static')
    for host in old_hosts:
        addrs, routes = lab.kernel(host)
        assert addrs == before_kernel[host][0], host
        want = before_kernel[host][1] | ({new_route} if host in lab.reflectors else set())
        assert routes == want, host
    lab.forward_on_reflectors()  # rr4 is new
    assert lab.pings([(lab.netns('r4h1'), '192.168.104.1')]
                     + [(lab.netns('rr4'), lab.spine[r]) for r in lab.reflectors if r != 'rr4']
                     + [(lab.netns(r), '10.255.0.41') for r in lab.reflectors if r != 'rr4']
                     + [(lab.netns('r4h1'), lab.hosts[h]) for h in ('r1h1', 'r2h2', 'r3h3')]
                     + [(lab.netns(h), '192.168.104.11') for h in ('r1h3', 'r2h1', 'r3h2')]) == []
    assert lab.playbook('lab_up.yml', '-i', inventory).recap['localhost']['changed'] == 0


def test_racks_lab_down_removes_everything(racks_lab):
    proc = racks_lab.playbook('lab_down.yml', label='racks: lab_down')
    assert proc.recap['localhost']['changed'] == 1, proc.stdout
    assert racks_lab.leftovers() == []
    assert not racks_lab.state_dir.exists()
    proc = racks_lab.playbook('lab_down.yml', label='racks: lab_down (second run)')
    assert proc.recap['localhost']['changed'] == 0, proc.stdout

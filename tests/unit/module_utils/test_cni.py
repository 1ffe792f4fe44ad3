"""The CNI protocol of the netfleet-calico plugin (plugins/module_utils/cni.py): requests, results, errors,
and ADD / DEL / CHECK / GC against a small fake ``ip`` and a recording ``cni_policy.run``."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os

import pytest

from ansible_collections.netfleet.calico.plugins.module_utils import (
    cni,
    cni_batch,
    cni_endpoint,
    cni_policy,
    cni_store,
    iproute,
    netlink,
    procfs,
)

NETNS = '/run/netns/netns-0b5c'
CID = '0b5c4a9e7f31'
SET = 'cali-s-0123456789abcdef'


class FakeIp:
    """Just the ``ip`` calls cni_endpoint makes: host-side veth ends with alias, flags, /32 route, and the
    container side's address (by namespace)."""

    def __init__(self):
        self.links = {}  # host ifname -> {ifalias, flags, netns, ifname, addr}
        self.routes = {}  # dst -> dev (protocol 80, main)
        self.calls = []
        self.fail_inside = None  # the veth's creation fails (File exists)
        self.pending_netns = None

    def host(self):
        return FakeNetlink(self, None)

    @contextlib.contextmanager
    def container(self, netns):
        self.pending_netns = netns
        yield FakeNetlink(self, netns), 99

    def run(self, args, data=None, netns=None, check=True):
        self.calls.append(('run', list(args)))
        assert check is False
        if args[0] == '-j':  # ip -j -d link show dev NAME: the link as JSON, or 'does not exist'
            link = self.links.get(args[-1])
            if link is None:
                return 1, '', 'Device "%s" does not exist.\n' % args[-1]
            out = {'ifname': args[-1], 'flags': list(link['flags'])}
            if link['ifalias']:
                out['ifalias'] = link['ifalias']
            return 0, json.dumps([out]), ''
        name = args[3]
        if name not in self.links:
            err = 'Cannot find device "%s"\n' if args[1] == 'del' else 'Device "%s" does not exist.\n'
            return 1, '', err % name
        return 0, '', ''

    def json(self, args, netns=None):
        self.calls.append(('json', list(args)))
        if 'route' in args:
            return [{'dst': dst.split('/')[0], 'dev': dev, 'protocol': '80', 'scope': 'link', 'flags': []}
                    for dst, dev in self.routes.items()]
        link = self.links.get(args[-1])
        if link is None:
            raise iproute.IprouteError('Device "%s" does not exist.' % args[-1])
        out = {'ifname': args[-1], 'flags': list(link['flags'])}
        if link['ifalias']:
            out['ifalias'] = link['ifalias']
        return [out]

    def json_batch(self, lines, netns=None):
        self.calls.append(('json_batch', netns, list(lines)))
        link = next(v for v in self.links.values() if v['netns'] == netns)
        return [[{'ifname': link['ifname'], 'addr_info': [{'family': 'inet', 'local': link['addr'], 'prefixlen': 32}]}],
                [{'dst': 'default', 'gateway': iproute.CALICO_GATEWAY, 'dev': link['ifname']}]]

    def writes(self):
        return [c for c in self.calls if c[0] == 'nl' and c[2] != 'link_index']


class FakeNetlink:
    """The netlink requests cni_endpoint makes, on FakeIp's links: ``netns`` None is the host."""

    def __init__(self, fake, netns):
        self.fake, self.netns = fake, netns

    def _call(self, op, *args):
        self.fake.calls.append(('nl', self.netns, op) + args)

    def add_veth(self, name, peer, fd, mtu=None, mac=None, peer_mac=None):
        self._call('add_veth', name, peer, mtu, mac, peer_mac)
        if self.fake.fail_inside:
            raise netlink.NetlinkError(errno.EEXIST, 'create veth %s (peer %s)' % (name, peer))
        self.fake.links[name] = {'ifalias': None, 'flags': ['BROADCAST'], 'netns': self.fake.pending_netns,
                                 'ifname': peer, 'addr': None}

    def link_index(self, name):
        self._call('link_index', name)
        return name if self.netns is not None or name in self.fake.links else None

    def link_set(self, index, name, up=None, alias=None, group=None):
        self._call('link_set', name, up, alias, group)
        if self.netns is None:
            link = self.fake.links[index]
            if group is not None:
                link['group'] = group
            else:
                link['ifalias'] = alias
            if up:
                link['flags'].append('UP')

    def group_del(self, group):
        self._call('group_del', group)
        for name in [n for n, link in self.fake.links.items() if link.get('group') == group]:
            self.link_del(name)

    def addr_add(self, index, address, prefixlen, name=''):
        self._call('addr_add', name, '%s/%d' % (address, prefixlen))
        next(v for v in self.fake.links.values() if v['netns'] == self.netns)['addr'] = address

    def route_replace(self, dst, prefixlen, index, gateway=None, scope=0, protocol=3, name=''):
        self._call('route_replace', '%s/%d' % (dst, prefixlen), gateway, name, protocol)
        if self.netns is None:
            assert name in self.fake.links and protocol == 80
            self.fake.routes['%s/%d' % (dst, prefixlen)] = name

    def link_del(self, name):
        self._call('link_del', name)
        if name not in self.fake.links:
            return False
        del self.fake.links[name]
        self.fake.routes = {dst: dev for dst, dev in self.fake.routes.items() if dev != name}
        return True


class PolicyRun:
    """Records cni_policy.run calls (argv, stdin); answers ``iptables-save`` / ``ipset save`` with canned text
    (the dispatch chains alone, no set), everything else with nothing."""

    SAVES = {
        ('iptables-nft-save', '-t', 'filter'): '*filter\n:INPUT ACCEPT [0:0]\n:cali-cni-from-dispatch - [0:0]\n'
                                               ':cali-cni-to-dispatch - [0:0]\n-A cali-cni-from-dispatch -j DROP\n'
                                               '-A cali-cni-to-dispatch -j DROP\nCOMMIT\n',
        ('ipset', 'save'): 'create other hash:ip family inet hashsize 1024 maxelem 65536\n',
    }

    def __init__(self):
        self.calls = []
        self.fail = None  # (argv[0], how many times)

    def __call__(self, argv, data=None):
        self.calls.append((list(argv), data))
        if tuple(argv) in self.SAVES:
            return self.SAVES[tuple(argv)]
        if self.fail and argv[0] == self.fail[0] and self.fail[1] > 0:
            self.fail = (self.fail[0], self.fail[1] - 1)
            raise cni_policy.PolicyError('%s failed (rc=1): boom' % argv[0])
        return ''


@pytest.fixture
def sysctls(monkeypatch):
    values = {}
    monkeypatch.setattr(procfs, 'write_sysctl', lambda name, value, root=None: values.__setitem__(name, str(value)))
    monkeypatch.setattr(procfs, 'read_sysctl', lambda name, root=None: values.get(name))
    return values


@pytest.fixture
def policy_run(monkeypatch):
    fake = PolicyRun()
    monkeypatch.setattr(cni_policy, 'run', fake)
    return fake


@pytest.fixture
def ip(sysctls, policy_run):
    return FakeIp()


@pytest.fixture
def config(tmp_path):
    """Write the host's configuration file; returns (path, dict) and rewrites it on ``config.update(...)``."""
    data = {'version': 1, 'data_dir': str(tmp_path / 'data'), 'mtu': 1440,
            'networks': {'web': {'range': '10.0.1.0/29', 'labels': {'app': 'web'}},
                         'tiny': {'range': '10.0.1.8/30', 'labels': {}}},
            'reserved': ['10.0.1.8', '10.0.1.9', '10.0.1.10', '10.0.1.11'],
            'policy': {'enabled': False}}
    return config_file(tmp_path, data)


def config_file(tmp_path, data):
    """``data`` written to <tmp_path>/cni.json; the dict's ``write()`` writes it again after a change."""
    path = tmp_path / 'cni.json'

    class Config(dict):
        def write(self):
            path.write_text(json.dumps(self))
            return str(path)

    cfg = Config(data)
    cfg.path = cfg.write()
    return cfg


def env(command, **kw):
    out = {'CNI_COMMAND': command, 'CNI_CONTAINERID': CID, 'CNI_IFNAME': 'eth0', 'CNI_NETNS': NETNS,
           'CNI_ARGS': 'IgnoreUnknown=1;K8S_POD_NAME=web1', 'CNI_PATH': '/opt/cni/bin'}
    out.update(kw)
    return {k: v for k, v in out.items() if v is not None}


def conf(config, version='1.0.0', network='web', **kw):
    out = {'cniVersion': version, 'name': network, 'type': 'netfleet-calico', 'config_file': config.path}
    out.update(kw)
    return json.dumps(out)


def error_of(status, out, code):
    """The one JSON error object of a failed call (and its code)."""
    assert status == 1
    doc = json.loads(out)
    assert isinstance(doc, dict)
    assert set(doc) - {'details'} == {'cniVersion', 'code', 'msg'}
    assert doc['code'] == code, doc
    assert isinstance(doc['msg'], str) and doc['msg']
    assert doc['cniVersion'] in cni.SUPPORTED
    return doc


def store_of(config):
    return cni_store.Store(config['data_dir'])


# ------------------------------------------------------------------------------------------ input

@pytest.mark.parametrize('text,expected', [
    ('', {}),
    (None, {}),
    ('IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p',
     {'IgnoreUnknown': '1', 'K8S_POD_NAMESPACE': 'ns', 'K8S_POD_NAME': 'p'}),
    ('A=b=c;', {'A': 'b=c'}),
    (';;K=', {'K': ''}),
])
def test_parse_cni_args(text, expected):
    assert cni.parse_cni_args(text) == expected


@pytest.mark.parametrize('text', ['novalue', '=x', 'A=1;broken'])
def test_parse_cni_args_errors(text):
    with pytest.raises(cni.CniError, match='not KEY=VALUE') as err:
        cni.parse_cni_args(text)
    assert err.value.code == 4


def test_read_request_add(config):
    req = cni.read_request(env('ADD'), conf(config))
    assert req['command'] == 'ADD' and req['version'] == '1.0.0'
    assert req['key'] == CID + '_eth0'
    assert (req['container_id'], req['ifname'], req['netns']) == (CID, 'eth0', NETNS)
    assert req['args'] == {'IgnoreUnknown': '1', 'K8S_POD_NAME': 'web1'}
    assert req['conf']['name'] == 'web'


def test_read_request_del_needs_no_netns(config):
    req = cni.read_request(env('DEL', CNI_NETNS=None), conf(config))
    assert req['netns'] == '' and req['key'] == CID + '_eth0'


@pytest.mark.parametrize('command,environ,stdin,code,match', [
    ('ADD', {'CNI_CONTAINERID': None}, None, 4, 'CNI_CONTAINERID is not set'),
    ('DEL', {'CNI_CONTAINERID': ''}, None, 4, 'CNI_CONTAINERID is not set'),
    ('CHECK', {'CNI_CONTAINERID': None}, None, 4, 'CNI_CONTAINERID is not set'),
    ('ADD', {'CNI_IFNAME': None}, None, 4, 'CNI_IFNAME is not set'),
    ('ADD', {'CNI_NETNS': None}, None, 4, 'CNI_NETNS is not set'),
    ('ADD', {'CNI_CONTAINERID': '../x'}, None, 4, 'container id'),
    ('ADD', {'CNI_CONTAINERID': 'a b'}, None, 4, 'container id'),
    ('ADD', {'CNI_CONTAINERID': 'x\n'}, None, 4, 'container id'),
    ('ADD', {'CNI_IFNAME': '../eth0'}, None, 4, 'interface name'),
    ('ADD', {'CNI_NETNS': 'netns-0b5c'}, None, 4, 'not an absolute namespace path'),
    ('ADD', {'CNI_NETNS': '/run/netns/../x'}, None, 4, 'not an absolute namespace path'),
    ('ADD', {'CNI_ARGS': 'broken'}, None, 4, 'CNI_ARGS'),
    ('BOGUS', {}, None, 4, 'CNI_COMMAND'),
    ('', {}, None, 4, 'CNI_COMMAND'),
    ('ADD', {}, '{"cniVersion": ', 6, 'cannot decode'),
    ('ADD', {}, '[1, 2]', 6, 'not a JSON object'),
    ('ADD', {}, '\xff', 6, 'cannot decode'),
    ('ADD', {}, '{"cniVersion": "0.2.0", "name": "web"}', 1, "cniVersion '0.2.0' is not supported"),
    ('ADD', {}, '{"name": "web"}', 1, 'cniVersion None is not supported'),
    ('ADD', {}, '', 1, 'not supported'),
    ('GC', {}, '{"cniVersion": "1.0.0", "name": "web"}', 1, 'GC needs cniVersion 1.1.0'),
    ('STATUS', {}, '{"cniVersion": "0.4.0", "name": "web"}', 1, 'STATUS needs cniVersion 1.1.0'),
])
def test_read_request_errors(config, command, environ, stdin, code, match):
    with pytest.raises(cni.CniError, match=match) as err:
        cni.read_request(env(command, **environ), conf(config) if stdin is None else stdin)
    assert err.value.code == code


def test_read_request_environment_without_command():
    with pytest.raises(cni.CniError) as err:
        cni.read_request({}, '{}')
    assert err.value.code == 4


def test_unsupported_version_error_lists_the_supported_ones(config):
    with pytest.raises(cni.CniError) as err:
        cni.read_request(env('ADD'), '{"cniVersion": "9.9.9"}')
    assert err.value.details == 'supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0'


@pytest.mark.parametrize('version', cni.SUPPORTED)
def test_read_request_every_supported_version(config, version):
    assert cni.read_request(env('ADD'), conf(config, version))['version'] == version


def test_read_request_version_and_status_need_no_container():
    req = cni.read_request({'CNI_COMMAND': 'VERSION'}, '')
    assert (req['command'], req['version'], req['conf']) == ('VERSION', '1.0.0', {})
    assert 'key' not in cni.read_request({'CNI_COMMAND': 'STATUS'}, '{"cniVersion": "1.1.0"}')


def req_with(conf_doc=None, args=''):
    return {'conf': conf_doc or {}, 'args': cni.parse_cni_args(args)}


def test_labels_of_network_runtime_and_namespace():
    conf_doc = {'args': {'cni': {'labels': [{'key': 'app', 'value': 'evil'}, {'key': 'tier', 'value': 'front'},
                                            'ignored', {'key': 'role', 'value': ''}]}}}
    labels = cni.labels_of(req_with(conf_doc, 'K8S_POD_NAMESPACE=prod'), {'labels': {'app': 'web'}})
    # the network's labels win over the runtime's: a container cannot claim another network's identity
    assert labels == {'app': 'web', 'tier': 'front', 'role': '', 'projectcalico.org/namespace': 'prod'}


def test_labels_of_defaults():
    assert cni.labels_of(req_with(), {}) == {}
    assert cni.labels_of(req_with({'args': 'not a mapping'}), {'labels': {'a': 'b'}}) == {'a': 'b'}
    assert cni.labels_of(req_with({'args': {'cni': None}}), {}) == {}
    # a namespace that is no valid label value is not a label (it is the runtime's business, not an error)
    assert cni.labels_of(req_with(args='K8S_POD_NAMESPACE=a b'), {}) == {}


@pytest.mark.parametrize('item', [{'key': 'a b', 'value': 'x'}, {'key': 'app', 'value': 'x\ny'},
                                  {'key': 'app', 'value': 5}, {'key': None, 'value': 'x'},
                                  {'key': 'app', 'value': 'v' * 64}, {'key': '-app', 'value': 'x'}])
def test_labels_of_rejects_bad_runtime_labels(item):
    with pytest.raises(cni.CniError, match='not a valid label') as err:
        cni.labels_of(req_with({'args': {'cni': {'labels': [item]}}}), {})
    assert err.value.code == 7


# ------------------------------------------------------------------------------------------ results

RECORD = {'key': CID + '_eth0', 'container_id': CID, 'ifname': 'eth0', 'netns': NETNS, 'ip': '10.0.1.1',
          'host_ifname': 'cali0123456789a', 'mac': '0e:01:02:03:04:05'}
SETTINGS = cni.settings_of({})


@pytest.mark.parametrize('version', ['1.0.0', '1.1.0'])
def test_add_result_1x(version):
    assert cni.add_result(version, RECORD, SETTINGS) == {
        'cniVersion': version,
        'interfaces': [{'name': 'cali0123456789a', 'mac': 'ee:ee:ee:ee:ee:ee'},
                       {'name': 'eth0', 'mac': '0e:01:02:03:04:05', 'sandbox': NETNS}],
        'ips': [{'address': '10.0.1.1/32', 'gateway': '169.254.1.1', 'interface': 1}],
        'routes': [{'dst': '0.0.0.0/0', 'gw': '169.254.1.1'}],
        'dns': {},
    }


@pytest.mark.parametrize('version', ['0.3.0', '0.3.1', '0.4.0'])
def test_add_result_legacy_has_ip_version(version):
    result = cni.add_result(version, RECORD, SETTINGS)
    assert result['cniVersion'] == version
    assert result['ips'] == [{'version': '4', 'address': '10.0.1.1/32', 'gateway': '169.254.1.1', 'interface': 1}]
    assert result['interfaces'][result['ips'][0]['interface']]['sandbox'] == NETNS
    json.dumps(result)


def test_settings_of_defaults_and_overrides():
    assert SETTINGS == {'gateway': '169.254.1.1', 'gateway6': 'fe80::ecee:eeff:feee:eeee', 'mac': 'ee:ee:ee:ee:ee:ee',
                        'protocol': 80, 'prefix': 'cali', 'mtu': None}
    assert cni.settings_of({'gateway': '169.254.9.9', 'protocol': '81', 'interface_prefix': 'wl', 'mtu': 1400}) == {
        'gateway': '169.254.9.9', 'gateway6': 'fe80::ecee:eeff:feee:eeee', 'mac': 'ee:ee:ee:ee:ee:ee',
        'protocol': 81, 'prefix': 'wl', 'mtu': 1400}


# ------------------------------------------------------------------------------------------ handle: VERSION, errors

def test_version():
    status, out = cni.handle({'CNI_COMMAND': 'VERSION'}, '{"cniVersion": "0.4.0"}')
    assert status == 0
    assert json.loads(out) == {'cniVersion': '0.4.0', 'supportedVersions': list(cni.SUPPORTED)}
    assert json.loads(cni.handle({'CNI_COMMAND': 'VERSION'}, '')[1])['cniVersion'] == '1.0.0'
    # a runtime newer than us asks with its own version: answer with ours, it picks from supportedVersions
    assert json.loads(cni.handle({'CNI_COMMAND': 'VERSION'}, '{"cniVersion": "9.0.0"}')[1])['cniVersion'] == '1.1.0'


def test_error_unsupported_version(ip, config):
    doc = error_of(*cni.handle(env('ADD'), conf(config, '0.2.0'), ip=ip), code=1)
    assert doc['details'].startswith('supported:')
    assert ip.calls == []


def test_error_bad_environment(ip, config):
    error_of(*cni.handle(env('ADD', CNI_CONTAINERID=None), conf(config), ip=ip), code=4)
    error_of(*cni.handle(env('ADD', CNI_CONTAINERID='../../etc'), conf(config), ip=ip), code=4)
    error_of(*cni.handle(env('NOPE'), conf(config), ip=ip), code=4)
    assert ip.calls == []


def test_error_bad_json(ip):
    doc = error_of(*cni.handle(env('ADD'), '{"cniVersion": "1.0.0",', ip=ip), code=6)
    assert doc['cniVersion'] == '1.0.0'


def test_error_missing_config_file(ip, config, tmp_path):
    doc = error_of(*cni.handle(env('ADD'), conf(config, '0.4.0', config_file=str(tmp_path / 'none.json')), ip=ip),
                   code=7)
    assert doc['cniVersion'] == '0.4.0'  # the request's version once it is known
    assert 'none.json' in doc['msg'] and doc['details']


@pytest.mark.parametrize('content,match', [('{"version": 1', 'not valid JSON'),
                                           ('{"version": 2}', 'version 1'),
                                           ('[1]', 'version 1')])
def test_error_bad_config_file(ip, config, content, match):
    with open(config.path, 'w') as handle:
        handle.write(content)
    doc = error_of(*cni.handle(env('ADD'), conf(config), ip=ip), code=7)
    assert match in doc['msg']


def test_error_undeclared_network(ip, config):
    doc = error_of(*cni.handle(env('ADD'), conf(config, network='db'), ip=ip), code=7)
    assert "'db'" in doc['msg'] and doc['details']
    assert ip.calls == []
    assert store_of(config).records() == {}


def test_network_key_wins_over_name(ip, config):
    doc = dict(json.loads(conf(config, network='conflist-name')), network='web')
    status, out = cni.handle(env('ADD'), json.dumps(doc), ip=ip)
    assert status == 0, out
    assert store_of(config).get(CID + '_eth0')['network'] == 'web'


def test_error_exhausted_range(ip, config):
    # tiny: 10.0.1.8/30 whose four addresses are all reserved for the host's static workloads
    doc = error_of(*cni.handle(env('ADD'), conf(config, network='tiny'), ip=ip), code=100)
    assert '10.0.1.8/30' in doc['msg'] and doc['details']
    assert ip.writes() == []  # nothing made
    assert store_of(config).records() == {}


def test_a_full_range_reclaims_attachments_whose_container_vanished(ip, config, tmp_path):
    """After a reboot (or a runtime crash) records of containers that are gone hold the range: the ADD that
    finds it full reclaims the ones whose namespace and veth both no longer exist, and only those."""
    store = store_of(config)
    alive = tmp_path / 'netns-alive'
    alive.write_text('')
    with store.locked():
        for i in range(7):  # 10.0.1.1-.7 (the .0 is never handed out): all of web
            netns = str(alive) if i == 0 else str(tmp_path / ('netns-gone-%d' % i))
            store.put({'key': 'old%d_eth0' % i, 'container_id': 'old%d' % i, 'ifname': 'eth0', 'netns': netns,
                       'network': 'web', 'ip': '10.0.1.%d' % (i + 1), 'host_ifname': 'caliold%08d' % i})
    result = add(ip, config)
    assert result['ips'][0]['address'] in ['10.0.1.%d/32' % n for n in range(2, 8)]
    assert sorted(store.records()) == sorted([CID + '_eth0', 'old0_eth0'])  # the live one is kept


def test_error_status_not_ready(ip, config, tmp_path):
    doc = error_of(*cni.handle(env('STATUS'), conf(config, '1.1.0', config_file=str(tmp_path / 'no.json')), ip=ip),
                   code=50)
    assert doc['cniVersion'] == '1.1.0' and doc['msg'].startswith('not ready: ')
    error_of(*cni.handle(env('STATUS'), conf(config, '1.1.0', network='db'), ip=ip), code=50)


def test_status_ready(ip, config):
    assert cni.handle(env('STATUS'), conf(config, '1.1.0'), ip=ip) == (0, '')


def test_status_not_ready_when_the_data_dir_cannot_be_made(ip, config, tmp_path):
    config['data_dir'] = '/proc/netfleet-calico/cni'  # its parent cannot be written
    config.write()
    doc = error_of(*cni.handle(env('STATUS'), conf(config, '1.1.0'), ip=ip), code=50)
    assert 'cannot write' in doc['msg']


@pytest.mark.parametrize('extra, code', [({'name': ['web'], 'network': None}, 5), ({'config_file': ['x']}, 7),
                                         ({'config_file': 'relative/cni.json'}, 7), ({'args': {'cni': ['labels']}}, 5)])
def test_malformed_configuration_is_an_error_object_not_a_crash(ip, config, extra, code):
    doc = json.loads(conf(config))
    doc.update(extra)
    status, out = cni.handle(env('ADD'), json.dumps(doc), ip=ip)
    error_of(status, out, code=code)


def test_check_needs_040_or_later(ip, config):
    error_of(*cni.handle(env('CHECK'), conf(config, '0.3.1'), ip=ip), code=1)


# ------------------------------------------------------------------------------------------ ADD / DEL / CHECK / GC

def add(ip, config, version='1.0.0', **environ):
    status, out = cni.handle(env('ADD', **environ), conf(config, version), ip=ip)
    assert status == 0, out
    return json.loads(out)


def test_add_makes_the_endpoint_and_answers_per_spec(ip, config, sysctls):
    result = add(ip, config)
    host_if = cni_endpoint.host_ifname(CID, 'eth0')
    assert result == {
        'cniVersion': '1.0.0',
        'interfaces': [{'name': host_if, 'mac': 'ee:ee:ee:ee:ee:ee'},
                       {'name': 'eth0', 'mac': cni_endpoint.container_mac(CID + '_eth0'), 'sandbox': NETNS}],
        'ips': [{'address': '10.0.1.1/32', 'gateway': '169.254.1.1', 'interface': 1}],
        'routes': [{'dst': '0.0.0.0/0', 'gw': '169.254.1.1'}],
        'dns': {},
    }
    assert ip.calls[0] == ('nl', None, 'add_veth', host_if, 'eth0', 1440, 'ee:ee:ee:ee:ee:ee',
                           cni_endpoint.container_mac(CID + '_eth0'))
    assert ('nl', NETNS, 'addr_add', 'eth0', '10.0.1.1/32') in ip.calls
    assert ('nl', NETNS, 'route_replace', '0.0.0.0/0', '169.254.1.1', 'eth0', 3) in ip.calls
    assert ip.links[host_if]['ifalias'] == cni_endpoint.ALIAS_PREFIX + CID + '_eth0'
    assert ip.routes == {'10.0.1.1/32': host_if}
    assert sysctls == {tmpl.format(ifname=host_if): value for tmpl, value in iproute.WORKLOAD_SYSCTLS}
    rec = store_of(config).get(CID + '_eth0')
    assert rec['ip'] == '10.0.1.1' and rec['host_ifname'] == host_if and rec['netns'] == NETNS
    assert rec['labels'] == {'app': 'web'} and rec['network'] == 'web'


@pytest.mark.parametrize('version', cni.SUPPORTED)
def test_add_result_per_version(ip, config, version):
    result = add(ip, config, version)
    assert result['cniVersion'] == version
    assert ('version' in result['ips'][0]) == version.startswith('0.')


def test_repeated_add_gives_the_same_answer_and_changes_nothing(ip, config):
    first = add(ip, config)
    writes = len(ip.writes())
    assert add(ip, config) == first
    assert len(ip.writes()) == writes
    assert len(store_of(config).records()) == 1


def test_add_in_a_new_namespace_starts_over(ip, config):
    add(ip, config)
    result = add(ip, config, CNI_NETNS='/proc/4242/ns/net')
    assert result['interfaces'][1]['sandbox'] == '/proc/4242/ns/net'
    assert result['ips'][0]['address'] == '10.0.1.2/32'  # round robin: not the address just freed
    assert ('nl', None, 'link_del', cni_endpoint.host_ifname(CID, 'eth0')) in ip.calls
    assert [r['ip'] for r in store_of(config).records().values()] == ['10.0.1.2']


def test_add_of_a_broken_endpoint_rebuilds_it(ip, config):
    add(ip, config)
    host_if = cni_endpoint.host_ifname(CID, 'eth0')
    ip.links[host_if]['flags'].remove('UP')
    result = add(ip, config)
    assert 'UP' in ip.links[host_if]['flags']
    assert len(store_of(config).records()) == 1 and result['ips'][0]['address'] == '10.0.1.2/32'


def test_two_containers_two_addresses_and_other_interfaces(ip, config):
    a = add(ip, config)
    b = add(ip, config, CNI_CONTAINERID='ffee01', CNI_NETNS='/run/netns/b')
    c = add(ip, config, CNI_IFNAME='net1', CNI_NETNS='/run/netns/c')
    assert [r['ips'][0]['address'] for r in (a, b, c)] == ['10.0.1.1/32', '10.0.1.2/32', '10.0.1.3/32']
    assert len({r['interfaces'][0]['name'] for r in (a, b, c)}) == 3
    assert c['interfaces'][0]['name'] == cni_endpoint.host_ifname(CID, 'net1')


def test_add_failure_leaves_nothing_behind(ip, config):
    ip.fail_inside = 'RTNETLINK answers: File exists'
    doc = error_of(*cni.handle(env('ADD'), conf(config), ip=ip), code=5)
    assert 'already has an interface' in doc['msg']
    assert store_of(config).records() == {}
    assert ip.links == {} and ip.routes == {}
    ip.fail_inside = None
    assert add(ip, config)['ips'][0]['address'] == '10.0.1.2/32'


def test_add_and_del_with_policy(ip, config, policy_run):
    config['policy'] = {'enabled': True, 'iptables': 'legacy',
                        'policies': [{'name': 'web', 'selector': "app == 'web'", 'types': ['ingress'],
                                      'ingress': [{'action': 'allow', 'protocol': 'tcp', 'ports': [80],
                                                   'peers': None, 'set': SET}]}],
                        'sets': {SET: {'selector': 'has(app)', 'members': []}}}
    config.write()
    add(ip, config)
    host_if = cni_endpoint.host_ifname(CID, 'eth0')
    assert [argv for argv, _data in policy_run.calls] == [
        ['ipset', 'restore', '-exist'], ['iptables-legacy-restore', '--noflush']]
    assert policy_run.calls[0][1] == 'add %s 10.0.1.1\n' % SET
    text = policy_run.calls[1][1]
    assert '-A cali-cni-tw-%s -p tcp -m set --match-set %s src -m tcp --dport 80 -j ACCEPT\n' % (host_if, SET) in text
    assert '-I cali-cni-from-dispatch 1 -i %s -g cali-cni-fw-%s\n' % (host_if, host_if) in text

    policy_run.calls.clear()
    assert cni.handle(env('DEL'), conf(config), ip=ip) == (0, '')
    assert [argv for argv, _data in policy_run.calls] == [
        ['iptables-legacy-restore', '--noflush'], ['ipset', 'restore', '-exist']]
    assert '-X cali-cni-fw-%s\n' % host_if in policy_run.calls[0][1]
    assert policy_run.calls[1][1] == 'del %s 10.0.1.1\n' % SET


def test_add_policy_failure_undoes_the_endpoint(ip, config, policy_run):
    config['policy'] = {'enabled': True, 'policies': [], 'sets': {}}
    config.write()
    policy_run.fail = ('iptables-nft-restore', 2)  # the insert, then the whole rewrite
    doc = error_of(*cni.handle(env('ADD'), conf(config), ip=ip), code=5)
    assert doc['msg'] == 'ADD %s: iptables-nft-restore failed (rc=1): boom' % CID
    assert ip.links == {} and store_of(config).records() == {}


def test_add_whose_undo_fails_too_leaves_the_record_for_del(ip, config, policy_run):
    config['policy'] = {'enabled': True, 'policies': [], 'sets': {}}
    config.write()
    policy_run.fail = ('iptables-nft-restore', 4)  # ADD's two tries, then the undo's two
    error_of(*cni.handle(env('ADD'), conf(config), ip=ip), code=5)
    assert ip.links == {}
    assert list(store_of(config).records()) == [CID + '_eth0']  # the runtime's DEL finishes the job
    assert cni.handle(env('DEL'), conf(config), ip=ip) == (0, '')
    assert store_of(config).records() == {}


def test_add_with_a_bad_policy_is_a_configuration_error(ip, config):
    config['policy'] = {'enabled': True, 'policies': [{'name': 'x', 'selector': 'app = web'}], 'sets': {}}
    config.write()
    error_of(*cni.handle(env('ADD'), conf(config), ip=ip), code=7)
    assert ip.links == {} and store_of(config).records() == {}


def test_add_reports_a_locked_store_as_try_again(ip, config, monkeypatch):
    locked = cni_store.Store.locked
    monkeypatch.setattr(cni_store.Store, 'locked', lambda self, timeout=60.0: locked(self, timeout=0.01))
    with cni_store.Store(config['data_dir']).locked():
        error_of(*cni.handle(env('ADD'), conf(config), ip=ip), code=11)
    assert ip.calls == []


def test_del_removes_endpoint_and_record_and_is_repeatable(ip, config):
    add(ip, config)
    assert cni.handle(env('DEL'), conf(config), ip=ip) == (0, '')
    assert ip.links == {} and ip.routes == {}
    assert store_of(config).records() == {}
    assert cni.handle(env('DEL'), conf(config), ip=ip) == (0, '')
    assert cni.handle(env('DEL', CNI_NETNS=None), conf(config), ip=ip) == (0, '')


def test_del_succeeds_when_the_config_file_is_missing(ip, config, tmp_path):
    status, out = cni.handle(env('DEL'), conf(config, config_file=str(tmp_path / 'gone.json')), ip=ip)
    assert (status, out) == (0, '')
    assert ip.calls == []


def test_del_without_record_removes_only_our_half_made_veth(ip, config):
    host_if = cni_endpoint.host_ifname(CID, 'eth0')
    ip.links[host_if] = {'ifalias': cni_endpoint.ALIAS_PREFIX + CID + '_eth0', 'flags': [], 'netns': NETNS,
                         'ifname': 'eth0', 'addr': '10.0.1.5'}
    assert cni.handle(env('DEL'), conf(config), ip=ip) == (0, '')
    assert host_if not in ip.links
    # a veth of that name that is not ours (another alias) is left alone
    ip.links[host_if] = {'ifalias': 'netfleet:ep:web1', 'flags': [], 'netns': NETNS, 'ifname': 'eth0',
                         'addr': '10.0.1.5'}
    assert cni.handle(env('DEL'), conf(config), ip=ip) == (0, '')
    assert host_if in ip.links


def test_del_of_a_corrupt_record_removes_it(ip, config):
    st = store_of(config)
    with st.locked():
        pass
    with open(st.path(CID + '_eth0'), 'w') as handle:
        handle.write('{broken')
    assert cni.handle(env('DEL'), conf(config), ip=ip) == (0, '')
    assert st.records() == {}


def test_check(ip, config):
    result = add(ip, config)
    check_conf = conf(config, prevResult=result)
    assert cni.handle(env('CHECK'), check_conf, ip=ip) == (0, '')
    host_if = cni_endpoint.host_ifname(CID, 'eth0')
    ip.routes.clear()
    doc = error_of(*cni.handle(env('CHECK'), check_conf, ip=ip), code=101)
    assert 'host route 10.0.1.1/32 dev %s is missing' % host_if in doc['msg']
    bad_prev = dict(result, ips=[{'address': '10.0.1.7/32'}])
    ip.routes['10.0.1.1/32'] = host_if
    doc = error_of(*cni.handle(env('CHECK'), conf(config, prevResult=bad_prev), ip=ip), code=101)
    assert 'prevResult has 10.0.1.7/32' in doc['msg']
    error_of(*cni.handle(env('CHECK', CNI_CONTAINERID='unknown'), check_conf, ip=ip), code=3)


def test_gc_removes_attachments_the_runtime_does_not_list(ip, config, policy_run):
    add(ip, config)
    add(ip, config, CNI_CONTAINERID='ffee01', CNI_NETNS='/run/netns/b')
    gc = conf(config, '1.1.0', **{'cni.dev/valid-attachments': [{'containerID': 'ffee01', 'ifname': 'eth0'}]})
    assert cni.handle(env('GC', CNI_CONTAINERID=None, CNI_NETNS=None, CNI_IFNAME=None), gc, ip=ip) == (0, '')
    assert list(store_of(config).records()) == ['ffee01_eth0']
    assert list(ip.links) == [cni_endpoint.host_ifname('ffee01', 'eth0')]
    assert [argv for argv, _data in policy_run.calls] == [['ipset', 'save'], ['iptables-nft-save', '-t', 'filter']]


# ------------------------------------------------------------------------------------------ main and log

def test_main_prints_one_json_line(monkeypatch, capsys):
    monkeypatch.setattr(os, 'environ', {'CNI_COMMAND': 'VERSION'})
    monkeypatch.setattr('sys.stdin', io.StringIO('{"cniVersion": "1.1.0"}'))
    assert cni.main() == 0
    out = capsys.readouterr().out
    assert out.endswith('\n') and out.count('\n') == 1
    assert json.loads(out)['supportedVersions'] == list(cni.SUPPORTED)


def test_main_error_exit_status_and_log(monkeypatch, capsys, tmp_path):
    log = tmp_path / 'cni.log'
    monkeypatch.setattr(os, 'environ', {'CNI_COMMAND': 'ADD', 'CNI_IFNAME': 'eth0', 'CNI_NETNS': NETNS})
    monkeypatch.setattr('sys.stdin', io.StringIO(json.dumps({'cniVersion': '1.0.0', 'log_file': str(log)})))
    assert cni.main() == 1
    assert json.loads(capsys.readouterr().out)['code'] == 4
    line = log.read_text()
    assert line.count('\n') == 1 and ' ADD - eth0 rc=1 ' in line and '"code": 4' in line


def test_log_never_fails(tmp_path):
    cni.log({}, 'not json', 0, '', 0.0)
    cni.log({}, '', 0, '', 0.0)
    cni.log({'CNI_COMMAND': 'DEL'}, json.dumps({'log_file': str(tmp_path / 'no' / 'dir' / 'x.log')}), 0, '', 0.0)
    path = tmp_path / 'ok.log'
    cni.log({'CNI_COMMAND': 'DEL', 'CNI_CONTAINERID': CID}, json.dumps({'log_file': str(path)}), 0, 'x', 0.0)
    assert ' DEL %s - rc=0 ' % CID in path.read_text()


# ------------------------------------------------------------------------------------------ batches (the agent)

def policy_config(config):
    config['policy'] = {'enabled': True, 'iptables': 'nft',
                        'policies': [{'name': 'web', 'selector': "app == 'web'", 'types': ['ingress'],
                                      'ingress': [{'action': 'allow', 'protocol': 'tcp', 'ports': [80],
                                                   'peers': None, 'set': SET}]}],
                        'sets': {SET: {'selector': 'has(app)', 'members': []}}}
    config.write()


def test_a_batch_shares_one_lock_and_one_restore_each_way(ip, config, policy_run, monkeypatch):
    policy_config(config)
    add(ip, config, CNI_CONTAINERID='old1', CNI_NETNS='/run/netns/old1')
    policy_run.calls.clear()
    locks = []
    locked = cni_store.Store.locked
    monkeypatch.setattr(cni_store.Store, 'locked', lambda self, timeout=60.0: locks.append(1) or locked(self, timeout))
    calls = [(env('ADD', CNI_CONTAINERID='c%d' % i, CNI_NETNS='/run/netns/c%d' % i), conf(config)) for i in range(3)]
    calls.append((env('DEL', CNI_CONTAINERID='old1'), conf(config)))
    calls.append((env('VERSION'), '{"cniVersion": "1.0.0"}'))
    calls.append((env('ADD', CNI_CONTAINERID='x'), conf(config, network='nope')))
    answers = cni_batch.handle_many(calls, ip)
    assert [a[0] for a in answers] == [0, 0, 0, 0, 0, 1]
    ips = [json.loads(answers[i][1])['ips'][0]['address'] for i in range(3)]
    assert len(set(ips)) == 3 and '10.0.1.1/32' not in ips  # round robin past old1's address
    assert json.loads(answers[5][1])['code'] == 7
    assert locks == [1, 1]  # the ADDs, then the DELs
    assert [argv for argv, _data in policy_run.calls] == [
        ['ipset', 'restore', '-exist'], ['iptables-nft-restore', '--noflush'],
        ['ipset', 'restore', '-exist'], ['iptables-nft-restore', '--noflush']]
    assert policy_run.calls[1][1].count('-I cali-cni-from-dispatch 1') == 3
    assert policy_run.calls[2][1] == 'del %s 10.0.1.1\n' % SET  # under the lock, before the address is free
    assert policy_run.calls[3][1].count('-D cali-cni-from-dispatch') == 1  # after it
    assert [c for c in ip.calls if c[2] == 'group_del'] == [('nl', None, 'group_del', cni_endpoint.DELETE_GROUP)]
    assert sorted(store_of(config).records()) == ['c0_eth0', 'c1_eth0', 'c2_eth0']
    assert cni_endpoint.host_ifname('old1', 'eth0') not in ip.links


def test_a_batch_whose_policy_fails_undoes_its_adds(ip, config, policy_run):
    policy_config(config)
    add(ip, config, CNI_CONTAINERID='old1', CNI_NETNS='/run/netns/old1')
    policy_run.fail = ('iptables-nft-restore', 2)  # the batch's insert, then its whole rewrite
    calls = [(env('ADD', CNI_CONTAINERID='c%d' % i, CNI_NETNS='/run/netns/c%d' % i), conf(config)) for i in range(2)]
    calls.append((env('DEL', CNI_CONTAINERID='old1'), conf(config)))
    answered = []
    answers = cni_batch.handle_many(calls, ip, answer=lambda i, value: answered.append(i))
    assert [error_of(*a, code=5)['code'] for a in answers[:2]] == [5, 5]
    assert answers[2] == (0, '') and answered == [0, 1, 2]  # the ADDs are answered before the DEL is served
    assert store_of(config).records() == {} and list(ip.links) == []


@pytest.mark.parametrize('sync_fails', [False, True])
def test_a_batch_of_dels_whose_rules_fail_converges_them(ip, config, policy_run, monkeypatch, sync_fails):
    """The rules of DELs are deleted after the store lock; should that fail, the chains are converged to the
    records under the lock (sync); should that fail too, the DELs fail and a retry finds nothing left to do."""
    policy_config(config)
    for i in range(2):
        add(ip, config, CNI_CONTAINERID='old%d' % i, CNI_NETNS='/run/netns/old%d' % i)
    policy_run.calls.clear()
    policy_run.fail = ('iptables-nft-restore', 1)
    synced = []
    real_sync = cni_policy.sync

    def sync(records, policy, check_mode=False):
        synced.append(sorted(r['key'] for r in records))
        if sync_fails:
            raise cni_policy.PolicyError('iptables-nft-restore failed (rc=1): boom')
        return real_sync(records, policy, check_mode)

    monkeypatch.setattr(cni_policy, 'sync', sync)
    answers = cni_batch.handle_many([(env('DEL', CNI_CONTAINERID='old%d' % i), conf(config)) for i in range(2)], ip)
    assert synced == [[]]
    if not sync_fails:
        assert answers == [(0, ''), (0, '')]
    else:
        assert [error_of(*a, code=5)['code'] for a in answers] == [5, 5]
        assert cni.handle(env('DEL', CNI_CONTAINERID='old0'), conf(config), ip=ip) == (0, '')
    assert store_of(config).records() == {} and list(ip.links) == []

"""Policy of the CNI plugin's containers (plugins/module_utils/cni_policy.py): endpoint and dispatch chains,
ipsets, the ADD/DEL fast path and sync; plus selector.canonical(), which names the ipsets."""

from __future__ import annotations

import copy
import hashlib
import re
import sys

import pytest

from ansible_collections.netfleet.calico.plugins.module_utils import cni_policy as cp
from ansible_collections.netfleet.calico.plugins.module_utils.selector import (
    SelectorError,
    canonical,
    match_selector,
    parse_selector,
)

CONNTRACK = ['-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT', '-m conntrack --ctstate INVALID -j DROP']
BUILTINS = ('INPUT', 'FORWARD', 'OUTPUT')
TARGETS = {'ACCEPT', 'DROP', 'RETURN', 'REJECT', 'LOG'}


def set_name(selector):
    """As the controller names them (plugin_utils/cni.py): cali-s- + 16 hex of sha1 of the canonical text."""
    return cp.SET_PREFIX + hashlib.sha1(canonical(parse_selector(selector)).encode()).hexdigest()[:16]


CLIENTS = set_name("role == 'client'")
DNS = set_name("app == 'dns'")
WEB_RULE = {'action': 'allow', 'protocol': 'tcp', 'ports': ['80'], 'peers': None, 'set': CLIENTS}
DNS_RULE = {'action': 'allow', 'protocol': 'udp', 'ports': ['53'], 'peers': ['10.0.0.0/8'], 'set': DNS}
POLICY = {
    'enabled': True,
    'policies': [
        {'name': 'web', 'selector': "app == 'web'", 'types': ['ingress'], 'ingress': [WEB_RULE], 'egress': []},
        {'name': 'dns-out', 'selector': 'has(app)', 'types': ['egress'], 'ingress': [], 'egress': [DNS_RULE]},
    ],
    'sets': {
        CLIENTS: {'selector': "role == 'client'", 'members': ['10.0.2.0/26', '192.168.7.9/32']},
        DNS: {'selector': "app == 'dns'", 'members': []},
    },
}
WEB = {'key': 'web1_eth0', 'container_id': 'web1', 'ifname': 'eth0', 'network': 'web', 'ip': '10.0.1.1',
       'host_ifname': 'caliaaaaaaaaaaa', 'labels': {'app': 'web'}}
CLIENT = {'key': 'cl1_eth0', 'container_id': 'cl1', 'ifname': 'eth0', 'network': 'clients', 'ip': '10.0.1.65',
          'host_ifname': 'calibbbbbbbbbbb', 'labels': {'role': 'client'}}
DNSREC = {'key': 'dns1_eth0', 'container_id': 'dns1', 'ifname': 'eth0', 'network': 'dns', 'ip': '10.0.1.129',
          'host_ifname': 'caliccccccccccc', 'labels': {'app': 'dns'}}
WEB_TW = CONNTRACK + ['-p tcp -m set --match-set %s src -m tcp --dport 80 -j ACCEPT' % CLIENTS, '-j DROP']
WEB_FW = CONNTRACK + ['-d 10.0.0.0/8 -p udp -m set --match-set %s dst -m udp --dport 53 -j RETURN' % DNS, '-j DROP']

# the converge's part of the filter table on a CNI host (calico_chains with cni: true) and somebody else's
CONVERGE = {
    'FORWARD': ['-j cali-FORWARD', '-s 203.0.113.7/32 -j DROP'],
    'INPUT': ['-j cali-INPUT'],
    'cali-FORWARD': ['-i cali+ -j cali-from-wl-dispatch', '-o cali+ -j cali-to-wl-dispatch'],
    'cali-INPUT': ['-i cali+ -g cali-from-wl-dispatch'],
    'cali-from-wl-dispatch': ['-i calistatic0001 -g cali-fw-calistatic0001', '-i cali+ -g cali-cni-from-dispatch'],
    'cali-to-wl-dispatch': ['-o calistatic0001 -g cali-tw-calistatic0001', '-o cali+ -g cali-cni-to-dispatch'],
    'cali-fw-calistatic0001': CONNTRACK,
    'cali-tw-calistatic0001': CONNTRACK + ['-j DROP'],
    'DOCKER': ['-d 172.17.0.2/32 -p tcp -m tcp --dport 80 -j ACCEPT'],
    'cali-cni-from-dispatch': ['-j DROP'],
    'cali-cni-to-dispatch': ['-j DROP'],
}


class FakeNet:
    """The filter table and the ipsets, as strict as the kernel where the plugin could get it wrong: a chain
    in use or not empty cannot be deleted, a rule cannot name a missing chain or set, a set in use cannot
    be destroyed. Restore input is applied to a copy and committed whole, or fails (PolicyError, as run)."""

    def __init__(self, chains=None, sets=None):
        self.chains = {name: [] for name in BUILTINS}
        self.chains.update(copy.deepcopy(chains or {}))
        self.sets = {name: set(members) for name, members in (sets or {}).items()}
        self.calls = []

    @property
    def writes(self):
        return [(argv, data) for argv, data in self.calls if argv[-1] != 'save' and argv[1:] != ['-t', 'filter']]

    def run(self, argv, data=None):
        argv = list(argv)
        self.calls.append((argv, data))
        if argv[0] in ('iptables-nft-save', 'iptables-legacy-save') and argv[1:] == ['-t', 'filter']:
            return self.save()
        if argv[0] in ('iptables-nft-restore', 'iptables-legacy-restore') and argv[1:] == ['--noflush']:
            self.restore(data)
            return ''
        if argv == ['ipset', 'save']:
            return self.ipset_save()
        if argv == ['ipset', 'restore', '-exist']:
            self.ipset_restore(data)
            return ''
        if argv[:2] == ['ipset', 'destroy'] and len(argv) == 3:
            if argv[2] not in self.sets or self._set_in_use(argv[2], self.chains):
                raise cp.PolicyError('ipset destroy %s: in use or missing' % argv[2])
            del self.sets[argv[2]]
            return ''
        raise AssertionError('unexpected command %r' % (argv,))

    # ------------------------------------------------------------------ iptables
    def save(self):
        lines = ['# Generated by iptables-nft-save v1.8.9 (nf_tables)', '*filter']
        lines += [':%s %s [0:0]' % (name, 'ACCEPT' if name in BUILTINS else '-') for name in self.chains]
        lines += ['-A %s %s' % (name, rule) for name, rules in self.chains.items() for rule in rules]
        return '\n'.join(lines + ['COMMIT', '# Completed']) + '\n'

    @staticmethod
    def _target(rule):
        m = re.search(r'-[jg] (\S+)', rule)
        return m.group(1) if m else None

    def _set_in_use(self, name, chains):
        return any('--match-set %s ' % name in rule for rules in chains.values() for rule in rules)

    def restore(self, text):
        lines = text.splitlines()
        if lines[:1] != ['*filter'] or lines[-1:] != ['COMMIT'] or not text.endswith('\n'):
            raise cp.PolicyError('restore: bad framing %r' % text)
        chains = copy.deepcopy(self.chains)
        for line in lines[1:-1]:
            if line.startswith(':'):
                name = line[1:].split()[0]
                if name in BUILTINS:
                    raise cp.PolicyError('restore: builtin %s declared' % name)
                chains[name] = []  # created, or flushed (declaring a chain with --noflush flushes it)
                continue
            op, name, *rest = line.split(None, 2)
            rule = rest[0] if rest else ''
            if name not in chains:
                raise cp.PolicyError('restore: %r: no chain %s' % (line, name))
            if op == '-A':
                target = self._target(rule)
                if target not in TARGETS and target not in chains:
                    raise cp.PolicyError('restore: %r: no chain/target %s' % (line, target))
                for match in re.findall(r'--match-set (\S+) ', rule):
                    if match not in self.sets:
                        raise cp.PolicyError('restore: %r: no set %s' % (line, match))
                chains[name].append(rule)
            elif op == '-F':
                chains[name] = []
            elif op == '-X':
                in_use = any(self._target(r) == name for rs in chains.values() for r in rs)
                if name in BUILTINS or chains[name] or in_use:
                    raise cp.PolicyError('restore: %r: builtin, not empty or in use' % line)
                del chains[name]
            elif op == '-D':
                if rule not in chains[name]:
                    raise cp.PolicyError("restore: %r: no such rule" % line)
                chains[name].remove(rule)
            elif op == '-I':
                pos, rule = rule.split(None, 1)
                chains[name].insert(int(pos) - 1, rule)
            else:
                raise AssertionError('restore: unexpected line %r' % line)
        self.chains = chains

    # ------------------------------------------------------------------ ipset
    def ipset_save(self):
        lines = ['create docker-foreign hash:ip family inet hashsize 1024 maxelem 65536 bucketsize 12',
                 'add docker-foreign 172.17.0.2']  # somebody else's set: never read as ours
        for name in sorted(self.sets):
            lines.append('create %s hash:net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x5e'
                         % name)
            lines += ['add %s %s' % (name, m) for m in sorted(self.sets[name])]
        return '\n'.join(lines) + '\n'

    def ipset_restore(self, text):
        sets = copy.deepcopy(self.sets)
        for line in text.splitlines():
            words = line.split()
            if words[0] == 'create':
                assert words[2:] == ['hash:net', 'family', 'inet'], line
                sets.setdefault(words[1], set())
            elif words[0] in ('add', 'del') and len(words) == 3:
                if words[1] not in sets:
                    raise cp.PolicyError('ipset restore: %r: the set does not exist' % line)
                (sets[words[1]].add if words[0] == 'add' else sets[words[1]].discard)(words[2])
            else:
                raise AssertionError('ipset restore: unexpected line %r' % line)
        self.sets = sets

    # ------------------------------------------------------------------ helpers for tests
    def cni_chains(self):
        return {name: rules for name, rules in self.chains.items() if name.startswith('cali-cni-')}


@pytest.fixture
def net(monkeypatch):
    fake = FakeNet()
    monkeypatch.setattr(cp, 'run', fake.run)
    return fake


def use(monkeypatch, fake):
    monkeypatch.setattr(cp, 'run', fake.run)
    return fake


def chain_names(text):
    """Every chain a restore text names."""
    out = []
    for line in text.splitlines():
        if line.startswith(':'):
            out.append(line[1:].split()[0])
        elif line.startswith('-'):
            out.append(line.split()[1])
    return out


# ------------------------------------------------------------------------------------------ rendering

def test_endpoint_chain_names():
    assert cp.endpoint_chain_names('caliaaaaaaaaaaa') == ('cali-cni-fw-caliaaaaaaaaaaa', 'cali-cni-tw-caliaaaaaaaaaaa')
    assert all(len(n) <= 28 for n in cp.endpoint_chain_names('caliaaaaaaaaaaa'))


def test_endpoint_rules_of_a_selected_and_an_unselected_container():
    assert cp.endpoint_rules({'app': 'web'}, POLICY) == ([DNS_RULE], [WEB_RULE], ['web', 'dns-out'])
    assert cp.endpoint_rules({'role': 'client'}, POLICY) == (None, None, [])
    assert cp.endpoint_rules({}, {}) == (None, None, [])


def test_endpoint_rules_concatenate_in_policy_order_and_default_to_ingress():
    deny = {'action': 'deny', 'protocol': 'icmp', 'peers': None}
    policy = {'policies': [{'name': 'a', 'selector': 'all()', 'ingress': [WEB_RULE]},  # no types: ingress
                           {'name': 'b', 'types': ['ingress', 'egress'], 'ingress': [deny]},  # no selector: all()
                           {'name': 'c', 'selector': "app == 'db'", 'types': ['ingress'], 'ingress': [deny]}]}
    egress, ingress, names = cp.endpoint_rules({'app': 'web'}, policy)
    assert (egress, ingress, names) == ([], [WEB_RULE, deny], ['a', 'b'])


def test_selected_container_gets_conntrack_then_set_rule_then_drop():
    chains = cp.render_endpoint(WEB, POLICY)
    assert chains == {'cali-cni-fw-caliaaaaaaaaaaa': WEB_FW, 'cali-cni-tw-caliaaaaaaaaaaa': WEB_TW}


def test_unselected_container_gets_only_conntrack():
    assert cp.render_endpoint(CLIENT, POLICY) == {'cali-cni-fw-calibbbbbbbbbbb': CONNTRACK,
                                                  'cali-cni-tw-calibbbbbbbbbbb': CONNTRACK}
    assert cp.render_endpoint(dict(CLIENT, labels=None), POLICY)['cali-cni-tw-calibbbbbbbbbbb'] == CONNTRACK


def test_selected_with_no_rules_in_a_direction_is_default_deny():
    policy = {'policies': [{'name': 'iso', 'selector': 'all()', 'types': ['ingress', 'egress']}]}
    chains = cp.render_endpoint(CLIENT, policy)
    assert chains['cali-cni-tw-calibbbbbbbbbbb'] == chains['cali-cni-fw-calibbbbbbbbbbb'] == CONNTRACK + ['-j DROP']


@pytest.mark.parametrize('policy,expect', [
    ({'policies': [{'name': 'x', 'selector': "app = 'web'"}]}, "selector .* is malformed"),
    ({'policies': [{'name': 'x', 'selector': 'all()', 'ingress': [{'action': 'allow', 'ports': [80]}]}]},
     'policy for container web1: ports 80 need protocol'),
    ({'policies': [{'name': 'x', 'selector': 'all()', 'ingress': [{'action': 'allow', 'set': 'bad set'}]}]},
     'ipset name'),
    ({'policies': [{'name': 'x', 'selector': 'all()', 'ingress': [{'peers': ['10.0.0.1/8']}]}]}, 'not an IPv4 CIDR'),
])
def test_bad_policy_is_a_configuration_error(policy, expect):
    with pytest.raises(cp.PolicyError, match=expect) as err:
        cp.render_endpoint(WEB, policy)
    assert err.value.code == 7


def test_selector_cache_is_shared():
    cache = {}
    cp.endpoint_rules({'app': 'web'}, POLICY, cache)
    assert set(cache) == {"app == 'web'", 'has(app)'}
    cache["app == 'web'"] = parse_selector('all()')  # the cached tree is what is matched
    assert cp.endpoint_rules({}, POLICY, cache)[2] == ['web']


def test_render_dispatch_sorted_and_ends_with_drop():
    d = cp.render_dispatch([DNSREC, None, WEB, {'key': 'half_eth0'}, CLIENT])
    assert d == {
        'cali-cni-from-dispatch': ['-i caliaaaaaaaaaaa -g cali-cni-fw-caliaaaaaaaaaaa',
                                   '-i calibbbbbbbbbbb -g cali-cni-fw-calibbbbbbbbbbb',
                                   '-i caliccccccccccc -g cali-cni-fw-caliccccccccccc', '-j DROP'],
        'cali-cni-to-dispatch': ['-o caliaaaaaaaaaaa -g cali-cni-tw-caliaaaaaaaaaaa',
                                 '-o calibbbbbbbbbbb -g cali-cni-tw-calibbbbbbbbbbb',
                                 '-o caliccccccccccc -g cali-cni-tw-caliccccccccccc', '-j DROP']}
    assert cp.render_dispatch([]) == {'cali-cni-from-dispatch': ['-j DROP'], 'cali-cni-to-dispatch': ['-j DROP']}


def test_local_members_by_labels():
    assert cp.local_members(CLIENT, POLICY) == [CLIENTS]
    assert cp.local_members(DNSREC, POLICY) == [DNS]
    assert cp.local_members(WEB, POLICY) == []
    assert cp.local_members(dict(WEB, labels={'role': 'client', 'app': 'dns'}), POLICY) == sorted([CLIENTS, DNS])
    assert cp.local_members(WEB, {}) == []
    assert cp.local_members(WEB, {'sets': {'cali-s-all': {}}}) == ['cali-s-all']  # no selector: all()


def test_desired_sets_add_local_containers_only_where_labels_match():
    want = cp.desired_sets([WEB, CLIENT, DNSREC, None, dict(CLIENT, key='noip', ip=None)], POLICY)
    assert want == {CLIENTS: {'10.0.2.0/26', '192.168.7.9', '10.0.1.65'}, DNS: {'10.0.1.129'}}
    assert cp.desired_sets([], POLICY) == {CLIENTS: {'10.0.2.0/26', '192.168.7.9'}, DNS: set()}
    assert cp.desired_sets([WEB], {}) == {}


def test_plan_sets_creates_adds_deletes_and_lists_stale():
    desired = {'cali-s-a': {'10.0.0.1', '10.0.1.0/26'}, 'cali-s-b': {'10.0.0.3'}, 'cali-s-e': set()}
    current = {'cali-s-a': {'10.0.0.1', '10.0.0.9'}, 'cali-s-old': {'10.0.0.5'}, 'cali-s-e': set()}
    text, stale = cp.plan_sets(desired, current)
    assert text == ('add cali-s-a 10.0.1.0/26\n'
                    'del cali-s-a 10.0.0.9\n'
                    'create cali-s-b hash:net family inet\n'
                    'add cali-s-b 10.0.0.3\n')
    assert stale == ['cali-s-old']
    assert cp.plan_sets(desired, {k: set(v) for k, v in desired.items()}) == ('', [])
    assert cp.plan_sets({'cali-s-n': set()}, {}) == ('create cali-s-n hash:net family inet\n', [])
    assert cp.plan_sets({}, {'cali-s-z': set(), 'cali-s-y': {'1.2.3.4'}}) == ('', ['cali-s-y', 'cali-s-z'])


def test_read_sets_only_ours_and_without_slash_32(monkeypatch):
    save = ('create cali-s-a hash:net family inet hashsize 1024\n'
            'add cali-s-a 10.0.0.1/32\nadd cali-s-a 10.0.1.0/26\n'
            'create cali-s-empty hash:net family inet\n'
            'create other hash:ip family inet\nadd other 1.2.3.4\n\n')
    monkeypatch.setattr(cp, 'run', lambda argv, data=None: save if argv == ['ipset', 'save'] else 1 / 0)
    assert cp.read_sets() == {'cali-s-a': {'10.0.0.1', '10.0.1.0/26'}, 'cali-s-empty': set()}


# ------------------------------------------------------------------------------------------ run

def test_run_passes_stdin_and_returns_stdout():
    assert cp.run([sys.executable, '-c', 'import sys; sys.stdout.write(sys.stdin.read().upper())'],
                  data='add x\n') == 'ADD X\n'
    assert cp.run([sys.executable, '-c', 'import os; print(os.environ["LC_ALL"])']) == 'C\n'


def test_run_failure_and_missing_binary_are_policy_errors(tmp_path):
    with pytest.raises(cp.PolicyError, match=r'failed \(rc=3\): no such set') as err:
        cp.run([sys.executable, '-c', 'import sys; sys.stderr.write("no such set\\n"); sys.exit(3)'])
    assert err.value.code == 5
    with pytest.raises(cp.PolicyError, match='no-such-binary'):
        cp.run([str(tmp_path / 'no-such-binary')])


# ------------------------------------------------------------------------------------------ sync

def test_sync_from_nothing_then_nothing_to_do(net):
    records = [WEB, CLIENT, DNSREC]
    result = cp.sync(records, POLICY)
    assert result['changed'] is True
    assert result['sets'] == sorted([CLIENTS, DNS])
    assert result['chains'] == sorted(['cali-cni-from-dispatch', 'cali-cni-to-dispatch'] +
                                      [n for r in records for n in cp.endpoint_chain_names(r['host_ifname'])])
    # sets before the rules that match on them
    assert [argv for argv, _data in net.writes] == [['ipset', 'restore', '-exist'],
                                                    ['iptables-nft-restore', '--noflush']]
    assert net.sets == {CLIENTS: {'10.0.2.0/26', '192.168.7.9', '10.0.1.65'}, DNS: {'10.0.1.129'}}
    assert net.chains['cali-cni-tw-caliaaaaaaaaaaa'] == WEB_TW
    assert net.chains['cali-cni-fw-caliaaaaaaaaaaa'] == WEB_FW
    assert net.chains['cali-cni-tw-calibbbbbbbbbbb'] == CONNTRACK
    assert net.chains['cali-cni-from-dispatch'][-1] == '-j DROP'

    net.calls.clear()
    again = cp.sync(records, POLICY)
    assert again['changed'] is False
    assert net.writes == []
    assert again['commands'] == {'ipset': '', 'iptables': '', 'destroy': []}
    assert again['diff']['before'] == again['diff']['after']


def test_sync_issues_nothing_when_the_kernel_matches(monkeypatch):
    chains = dict(CONVERGE)
    chains.update({
        'cali-cni-from-dispatch': ['-i caliaaaaaaaaaaa -g cali-cni-fw-caliaaaaaaaaaaa', '-j DROP'],
        'cali-cni-to-dispatch': ['-o caliaaaaaaaaaaa -g cali-cni-tw-caliaaaaaaaaaaa', '-j DROP'],
        'cali-cni-fw-caliaaaaaaaaaaa': WEB_FW, 'cali-cni-tw-caliaaaaaaaaaaa': WEB_TW})
    net = use(monkeypatch, FakeNet(chains, {CLIENTS: {'10.0.2.0/26', '192.168.7.9'}, DNS: set()}))
    result = cp.sync([WEB], POLICY)
    assert result['changed'] is False
    assert net.writes == []
    assert [argv[0] for argv, _data in net.calls] == ['ipset', 'iptables-nft-save']


def test_sync_check_mode_changes_nothing(net):
    result = cp.sync([WEB, CLIENT], POLICY, check_mode=True)
    assert result['changed'] is True
    assert result['commands']['iptables'].startswith('*filter\n') and result['commands']['ipset']
    assert net.writes == []
    assert net.cni_chains() == {} and net.sets == {}


def test_sync_never_touches_the_converges_chains_nor_its_jumps(monkeypatch):
    chains = dict(CONVERGE)
    # a container that is gone (its chain matches on a set that is gone too), and stale dispatch entries
    chains.update({
        'cali-cni-from-dispatch': ['-i calidddddddddd -g cali-cni-fw-calidddddddddd', '-j DROP'],
        'cali-cni-to-dispatch': ['-j DROP'],
        'cali-cni-fw-calidddddddddd': CONNTRACK + ['-m set --match-set cali-s-old dst -j RETURN', '-j DROP']})
    net = use(monkeypatch, FakeNet(chains, {'cali-s-old': {'10.0.0.5'}, CLIENTS: {'10.0.2.0/26'}}))
    foreign_before = {k: list(v) for k, v in net.chains.items() if not k.startswith('cali-cni-')}
    result = cp.sync([WEB, CLIENT], POLICY)
    assert result['changed'] is True
    text = result['commands']['iptables']
    assert chain_names(text) and all(name.startswith('cali-cni-') for name in chain_names(text))
    assert {k: v for k, v in net.chains.items() if not k.startswith('cali-cni-')} == foreign_before
    assert 'cali-cni-fw-calidddddddddd' not in net.chains
    assert set(net.cni_chains()) == {'cali-cni-from-dispatch', 'cali-cni-to-dispatch',
                                     'cali-cni-fw-caliaaaaaaaaaaa', 'cali-cni-tw-caliaaaaaaaaaaa',
                                     'cali-cni-fw-calibbbbbbbbbbb', 'cali-cni-tw-calibbbbbbbbbbb'}
    # the stale set goes last, once no rule uses it; a foreign set is never named
    assert net.writes[-1] == (['ipset', 'destroy', 'cali-s-old'], None)
    assert 'cali-s-old' not in net.sets
    assert not any('docker-foreign' in ' '.join(argv) + (data or '') for argv, data in net.calls[1:])
    assert result['commands']['destroy'] == ['cali-s-old']
    assert 'add %s 192.168.7.9\n' % CLIENTS in result['commands']['ipset']
    net.calls.clear()
    assert cp.sync([WEB, CLIENT], POLICY)['changed'] is False and net.writes == []


def test_sync_only_rewrites_chains_that_differ(monkeypatch, net):
    cp.sync([WEB, CLIENT], POLICY)
    net.chains['cali-cni-tw-calibbbbbbbbbbb'] = CONNTRACK + ['-j ACCEPT']  # tampered with
    result = cp.sync([WEB, CLIENT], POLICY)
    assert result['commands']['iptables'].splitlines() == [
        '*filter', '-F cali-cni-tw-calibbbbbbbbbbb'] + ['-A cali-cni-tw-calibbbbbbbbbbb ' + r for r in CONNTRACK] + [
        'COMMIT']
    assert result['commands']['ipset'] == ''
    assert net.chains['cali-cni-tw-calibbbbbbbbbbb'] == CONNTRACK


def test_sync_skips_corrupt_and_empty_records(net):
    result = cp.sync([WEB, None, {'key': 'bad_eth0', 'corrupt': True}], POLICY)
    assert result['chains'] == ['cali-cni-from-dispatch', 'cali-cni-fw-caliaaaaaaaaaaa',
                                'cali-cni-to-dispatch', 'cali-cni-tw-caliaaaaaaaaaaa']


def test_sync_removes_member_of_a_container_that_is_gone(net):
    cp.sync([WEB, CLIENT], POLICY)
    assert '10.0.1.65' in net.sets[CLIENTS]
    result = cp.sync([WEB], POLICY)
    assert result['commands']['ipset'] == 'del %s 10.0.1.65\n' % CLIENTS
    assert '10.0.1.65' not in net.sets[CLIENTS]
    assert 'cali-cni-tw-calibbbbbbbbbbb' not in net.chains


def test_sync_legacy_backend(monkeypatch, net):
    cp.sync([WEB], dict(POLICY, iptables='legacy'))
    assert {argv[0] for argv, _data in net.calls if argv[0].startswith('iptables')} == {
        'iptables-legacy-save', 'iptables-legacy-restore'}


def test_sync_disabled_keeps_only_the_dispatch_chains_dropping_everything(monkeypatch):
    """The plugin being removed: its containers' chains and sets go, the two dispatch chains stay (dropping)
    while the converge still jumps to them."""
    net = use(monkeypatch, FakeNet(CONVERGE))
    cp.sync([WEB, CLIENT], POLICY)
    foreign_before = {k: list(v) for k, v in net.chains.items() if not k.startswith('cali-cni-')}
    disabled = {'enabled': False, 'policies': POLICY['policies'], 'sets': POLICY['sets']}
    result = cp.sync([WEB, CLIENT], disabled)
    assert result['changed'] is True and result['sets'] == []
    assert result['chains'] == ['cali-cni-from-dispatch', 'cali-cni-to-dispatch']
    assert net.cni_chains() == {'cali-cni-from-dispatch': ['-j DROP'], 'cali-cni-to-dispatch': ['-j DROP']}
    assert net.sets == {}
    assert sorted(result['commands']['destroy']) == sorted([CLIENTS, DNS])
    assert {k: v for k, v in net.chains.items() if not k.startswith('cali-cni-')} == foreign_before
    net.calls.clear()
    assert cp.sync([WEB, CLIENT], disabled)['changed'] is False and net.writes == []


def test_sync_disabled_on_a_clean_host_makes_the_dispatch_chains(net):
    result = cp.sync([], {})
    assert result['changed'] is True
    assert net.cni_chains() == {'cali-cni-from-dispatch': ['-j DROP'], 'cali-cni-to-dispatch': ['-j DROP']}
    assert [argv for argv, _data in net.writes] == [['iptables-nft-restore', '--noflush']]


def test_sync_diff_is_readable(net):
    result = cp.sync([WEB], POLICY)
    assert result['diff']['before'] == '*filter\nCOMMIT\n'
    after = result['diff']['after']
    assert ':cali-cni-tw-caliaaaaaaaaaaa - [0:0]' in after
    assert '%s: 10.0.2.0/26 192.168.7.9\n' % CLIENTS in after
    assert result['diff']['before_header'] != result['diff']['after_header']


# ------------------------------------------------------------------------------------------ ADD / DEL fast path

def test_add_endpoint_commands(net):
    cp.sync([WEB], POLICY)  # the converge made the sets and the dispatch chains; WEB is there already
    net.calls.clear()
    cp.add_endpoint(CLIENT, [WEB, CLIENT], POLICY)
    assert net.calls[0] == (['ipset', 'restore', '-exist'], 'add %s 10.0.1.65\n' % CLIENTS)
    argv, text = net.calls[1]
    assert argv == ['iptables-nft-restore', '--noflush'] and len(net.calls) == 2  # nothing read back
    lines = text.splitlines()
    assert lines[0] == '*filter' and lines[-1] == 'COMMIT'
    assert lines[1:3] == [':cali-cni-fw-calibbbbbbbbbbb - [0:0]', ':cali-cni-tw-calibbbbbbbbbbb - [0:0]']
    # the dispatch entries are inserted (nothing deleted: no RCU wait), never the chains rewritten
    assert lines[-3:-1] == ['-I cali-cni-from-dispatch 1 -i calibbbbbbbbbbb -g cali-cni-fw-calibbbbbbbbbbb',
                            '-I cali-cni-to-dispatch 1 -o calibbbbbbbbbbb -g cali-cni-tw-calibbbbbbbbbbb']
    assert not [line for line in lines if line.startswith((':cali-cni-from', '-F', '-D', '-X'))]
    assert '-A cali-cni-tw-calibbbbbbbbbbb -m conntrack --ctstate INVALID -j DROP' in lines
    assert all(name.startswith('cali-cni-') for name in chain_names(text))


def test_add_endpoint_without_set_membership_skips_ipset(net):
    cp.sync([], POLICY)
    net.calls.clear()
    cp.add_endpoint(WEB, [WEB], POLICY)
    assert [argv[0] for argv, _data in net.calls] == ['iptables-nft-restore']


def test_fast_path_and_sync_agree(net):
    """What ADD and DEL write without reading back is exactly what sync wants: sync has nothing to do after."""
    cp.sync([], POLICY)
    records = []
    for rec in (WEB, CLIENT, DNSREC):
        records.append(rec)
        cp.add_endpoint(rec, list(records), POLICY)
        net.calls.clear()
        assert cp.sync(records, POLICY)['changed'] is False, rec['key']
        assert net.writes == []
    assert net.chains['cali-cni-tw-caliaaaaaaaaaaa'] == WEB_TW
    for rec in (CLIENT, WEB, DNSREC):
        records.remove(rec)
        cp.remove_endpoint(rec, list(records), POLICY)
        net.calls.clear()
        assert cp.sync(records, POLICY)['changed'] is False, rec['key']
    assert net.cni_chains() == {'cali-cni-from-dispatch': ['-j DROP'], 'cali-cni-to-dispatch': ['-j DROP']}
    assert net.sets == {CLIENTS: {'10.0.2.0/26', '192.168.7.9'}, DNS: set()}


def test_fast_path_next_to_the_converge(monkeypatch):
    net = use(monkeypatch, FakeNet(CONVERGE, {CLIENTS: {'10.0.2.0/26'}, DNS: set()}))
    foreign_before = {k: list(v) for k, v in net.chains.items() if not k.startswith('cali-cni-')}
    cp.add_endpoint(WEB, [WEB], POLICY)
    cp.add_endpoint(CLIENT, [WEB, CLIENT], POLICY)
    cp.remove_endpoint(WEB, [CLIENT], POLICY)
    assert {k: v for k, v in net.chains.items() if not k.startswith('cali-cni-')} == foreign_before
    assert set(net.cni_chains()) == {'cali-cni-from-dispatch', 'cali-cni-to-dispatch',
                                     'cali-cni-fw-calibbbbbbbbbbb', 'cali-cni-tw-calibbbbbbbbbbb'}
    for _argv, data in net.writes:
        if data and data.startswith('*filter'):
            assert all(name.startswith('cali-cni-') for name in chain_names(data))


def test_remove_endpoint_of_a_container_whose_chains_are_missing(net):
    cp.sync([], POLICY)
    net.calls.clear()
    cp.remove_endpoint(CLIENT, [], POLICY)  # an ADD that failed before its chains: nothing to complain about
    restores = [text for argv, text in net.calls if argv == ['iptables-nft-restore', '--noflush']]
    assert [t.splitlines()[1].split()[0] for t in restores] == ['-D', ':cali-cni-from-dispatch']  # then rewritten
    assert restores[-1].splitlines()[-3:] == ['-X cali-cni-fw-calibbbbbbbbbbb', '-X cali-cni-tw-calibbbbbbbbbbb',
                                              'COMMIT']
    assert net.calls[-1] == (['ipset', 'restore', '-exist'], 'del %s 10.0.1.65\n' % CLIENTS)
    cp.remove_endpoint(dict(CLIENT, ip=None), [], POLICY)  # no address: no ipset call
    assert net.calls[-1][0][0] == 'iptables-nft-restore'


def test_fast_path_disabled_does_nothing(net):
    cp.add_endpoint(WEB, [WEB], {'enabled': False})
    cp.remove_endpoint(WEB, [], {})
    assert net.calls == []


def test_fast_path_fails_when_the_sets_are_missing(net):
    # the converge (sync) creates the sets; an ADD before it is a clear error, not a half-made rule
    with pytest.raises(cp.PolicyError, match='does not exist'):
        cp.add_endpoint(CLIENT, [CLIENT], POLICY)


# ------------------------------------------------------------------------------------------ selector.canonical

@pytest.mark.parametrize('a,b', [
    ("app == 'web'", 'app=="web"'),
    ("tier in {'web', 'api'}", 'tier in {"api","web"}'),
    ("tier not in {'b', 'a', 'c'}", "tier not in {'c', 'a', 'b'}"),
    ("a == 'x' && b != 'y'", "(a == 'x') && (b != 'y')"),
    ('!has(app)', '! has( app )'),
    ('all()', ' all ( ) '),
    ("a == 'x' || b == 'y' && c == 'z'", "a == 'x' || (b == 'y' && c == 'z')"),
])
def test_canonical_same_meaning_same_text(a, b):
    assert canonical(parse_selector(a)) == canonical(parse_selector(b))


@pytest.mark.parametrize('text,expected', [
    ('all()', 'all()'),
    ('has(app)', 'has(app)'),
    ("app=='web'", "app == 'web'"),
    ("app != 'web'", "app != 'web'"),
    ("tier in {'web','api'}", "tier in {'api', 'web'}"),
    ("tier not in {'db'}", "tier not in {'db'}"),
    ('!has(app)', '!(has(app))'),
    ("a == 'x' && b == 'y'", "(a == 'x' && b == 'y')"),
    ("a == 'x' || b == 'y'", "(a == 'x' || b == 'y')"),
    ("!(a == 'x' && b == 'y')", "!((a == 'x' && b == 'y'))"),
])
def test_canonical_text(text, expected):
    assert canonical(parse_selector(text)) == expected


@pytest.mark.parametrize('text', ['all()', 'has(app)', "app == 'web'", "k8s.io/ns != 'kube-system'",
                                  "tier in {'web', 'api'}", "tier not in {'db', 'cache'}", '!has(app)',
                                  "a == 'x' && (b == 'y' || !(c in {'1', '2'}))", "app == ''",
                                  'app == "it\'s"', "tier in {\"o'k\", 'fine'}"])
def test_canonical_reparses_to_the_same_meaning(text):
    """The plugin parses the canonical text the controller wrote: it must parse, and to the same selector."""
    first = canonical(parse_selector(text))
    again = parse_selector(first)
    assert canonical(again) == first
    for labels in ({}, {'app': 'web'}, {'app': "it's"}, {'tier': 'web'}, {'tier': 'db'}, {'tier': "o'k"},
                   {'a': 'x', 'b': 'y'}, {'a': 'x', 'c': '1'}, {'a': 'x', 'c': '3'},
                   {'k8s.io/ns': 'kube-system'}, {'app': ''}):
        assert match_selector(again, labels) == match_selector(parse_selector(text), labels), labels


def test_canonical_names_distinct_selectors_apart():
    texts = ("app == 'web'", "app != 'web'", "app in {'web'}", 'has(app)', "!(app == 'web')", "app == 'Web'")
    names = {canonical(parse_selector(t)) for t in texts}
    assert len(names) == 6
    with pytest.raises(SelectorError):
        parse_selector("app == 'it's'")  # why a value with a quote needs the other quotes

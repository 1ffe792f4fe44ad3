"""Rendering of the cali-* chains from the endpoints and their policy (plugins/module_utils/chains_render.py)."""

from __future__ import annotations

import pytest

from ansible_collections.netfleet.calico.plugins.module_utils import chains as c
from ansible_collections.netfleet.calico.plugins.module_utils import chains_render as cren
from ansible_collections.netfleet.calico.plugins.module_utils import chains_restore as cr

A1 = {'name': 'a1', 'ip': '172.17.8.2', 'ifname': 'calif29bc91bbda', 'ingress': None, 'egress': None}


A2 = {'name': 'a2', 'ip': '172.17.8.3', 'ifname': 'calib9f85daa6f8', 'ingress': None, 'egress': None}


POOL = '172.17.0.0/16'


def web(**kw):
    ep = dict(A1, floating_ip='10.99.0.10',
              ingress=[{'action': 'allow', 'protocol': 'tcp', 'ports': ['80', '8000:8080'], 'peers': ['172.17.9.2/32']},
                       {'action': 'deny', 'protocol': 'icmp', 'peers': None}])
    ep.update(kw)
    return ep


SET = 'cali-s-0123456789abcdef'


def test_unselected_endpoint_allows_all_selected_one_ends_with_drop():
    d = cren.render([A1, dict(A2, ingress=[], egress=None)], pool=POOL)['filter']['chains']
    conntrack = ['-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT', '-m conntrack --ctstate INVALID -j DROP']
    assert d['cali-tw-calif29bc91bbda'] == conntrack
    assert d['cali-fw-calif29bc91bbda'] == conntrack
    assert d['cali-tw-calib9f85daa6f8'] == conntrack + ['-j DROP']
    assert d['cali-fw-calib9f85daa6f8'] == conntrack


def test_policy_rules_in_iptables_save_spelling():
    d = cren.render([web(egress=[{'action': 'allow', 'protocol': 'udp', 'ports': [53], 'peers': ['10.0.0.0/8']}])],
                    pool=POOL)['filter']['chains']
    assert d['cali-tw-calif29bc91bbda'][2:] == [
        '-s 172.17.9.2/32 -p tcp -m multiport --dports 80,8000:8080 -j ACCEPT',
        '-p icmp -j DROP',
        '-j DROP']
    # an allowed egress packet RETURNs so the receiver's ingress chain still decides
    assert d['cali-fw-calif29bc91bbda'][2:] == ['-d 10.0.0.0/8 -p udp -m udp --dport 53 -j RETURN', '-j DROP']


def test_empty_peer_list_matches_nothing():
    ep = web(ingress=[{'action': 'allow', 'protocol': 'tcp', 'ports': ['80'], 'peers': []}])
    assert cren.render([ep])['filter']['chains']['cali-tw-calif29bc91bbda'][2:] == ['-j DROP']


def test_structure_failsafe_and_endpoint_to_host():
    f = cren.render([A1], failsafe_inbound=['tcp:22', 'udp:68', {'protocol': 'tcp', 'port': 179}],
                    endpoint_to_host_action='accept')['filter']
    assert f['jumps'] == {'INPUT': ['-j cali-INPUT'], 'FORWARD': ['-j cali-FORWARD'], 'OUTPUT': ['-j cali-OUTPUT']}
    ch = f['chains']
    assert ch['cali-INPUT'] == ['-i cali+ -g cali-wl-to-host', '-j cali-failsafe-in']
    assert ch['cali-failsafe-in'] == ['-p tcp -m tcp --dport 22 -j ACCEPT', '-p udp -m udp --dport 68 -j ACCEPT',
                                      '-p tcp -m tcp --dport 179 -j ACCEPT']
    assert ch['cali-wl-to-host'] == ['-j cali-from-wl-dispatch', '-j ACCEPT']
    assert ch['cali-from-wl-dispatch'] == ['-i calif29bc91bbda -g cali-fw-calif29bc91bbda', '-i cali+ -j DROP']
    assert ch['cali-to-wl-dispatch'] == ['-o calif29bc91bbda -g cali-tw-calif29bc91bbda', '-o cali+ -j DROP']
    assert cren.render([A1])['filter']['chains']['cali-wl-to-host'][-1] == '-j DROP'


def test_nat_floating_ip_and_nat_outgoing():
    n = cren.render([web(), A2], pool=POOL, nat_outgoing=True)['nat']
    assert n['jumps'] == {'PREROUTING': ['-j cali-PREROUTING'], 'OUTPUT': ['-j cali-OUTPUT'],
                          'POSTROUTING': ['-j cali-POSTROUTING']}
    ch = n['chains']
    assert ch['cali-PREROUTING'] == ch['cali-OUTPUT'] == ['-j cali-fip-dnat']
    assert ch['cali-POSTROUTING'] == ['-j cali-fip-snat', '-j cali-nat-outgoing']
    assert ch['cali-fip-dnat'] == ['-d 10.99.0.10/32 -j DNAT --to-destination 172.17.8.2']
    assert ch['cali-fip-snat'] == ['-s 172.17.8.2/32 -d 172.17.8.2/32 -j SNAT --to-source 10.99.0.10',
                                   '-s 172.17.8.2/32 ! -d 172.17.0.0/16 -j SNAT --to-source 10.99.0.10']
    assert ch['cali-nat-outgoing'] == ['-s 172.17.0.0/16 ! -d 172.17.0.0/16 -j MASQUERADE']
    assert cren.render([A1], pool=POOL)['nat']['chains']['cali-nat-outgoing'] == []


@pytest.mark.parametrize('endpoints,expect', [
    ([dict(A1, ifname='eth0')], 'does not start with cali'),
    ([dict(A1, ifname='cali;rm -rf /')], 'not an interface name'),
    ([A1, dict(A2, ip='172.17.8.2')], 'ip 172.17.8.2 is also used'),
    ([web(), dict(A2, floating_ip='10.99.0.10')], 'floating_ip 10.99.0.10 is also used'),
    ([web(ingress=[{'action': 'allow', 'protocol': 'icmp', 'ports': ['80']}])], 'need protocol tcp or udp'),
    ([web(ingress=[{'action': 'permit'}])], 'not allow or deny'),
    ([dict(A1, ip='172.17.8.2\n-A INPUT -j ACCEPT')], 'ip .* is not an IPv4 address'),
    ([web(floating_ip='10.99.0.300')], 'floating_ip .* is not an IPv4 address'),
    ([web(ingress=[{'action': 'allow', 'peers': ['10.0.0.1/8']}])], 'peer .* is not an IPv4 CIDR'),
    ([web(ingress=[{'action': 'allow', 'peers': ['10.0.0.0/8 -j ACCEPT']}])], 'peer .* is not an IPv4 CIDR'),
])
def test_bad_endpoints(endpoints, expect):
    with pytest.raises(c.ChainsError, match=expect):
        cren.render(endpoints, pool=POOL)


def test_duplicate_jumps_are_reduced_to_one_and_append_mode():
    current = {'chains': {}, 'jumps': {'INPUT': ['-j cali-INPUT'] * 3}}
    text = cr.restore_text('filter', cren.render([])['filter'], current, insert=False)
    assert text.count('-D INPUT -j cali-INPUT') == 2
    assert '-A FORWARD -j cali-FORWARD' in text


def test_format_view_is_stable():
    view = cren.render([A1])['nat']
    assert cr.format_view(view, 'nat') == cr.format_view(cren.render([A1])['nat'], 'nat')
    assert cr.format_view(view, 'nat').startswith('*nat\n:cali-OUTPUT - [0:0]\n')


def test_only_changed_chains_are_rewritten():
    before = cren.render([A1, A2], pool=POOL)['filter']
    after = cren.render([A1, dict(A2, ingress=[])], pool=POOL)['filter']
    lines = cr.restore_text('filter', after, before).splitlines()
    assert lines == ['*filter', '-F cali-tw-calib9f85daa6f8',
                     '-A cali-tw-calib9f85daa6f8 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
                     '-A cali-tw-calib9f85daa6f8 -m conntrack --ctstate INVALID -j DROP',
                     '-A cali-tw-calib9f85daa6f8 -j DROP', 'COMMIT']


@pytest.mark.parametrize('rule,direction,final,expected', [
    ({'protocol': 'tcp', 'ports': ['80'], 'set': SET}, 'ingress', 'ACCEPT',
     ['-p tcp -m set --match-set %s src -m tcp --dport 80 -j ACCEPT' % SET]),
    ({'protocol': 'udp', 'ports': [53], 'set': SET}, 'egress', 'RETURN',
     ['-p udp -m set --match-set %s dst -m udp --dport 53 -j RETURN' % SET]),
    ({'protocol': 'tcp', 'ports': ['80', '443'], 'set': SET}, 'ingress', 'ACCEPT',
     ['-p tcp -m set --match-set %s src -m multiport --dports 80,443 -j ACCEPT' % SET]),
    ({'protocol': 'icmp', 'set': SET, 'action': 'deny'}, 'ingress', 'ACCEPT',
     ['-p icmp -m set --match-set %s src -j DROP' % SET]),
    ({'set': SET}, 'egress', 'RETURN', ['-m set --match-set %s dst -j RETURN' % SET]),
    ({'set': SET, 'peers': ['10.0.0.0/8', '192.168.1.7'], 'protocol': 'tcp', 'ports': [22]}, 'ingress', 'ACCEPT',
     ['-s 10.0.0.0/8 -p tcp -m set --match-set %s src -m tcp --dport 22 -j ACCEPT' % SET,
      '-s 192.168.1.7/32 -p tcp -m set --match-set %s src -m tcp --dport 22 -j ACCEPT' % SET]),
    ({'set': SET, 'peers': []}, 'ingress', 'ACCEPT', []),
    ({'set': None, 'protocol': 'tcp', 'ports': [80]}, 'ingress', 'ACCEPT', ['-p tcp -m tcp --dport 80 -j ACCEPT']),
    ({'set': '', 'protocol': 'tcp'}, 'egress', 'RETURN', ['-p tcp -j RETURN']),
])
def test_render_rule_set_match_after_protocol_before_ports(rule, direction, final, expected):
    got = cren.render_rule(rule, direction, final)
    assert got == expected
    assert [c.normalize_rule(r) for r in got] == got  # already in iptables-save's spelling


@pytest.mark.parametrize('name', ['bad set', 'x' * 32, 'cali-s-x\n-A INPUT -j ACCEPT', 'a"b', 'a/b'])
def test_render_rule_rejects_bad_set_names(name):
    with pytest.raises(c.ChainsError, match='ipset name'):
        cren.render_rule({'set': name}, 'ingress', 'ACCEPT')


def test_render_rule_accepts_the_longest_set_name():
    longest = 'x' * 31
    assert cren.render_rule({'set': longest}, 'ingress', 'ACCEPT') == ['-m set --match-set %s src -j ACCEPT' % longest]


def test_endpoint_chain_with_set_rule_in_render():
    ep = web(ingress=[{'action': 'allow', 'protocol': 'tcp', 'ports': ['80'], 'peers': None, 'set': SET}])
    assert cren.render([ep])['filter']['chains']['cali-tw-calif29bc91bbda'][2:] == [
        '-p tcp -m set --match-set %s src -m tcp --dport 80 -j ACCEPT' % SET, '-j DROP']


def test_render_cni_dispatch_goes_on_to_the_plugins_chains():
    f = cren.render([A1], cni=True)['filter']['chains']
    assert f['cali-from-wl-dispatch'] == ['-i calif29bc91bbda -g cali-fw-calif29bc91bbda',
                                          '-i cali+ -g cali-cni-from-dispatch']
    assert f['cali-to-wl-dispatch'] == ['-o calif29bc91bbda -g cali-tw-calif29bc91bbda',
                                        '-o cali+ -g cali-cni-to-dispatch']
    assert not any(name.startswith(c.CNI_CHAIN_PREFIX) for name in f)  # the plugin's chains are not ours
    assert not any('DROP' in r for r in f['cali-from-wl-dispatch'] + f['cali-to-wl-dispatch'])
    # everything else is the same as without the plugin
    plain = cren.render([A1])['filter']['chains']
    assert {k: v for k, v in f.items() if 'dispatch' not in k} == \
        {k: v for k, v in plain.items() if 'dispatch' not in k}
    assert plain['cali-from-wl-dispatch'][-1] == '-i cali+ -j DROP'
    assert cren.render([], cni=True, interface_prefix='wl')['filter']['chains']['cali-to-wl-dispatch'] == [
        '-o wl+ -g cali-cni-to-dispatch']
    assert c.CNI_FROM_DISPATCH.startswith(c.CNI_CHAIN_PREFIX) and c.CNI_TO_DISPATCH.startswith(c.CNI_CHAIN_PREFIX)


def test_cni_render_converges_to_nothing_to_do():
    """The kernel holding exactly the cni render, plus the plugin's chains and jumps: nothing to restore."""
    desired = cren.render([A1], cni=True)['filter']
    lines = ['*filter', ':INPUT ACCEPT [0:0]', ':FORWARD ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]']
    lines += [':%s - [0:0]' % name for name in sorted(desired['chains'])]
    lines += [':cali-cni-from-dispatch - [0:0]', ':cali-cni-to-dispatch - [0:0]']
    lines += ['-A %s %s' % (b, r) for b, rules in desired['jumps'].items() for r in rules]
    lines += ['-A FORWARD -j cali-cni-from-dispatch']
    lines += ['-A %s %s' % (n, r) for n, rules in desired['chains'].items() for r in rules]
    lines += ['-A cali-cni-from-dispatch -j DROP', '-A cali-cni-to-dispatch -j DROP', 'COMMIT']
    view = cr.owned_view(cr.parse_save('\n'.join(lines) + '\n', ignore_prefix=c.CNI_CHAIN_PREFIX), 'filter')
    assert cr.restore_text('filter', desired, view) == ''


def test_render_rule_keeps_the_part_of_its_family():
    rule = {'action': 'allow', 'protocol': 'tcp', 'ports': ['80'],
            'peers': ['172.17.9.0/24', '2001:db8:9::/64', '2001:db8:9::2']}
    assert cren.render_rule(rule, 'ingress', 'ACCEPT') == ['-s 172.17.9.0/24 -p tcp -m tcp --dport 80 -j ACCEPT']
    assert cren.render_rule(rule, 'ingress', 'ACCEPT', family=6) == [
        '-s 2001:db8:9::/64 -p tcp -m tcp --dport 80 -j ACCEPT',
        '-s 2001:db8:9::2/128 -p tcp -m tcp --dport 80 -j ACCEPT']
    # only IPv4 peers: the rule matches nothing in IPv6 (as an empty peer list)
    assert cren.render_rule(dict(rule, peers=['172.17.9.0/24']), 'egress', 'RETURN', family=6) == []
    assert cren.render_rule({'protocol': 'icmp'}, 'egress', 'RETURN', family=6) == []
    assert cren.render_rule({'protocol': 'ipv6-icmp'}, 'egress', 'RETURN', family=6) == ['-p 58 -j RETURN']
    assert cren.render_rule({'protocol': 'icmpv6'}, 'egress', 'RETURN') == []
    assert cren.render_rule({'protocol': 'tcp', 'set': 'cali-s-web'}, 'egress', 'RETURN', family=6) == []
    # the CNI plugin's selector ipsets have IPv6 twins: ip6tables matches the twin, iptables the set
    twin = {'protocol': 'tcp', 'set': 'cali-s-web', 'set6': 'cali-s-web-6'}
    assert cren.render_rule(twin, 'egress', 'RETURN', family=6) == [
        '-p tcp -m set --match-set cali-s-web-6 dst -j RETURN']
    assert cren.render_rule(twin, 'egress', 'RETURN') == ['-p tcp -m set --match-set cali-s-web dst -j RETURN']
    with pytest.raises(c.ChainsError, match='ipset name'):
        cren.render_rule(dict(twin, set6='x y'), 'egress', 'RETURN', family=6)
    with pytest.raises(c.ChainsError, match='not an IPv6 CIDR'):
        cren.render_rule({'peers': ['2001:db8:9::1/64']}, 'ingress', 'ACCEPT', family=6)
    # a bad peer of the other family is an error too, not left out
    with pytest.raises(c.ChainsError, match='not an IPv6 CIDR'):
        cren.render_rule({'peers': ['10.0.0.0/8', 'x:y -j ACCEPT']}, 'ingress', 'ACCEPT')
    with pytest.raises(c.ChainsError, match='not an IPv4 CIDR'):
        cren.render_rule({'peers': ['2001:db8::/64', '10.0.0.1/8']}, 'ingress', 'ACCEPT', family=6)


def test_render_ipv6_cni_dispatch_goes_on_to_the_plugins_ip6tables_chains():
    f = cren.render([{'ip6': '2001:db8::1', 'ifname': 'calia'}], cni=True, family=6)['filter']['chains']
    assert f['cali-from-wl-dispatch'] == ['-i calia -g cali-fw-calia', '-i cali+ -g cali-cni-from-dispatch']
    assert f['cali-to-wl-dispatch'] == ['-o calia -g cali-tw-calia', '-o cali+ -g cali-cni-to-dispatch']


def test_render_family6_tables_and_anti_spoofing():
    eps = [{'name': 'a', 'ip': '172.17.8.2', 'ip6': '2001:db8:8::2', 'ifname': 'calia', 'floating_ip': '10.0.0.1'},
           {'name': 'b', 'ip6': '2001:db8:8::3', 'ifname': 'calib', 'ingress': []}]
    want = cren.render(eps, pool='172.17.0.0/16', nat_outgoing=True, family=6, pool6='2001:db8::/48')
    # no IPv6 floating IP: nothing of ours in ip6tables' nat (IPv4's floating_ip and nat_outgoing are IPv4's)
    assert set(want) == {'raw', 'filter', 'nat'} and want['nat'] == {'chains': {}, 'jumps': {}}
    assert want['raw'] == {'chains': {'cali-PREROUTING': ['-i cali+ -m rpfilter --invert -j DROP']},
                           'jumps': {'PREROUTING': ['-j cali-PREROUTING']}}
    assert want['filter']['chains']['cali-wl-to-host'][0] == '-p 58 -m icmp6 --icmpv6-type 130 -j ACCEPT'
    assert want['filter']['chains']['cali-tw-calib'][-1] == '-j DROP'
    four = cren.render(eps, pool='172.17.0.0/16', nat_outgoing=True)
    assert set(four) == {'filter', 'nat'} and four['nat']['chains']['cali-fip-dnat']
    assert not [r for r in four['filter']['chains']['cali-wl-to-host'] if 'icmp6' in r]
    with pytest.raises(c.ChainsError, match='family'):
        cren.render(eps, family=5)


def test_ipv6_floating_ip_nat_mirrors_the_ipv4_one():
    eps = [{'name': 'a', 'ip': '172.17.8.2', 'ip6': '2001:db8:8::2', 'ifname': 'calia', 'floating_ip': '10.99.0.10',
            'floating_ip6': '2001:DB8:99:0::10/128'},
           {'name': 'b', 'ip6': '2001:db8:8::3', 'ifname': 'calib', 'floating_ip6': '2001:db8:99::b'}]
    n = cren.render(eps, pool='172.17.0.0/16', family=6, pool6='2001:db8:8::/48')['nat']
    assert n['jumps'] == {'PREROUTING': ['-j cali-PREROUTING'], 'OUTPUT': ['-j cali-OUTPUT'],
                          'POSTROUTING': ['-j cali-POSTROUTING']}
    ch = n['chains']
    assert ch['cali-PREROUTING'] == ch['cali-OUTPUT'] == ['-j cali-fip-dnat']
    assert ch['cali-POSTROUTING'] == ['-j cali-fip-snat'] and 'cali-nat-outgoing' not in ch
    assert ch['cali-fip-dnat'] == ['-d 2001:db8:99::10/128 -j DNAT --to-destination 2001:db8:8::2',
                                   '-d 2001:db8:99::b/128 -j DNAT --to-destination 2001:db8:8::3']
    assert ch['cali-fip-snat'] == [
        '-s 2001:db8:8::2/128 -d 2001:db8:8::2/128 -j SNAT --to-source 2001:db8:99::10',
        '-s 2001:db8:8::2/128 ! -d 2001:db8:8::/48 -j SNAT --to-source 2001:db8:99::10',
        '-s 2001:db8:8::3/128 -d 2001:db8:8::3/128 -j SNAT --to-source 2001:db8:99::b',
        '-s 2001:db8:8::3/128 ! -d 2001:db8:8::/48 -j SNAT --to-source 2001:db8:99::b']
    # the IPv4 run NATs the IPv4 floating IP only; without a pool every connection leaves from the floating IP
    four = cren.render(eps, pool='172.17.0.0/16')['nat']['chains']
    assert four['cali-fip-dnat'] == ['-d 10.99.0.10/32 -j DNAT --to-destination 172.17.8.2']
    assert cren.render(eps[1:], family=6)['nat']['chains']['cali-fip-snat'][1] == (
        '-s 2001:db8:8::3/128 -j SNAT --to-source 2001:db8:99::b')
    with pytest.raises(c.ChainsError, match="pool6 '172.17.0.0/16' is not an IPv6 CIDR"):
        cren.render(eps, family=6, pool6='172.17.0.0/16')
    with pytest.raises(c.ChainsError, match="pool '2001:db8:8::/48' is not an IPv4 CIDR"):
        cren.render(eps, family=6, pool='2001:db8:8::/48')


@pytest.mark.parametrize('endpoints, expect', [
    ([{'name': 'a', 'ifname': 'calia'}], 'ip is missing'),
    ([{'name': 'a', 'ip': '10.0.0.2', 'ifname': 'calia', 'floating_ip6': '2001:db8::1'}], 'floating_ip6 needs ip6'),
    ([{'name': 'a', 'ip6': '2001:db8::1', 'ifname': 'calia', 'floating_ip6': '10.0.0.1'}],
     "floating_ip6 '10.0.0.1' is not an IPv6 address"),
    ([{'name': 'a', 'ip6': '2001:db8::1', 'ifname': 'calia', 'floating_ip6': '2001:db8:99::1\n-A INPUT -j ACCEPT'}],
     'floating_ip6 .* is not an IPv6 address'),
    ([{'name': 'a', 'ip6': '2001:db8::1', 'ifname': 'calia', 'floating_ip6': '2001:db8:99::1'},
      {'name': 'b', 'ip6': '2001:db8::2', 'ifname': 'calib', 'floating_ip6': '2001:db8:99:0::1'}],
     'floating_ip6 2001:db8:99::1 is also used by endpoint a'),
    ([{'name': 'a', 'ip6': '2001:db8::1', 'ifname': 'calia'},
      {'name': 'b', 'ip6': '2001:db8:0::1', 'ifname': 'calib'}], 'ip6 2001:db8::1 is also used by endpoint a'),
    ([{'name': 'a', 'ip6': '2001:db8::1', 'ifname': 'calia', 'floating_ip': '10.0.0.1'}], 'floating_ip needs ip'),
])
def test_bad_ipv6_endpoints(endpoints, expect):
    with pytest.raises(c.ChainsError, match=expect):
        cren.render(endpoints, family=6)


def test_converge_restores_raw_before_filter():
    desired = cren.render([{'ip6': '2001:db8::1', 'ifname': 'calia'}], family=6)

    class Ipt:
        texts = []

        def restore(self, text, test=False):
            self.texts.append(text.split('\n', 1)[0])

        def save(self):
            return ''

    result = cr.converge(Ipt(), '', desired, check_mode=False)
    assert Ipt.texts == ['*raw', '*filter'] and result['tables'] == ['raw', 'filter']

"""frr.conf of every spine of inventories/lab-spine, rendered by role spine's own template and variables on the
controller (tests/playbooks/render_frr.yml), is accepted by FRR's own parser (`vtysh --dryrun`, what the role runs
before installing it); so is a variant with a BGP password, BFD and GTSM off. A config vtysh refuses proves the
check is real."""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from netfleet_render import render as render_configs

REPO = Path(__file__).resolve().parents[3]
PLAYBOOK = REPO / 'tests/playbooks/render_frr.yml'
PASSWORD = "p@ss'rd$%{}#;!~"  # every kind of character the spine password check lets through, no space
VARIANTS = {
    'lab-spine': {},
    'lab-spine+password+bfd+no-gtsm': {'calico_bgp_password': PASSWORD, 'calico_bgp_bfd': {'interval': 50},
                                       'calico_node_bgp_ttl_security': False},
    # without calico_rack_block_pool: every block of the pool, one by one
    'lab-spine+blocks': {'calico_rack_block_pool': ''},
    # inventories/lab-spine without its IPv6 pool: IPv4 only
    'lab-spine+ipv4-only': {'calico_pool_v6': '', 'calico_block_prefix_v6': '', 'calico_rr_spine_ip_v6': ''},
}


def vtysh():
    found = shutil.which('vtysh') or shutil.which('vtysh', path='/usr/bin:/usr/sbin')
    assert found, 'vtysh (Debian package frr) is needed: scripts/setup installs it'
    return found


def check(conf):
    return subprocess.run([vtysh(), '--dryrun', '-f', str(conf)], capture_output=True, text=True, check=False)


@pytest.fixture(scope='module')
def rendered(tmp_path_factory):
    base = tmp_path_factory.mktemp('frr')

    def render(variant):
        return render_configs(PLAYBOOK, REPO / 'inventories/lab-spine', VARIANTS[variant], base / variant)

    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = dict(zip(VARIANTS, pool.map(render, VARIANTS)))
    out = {}
    for variant, proc in procs.items():
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        out[variant] = {conf.stem: conf for conf in sorted((base / variant).glob('*.conf'))}
    return out


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_every_spine_config_passes_vtysh_dryrun(rendered, variant):
    configs = rendered[variant]
    assert sorted(configs) == ['sp1', 'sp2']
    for name, conf in configs.items():
        result = check(conf)
        assert result.returncode == 0, f'{name}: {result.stdout.strip()} {result.stderr.strip()}'


def test_the_lab_spine_config(rendered):
    text = rendered['lab-spine']['sp1'].read_text()
    lines = text.splitlines()
    assert 'frr defaults datacenter' in lines and 'router bgp 65100' in lines and 'ip forwarding' in lines
    assert ' bgp router-id 10.255.0.1' in lines and ' bgp bestpath as-path multipath-relax' in lines
    assert '  maximum-paths 2' in lines
    for ip, as_number, rack in (('10.255.0.11', 65001, 'rack1'), ('10.255.0.12', 65001, 'rack1'),
                                ('10.255.0.21', 65002, 'rack2'), ('10.255.0.31', 65003, 'rack3'),
                                ('10.255.0.41', 65004, 'rack4')):
        assert f' neighbor {ip} remote-as {as_number}' in lines
        assert f' neighbor {ip} ttl-security hops 1' in lines
        assert f'  neighbor {ip} prefix-list calico-in-{rack} in' in lines
        assert f'  neighbor {ip} prefix-list calico-out out' in lines
    # calico_rack_block_pool 20: a rack announces its /20 only, the spine sends every rack's /20
    shares = ['172.17.0.0/20', '172.17.16.0/20', '172.17.32.0/20', '172.17.48.0/20']
    assert [line for line in lines if line.startswith('ip prefix-list calico-out ')] == [
        f'ip prefix-list calico-out seq {5 * (i + 1)} permit {share}' for i, share in enumerate(shares)] + [
        'ip prefix-list calico-out seq 25 deny 0.0.0.0/0 le 32']
    assert [line for line in lines if line.startswith('ip prefix-list calico-in-rack2 ')] == [
        'ip prefix-list calico-in-rack2 seq 5 permit 172.17.16.0/20',
        'ip prefix-list calico-in-rack2 seq 10 deny 0.0.0.0/0 le 32']
    assert 'password' not in text and 'bfd' not in text


def test_ipv6_over_the_same_sessions(rendered):
    """Dual stack: the same neighbors in `address-family ipv6 unicast`, IPv6 prefix lists of the same names (a
    rack's IPv6 blocks one by one: rack shares are of the IPv4 pool), the spine's own IPv6 address as next hop."""
    text = rendered['lab-spine']['sp2'].read_text()
    lines = text.splitlines()
    assert 'ipv6 forwarding' in lines
    assert [line for line in lines if line.startswith('ipv6 prefix-list calico-out ')] == [
        'ipv6 prefix-list calico-out seq 5 permit fd00:17::/48 ge 122 le 122',
        'ipv6 prefix-list calico-out seq 10 deny ::/0 le 128']
    assert [line for line in lines if line.startswith('ipv6 prefix-list calico-in-rack2 ')] == [
        'ipv6 prefix-list calico-in-rack2 seq 5 permit fd00:17::40/122',
        'ipv6 prefix-list calico-in-rack2 seq 10 deny ::/0 le 128']
    assert 'route-map calico-out6 permit 10' in lines and ' set ipv6 next-hop global fd00:255::2' in lines
    family = text.split(' address-family ipv6 unicast\n', 1)[1].split(' exit-address-family', 1)[0].splitlines()
    for ip, rack in (('10.255.0.11', 'rack1'), ('10.255.0.12', 'rack1'), ('10.255.0.21', 'rack2'),
                     ('10.255.0.31', 'rack3'), ('10.255.0.41', 'rack4')):
        assert [line for line in family if f' {ip} ' in line] == [
            f'  neighbor {ip} activate', f'  neighbor {ip} prefix-list calico-in-{rack} in',
            f'  neighbor {ip} prefix-list calico-out out', f'  neighbor {ip} route-map calico-out6 out']
    assert '  maximum-paths 2' in family
    # an IPv4-only fleet's spine has none of it
    v4 = rendered['lab-spine+ipv4-only']['sp2'].read_text()
    assert 'ipv6' not in v4 and 'route-map' not in v4 and 'next-hop' not in v4

    def ipv4_part(conf):
        return ([line for line in conf.splitlines() if line.startswith('ip prefix-list ')],
                conf.split(' address-family ipv4 unicast\n', 1)[1].split(' exit-address-family', 1)[0])
    assert ipv4_part(v4) == ipv4_part(text)


def test_without_rack_shares_every_block(rendered):
    lines = rendered['lab-spine+blocks']['sp1'].read_text().splitlines()
    assert 'ip prefix-list calico-out seq 5 permit 172.17.0.0/16 ge 24 le 24' in lines
    assert 'ip prefix-list calico-in-rack2 seq 5 permit 172.17.1.0/24' in lines


def test_password_and_bfd(rendered):
    lines = rendered['lab-spine+password+bfd+no-gtsm']['sp2'].read_text().splitlines()
    assert f' neighbor 10.255.0.21 password {PASSWORD}' in lines
    assert ' neighbor 10.255.0.21 bfd profile calico' in lines and '  receive-interval 50' in lines
    assert not any('ttl-security' in line for line in lines)


def test_vtysh_refuses_a_broken_config(rendered, tmp_path):
    conf = rendered['lab-spine']['sp1']
    broken = tmp_path / 'broken.conf'
    broken.write_text(conf.read_text().replace('remote-as', 'remote-az', 1))
    assert check(broken).returncode != 0
    spaced = tmp_path / 'spaced.conf'
    spaced.write_text(conf.read_text().replace('ttl-security hops 1', 'password two words', 1))
    assert check(spaced).returncode != 0  # why the preflight refuses a password with a space

"""netfleet.calico.block_allocate (stand-alone filter)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.netfleet.calico.plugins.filter.block_allocate import FilterModule, block_allocate
from ansible_collections.netfleet.calico.plugins.plugin_utils import inputs

P = 'netfleet.calico.block_allocate: '


def error_of(*args, **kwargs):
    with pytest.raises(AnsibleFilterError) as exc:
        block_allocate(*args, **kwargs)
    assert '\n' not in str(exc.value)
    return str(exc.value)


def test_registered():
    assert FilterModule().filters() == {'block_allocate': block_allocate}


def test_article_blocks_and_order():
    hosts = [{'name': 'host-a', 'block': '172.17.8.0/24'}, {'name': 'host-b', 'current': ['172.17.9.0/24']}, 'host-c']
    result = block_allocate(hosts, '172.17.0.0/16', 24)
    assert result == {'host-a': '172.17.8.0/24', 'host-b': '172.17.9.0/24', 'host-c': '172.17.0.0/24'}
    assert list(result) == ['host-a', 'host-b', 'host-c']


def test_default_block_prefix_is_calicos_26():
    assert block_allocate(['x', 'y'], '10.0.0.0/24') == {'x': '10.0.0.0/26', 'y': '10.0.0.64/26'}


def test_documented_example_adding_a_host_moves_nobody():
    hosts = [{'name': 'host-0'}, {'name': 'host-a', 'current': '172.17.0.0/24'},
             {'name': 'host-b', 'current': '172.17.9.0/24'}]
    assert block_allocate(hosts, pool='172.17.0.0/16', block_prefix=24) == {
        'host-0': '172.17.1.0/24', 'host-a': '172.17.0.0/24', 'host-b': '172.17.9.0/24'}


def test_empty():
    assert block_allocate([], '10.0.0.0/16') == {}
    assert block_allocate(None, '10.0.0.0/16') == {}


@pytest.mark.parametrize('args, expected', [
    ((['a'], 'nope', 24), "input: calico_pool 'nope' is not a valid IPv4 CIDR — set calico_pool to an IPv4 network "
                          "like 172.17.0.0/16"),
    ((['a'], None, 24), 'input: calico_pool is not set — set calico_pool (e.g. 172.17.0.0/16) once for the whole '
                        'fleet in group_vars/all'),
    ((['a'], '10.0.0.0/16', 12), 'input: calico_block_prefix 12 is shorter than calico_pool 10.0.0.0/16 — set '
                                 'calico_block_prefix between 16 and 30'),
    ((['a'], '10.0.0.0/16', 'x'), "input: calico_block_prefix 'x' is not an integer — set calico_block_prefix "
                                  "between 16 and 30"),
    (('a', '10.0.0.0/16', 24), 'input: the host list is not a list — pipe a list of host names or of '
                               '{name, block?, current?}'),
    (([{'block': '10.0.0.0/24'}], '10.0.0.0/16', 24), 'input: host list item 0 has no name — give every item a '
                                                      'name: {name, block?, current?}'),
    (([{'name': 'a', 'block': '10.9.0.0/24'}], '10.0.0.0/16', 24),
     "host 'a': calico_block 10.9.0.0/24 is outside calico_pool 10.0.0.0/16 — pick a block inside the pool or drop "
     "calico_block"),
    (([{'name': 'a', 'block': '10.0.0.0/25'}], '10.0.0.0/16', 24),
     "host 'a': calico_block 10.0.0.0/25 is not a /24 (calico_block_prefix) — pin a /24 inside 10.0.0.0/16 or drop "
     "calico_block"),
    (([{'name': 'a', 'block': '10.0.3.0/24'}, {'name': 'b', 'block': '10.0.3.0/24'}], '10.0.0.0/16', 24),
     "host 'b': calico_block 10.0.3.0/24 overlaps the block of host 'a' — pin a different block or drop "
     "calico_block"),
    ((['a', 'b', 'c', 'd', 'e'], '10.0.0.0/22', 24),
     "host 'e': no free /24 left in calico_pool 10.0.0.0/22 (4 blocks, all in use) — enlarge calico_pool or raise "
     "calico_block_prefix"),
])
def test_errors(args, expected):
    assert error_of(*args) == P + expected


def test_missing_netaddr(monkeypatch):
    monkeypatch.setattr(inputs, 'netaddr', None)
    monkeypatch.setattr(inputs, 'NETADDR_IMPORT_ERROR', ImportError("No module named 'netaddr'"))
    text = error_of(['a'], '10.0.0.0/16')
    assert text.startswith("netfleet.calico.block_allocate requires the Python library netaddr on the Ansible "
                           "controller, but it failed to import (No module named 'netaddr')")
    assert text.endswith('-m pip install netaddr')

"""netfleet.calico.workload_addresses (stand-alone filter)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.netfleet.calico.plugins.filter.workload_addresses import FilterModule, workload_addresses

P = 'netfleet.calico.workload_addresses: '


def error_of(*args, **kwargs):
    with pytest.raises(AnsibleFilterError) as exc:
        workload_addresses(*args, **kwargs)
    assert '\n' not in str(exc.value)
    return str(exc.value)


def test_registered():
    assert FilterModule().filters() == {'workload_addresses': workload_addresses}


def test_article_numbering():
    assert workload_addresses([{'name': 'a1'}, {'name': 'a2'}], '172.17.8.0/24') == [
        {'name': 'a1', 'ip': '172.17.8.2'}, {'name': 'a2', 'ip': '172.17.8.3'}]


def test_documented_example():
    out = workload_addresses([{'name': 'a1'}, {'name': 'a2', 'ip': '172.17.8.9'}, {'name': 'a3'}], '172.17.8.0/24',
                             current={'a1': '172.17.8.7'}, host='host-a')
    assert out == [{'name': 'a1', 'ip': '172.17.8.7'}, {'name': 'a2', 'ip': '172.17.8.9'},
                   {'name': 'a3', 'ip': '172.17.8.2'}]


def test_current_outside_block_or_taken_is_reassigned():
    out = workload_addresses([{'name': 'a'}, {'name': 'b'}, {'name': 'c'}], '10.0.0.0/28',
                             current=[{'name': 'a', 'ip': '10.0.1.2'}, {'name': 'b', 'ip': '10.0.0.5'},
                                      {'name': 'c', 'ip': '10.0.0.5'}])
    assert out == [{'name': 'a', 'ip': '10.0.0.2'}, {'name': 'b', 'ip': '10.0.0.5'}, {'name': 'c', 'ip': '10.0.0.3'}]


def test_input_not_mutated():
    workloads = [{'name': 'a'}]
    workload_addresses(workloads, '10.0.0.0/24')
    assert workloads == [{'name': 'a'}]


@pytest.mark.parametrize('args, kwargs, expected', [
    (([{'name': 'a'}], None), {}, "input: no block given — pass the host's block, e.g. workload_addresses(block)"),
    (([{'name': 'a'}], '10.0.0.1/24'), {}, 'input: block 10.0.0.1/24 has host bits set — use 10.0.0.0/24'),
    (([{'name': 'a'}], 'x'), {'host': 'h1'}, "host 'h1': block 'x' is not a valid IPv4 CIDR — pass the host block as "
                                             "a CIDR such as 172.17.8.0/24"),
    (([{'name': 'a'}], '10.0.0.0/31'), {}, 'input: block 10.0.0.0/31 has no room for workloads — use a block of /30 '
                                           'or bigger'),
    (([{'name': 'a', 'ip': '10.0.1.1'}], '10.0.0.0/24'), {'host': 'h1'},
     "host 'h1': workload 'a' ip 10.0.1.1 is outside the host's block 10.0.0.0/24 — pick an address inside "
     "10.0.0.0/24 or drop ip"),
    (([{'name': 'a', 'ip': '10.0.0.0'}], '10.0.0.0/24'), {},
     "input: workload 'a' ip 10.0.0.0 is the network address of block 10.0.0.0/24 — pick an address in "
     "10.0.0.1-10.0.0.254 or drop ip"),
    (([{'name': 'a'}, {'name': 'a'}], '10.0.0.0/24'), {},
     "input: workload name 'a' appears twice in calico_workloads — give each workload of a host its own name"),
    (([{'name': 'a'}, {'name': 'b'}], '10.0.0.0/30'), {'host': 'h1'},
     "host 'h1': block 10.0.0.0/30 is full, no address left for workload 'b' — run fewer workloads on this host or "
     "use bigger blocks (lower calico_block_prefix)"),
])
def test_errors(args, kwargs, expected):
    assert error_of(*args, **kwargs) == P + expected

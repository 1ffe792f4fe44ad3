"""netfleet.calico.ifname."""

from __future__ import annotations

import hashlib

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.netfleet.calico.plugins.filter.ifname import FilterModule, ifname
from ansible_collections.netfleet.calico.plugins.plugin_utils import inputs


def test_registered():
    assert FilterModule().filters() == {'ifname': ifname}


@pytest.mark.parametrize('wid', ['a1', 'b2', 'default.nginx-7d9', 'x' * 300, 42])
def test_calico_rule(wid):
    name = ifname(wid)
    assert name == 'cali' + hashlib.sha1(str(wid).encode()).hexdigest()[:11]
    assert len(name) == 15


def test_documented_examples():
    assert ifname('a1') == 'calif29bc91bbda'
    assert ifname('a1', 'tap') == 'tapf29bc91bbda'


def test_prefix_too_long():
    with pytest.raises(AnsibleFilterError) as exc:
        ifname('a1', 'veth0')
    assert str(exc.value) == ("netfleet.calico.ifname: input: interface prefix 'veth0' makes 'veth0f29bc91bbda' "
                              "longer than 15 characters — use a prefix of at most 4 characters")


def test_empty_prefix():
    with pytest.raises(AnsibleFilterError) as exc:
        ifname('a1', '')
    assert str(exc.value) == ("netfleet.calico.ifname: input: interface prefix '' is not a non-empty string — use "
                              "the default prefix 'cali'")


def test_works_without_netaddr(monkeypatch):
    monkeypatch.setattr(inputs, 'netaddr', None)
    assert ifname('a1') == 'calif29bc91bbda'

from __future__ import annotations

import pytest

from ansible_collections.netfleet.calico.plugins.module_utils import tunnel

SAVE = """*filter
:INPUT ACCEPT [0:0]
:cali-INPUT-ipip - [0:0]
-A INPUT -p {proto} -j cali-INPUT-ipip
-A cali-INPUT-ipip -s 192.168.100.102/32 -j RETURN
-A cali-INPUT-ipip -j DROP
COMMIT
"""


@pytest.mark.parametrize('proto', ['4', 'ipencap', 'ipip'])
def test_protocol_4_in_any_spelling_is_the_wanted_jump(proto):
    """iptables-save prints protocol 4 as `4` or `ipencap` depending on the system (the IPIP VM's kernel said
    ipencap): either way the chain is as wanted and nothing is rewritten."""
    save = SAVE.format(proto=proto)
    assert tunnel.plan_chain(save, 'cali-INPUT-ipip', True, ['192.168.100.102']) is None
    assert tunnel.parse_save(save, 'cali-INPUT-ipip')[2] == ['-A INPUT -p 4 -j cali-INPUT-ipip']
    removal = tunnel.plan_chain(save, 'cali-INPUT-ipip', False)
    assert '-D INPUT -p 4 -j cali-INPUT-ipip\n' in removal and '-X cali-INPUT-ipip\n' in removal


def test_other_sources_are_rewritten():
    save = SAVE.format(proto='ipencap')
    restore = tunnel.plan_chain(save, 'cali-INPUT-ipip', True, ['192.168.100.103'])
    assert '-A cali-INPUT-ipip -s 192.168.100.103/32 -j RETURN\n' in restore
    assert '-I INPUT 1' not in restore and '-D INPUT' not in restore  # the jump itself is already right

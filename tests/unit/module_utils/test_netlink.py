"""The rtnetlink requests of plugins/module_utils/netlink.py, decoded back (no kernel here: the lab's
scenarios run them against real namespaces)."""

from __future__ import annotations

import socket
import struct

from ansible_collections.netfleet.calico.plugins.module_utils import netlink as nl


def test_attributes_are_padded_to_four_bytes():
    assert nl.attr(1, b'abc') == struct.pack('=HH', 7, 1) + b'abc\0'
    assert nl.attr_str(3, 'eth0') == struct.pack('=HH', 9, 3) + b'eth0\0' + b'\0' * 3
    assert nl.parse_attrs(nl.attr_u32(4, 1480) + nl.attr_str(3, 'x')) == {4: struct.pack('=I', 1480), 3: b'x\0'}


def test_veth_request_carries_the_peer_and_its_namespace():
    body = nl.veth_request('cali0123456789a', 'eth0', 7, mtu=1480, mac='ee:ee:ee:ee:ee:ee',
                           peer_mac='0e:01:02:03:04:05')
    attrs = nl.parse_attrs(body[16:])
    assert attrs[nl.IFLA_IFNAME] == b'cali0123456789a\0' and attrs[nl.IFLA_ADDRESS] == b'\xee' * 6
    assert struct.unpack('=I', attrs[nl.IFLA_MTU]) == (1480,)
    info = nl.parse_attrs(attrs[nl.IFLA_LINKINFO])
    assert info[nl.IFLA_INFO_KIND] == b'veth'
    peer = nl.parse_attrs(nl.parse_attrs(info[nl.IFLA_INFO_DATA])[nl.VETH_INFO_PEER][16:])
    assert peer[nl.IFLA_IFNAME] == b'eth0\0' and struct.unpack('=I', peer[nl.IFLA_NET_NS_FD]) == (7,)
    assert peer[nl.IFLA_ADDRESS] == bytes([0x0e, 1, 2, 3, 4, 5])


def test_route_and_address_requests():
    body = nl.route_request('0.0.0.0', 0, 5, gateway='169.254.1.1')
    family, dst_len, _s, _t, table, protocol, scope, kind, _f = struct.unpack_from('=BBBBBBBBI', body)
    assert (family, dst_len, table, protocol, scope, kind) == (socket.AF_INET, 0, 254, nl.RTPROT_BOOT, 0, 1)
    attrs = nl.parse_attrs(body[12:])
    assert nl.RTA_DST not in attrs and attrs[nl.RTA_GATEWAY] == socket.inet_aton('169.254.1.1')
    assert struct.unpack('=I', attrs[nl.RTA_OIF]) == (5,)
    host = nl.route_request('172.17.8.2', 32, 9, scope=nl.RT_SCOPE_LINK, protocol=80)
    assert struct.unpack_from('=BBBBBBBBI', host)[5:7] == (80, nl.RT_SCOPE_LINK)
    assert nl.parse_attrs(host[12:])[nl.RTA_DST] == socket.inet_aton('172.17.8.2')
    addr = nl.addr_request(3, '172.17.8.2', 32)
    assert struct.unpack_from('=BBBBI', addr) == (socket.AF_INET, 32, 0, 0, 3)
    assert nl.parse_attrs(addr[8:])[nl.IFA_LOCAL] == socket.inet_aton('172.17.8.2')


def test_ipv6_route_and_address_requests():
    default = nl.route_request('::', 0, 5, gateway='fe80::ecee:eeff:feee:eeee')
    assert struct.unpack_from('=BBBBBBBBI', default)[:2] == (socket.AF_INET6, 0)
    attrs = nl.parse_attrs(default[12:])
    assert nl.RTA_DST not in attrs
    assert attrs[nl.RTA_GATEWAY] == socket.inet_pton(socket.AF_INET6, 'fe80::ecee:eeff:feee:eeee')
    host = nl.route_request('2001:db8::5', 128, 9, protocol=80)
    assert struct.unpack_from('=BBBBBBBBI', host)[:2] == (socket.AF_INET6, 128)
    assert nl.parse_attrs(host[12:])[nl.RTA_DST] == socket.inet_pton(socket.AF_INET6, '2001:db8::5')
    addr = nl.addr_request(3, '2001:db8::5', 128, nodad=True)
    assert struct.unpack_from('=BBBBI', addr) == (socket.AF_INET6, 128, nl.IFA_F_NODAD, 0, 3)
    assert nl.parse_attrs(addr[8:])[nl.IFA_LOCAL] == socket.inet_pton(socket.AF_INET6, '2001:db8::5')


def test_link_set_changes_only_what_is_asked():
    up = nl.link_set_request(4, up=True, alias='netfleet:cni:x_eth0')
    assert struct.unpack_from('=BxHiII', up)[2:] == (4, nl.IFF_UP, nl.IFF_UP)
    assert nl.parse_attrs(up[16:])[nl.IFLA_IFALIAS] == b'netfleet:cni:x_eth0'  # no NUL in the alias
    group = nl.link_set_request(4, group=1234)
    assert struct.unpack_from('=BxHiII', group)[3:] == (0, 0) and nl.IFLA_IFALIAS not in nl.parse_attrs(group[16:])


def test_messages_parse_back():
    data = nl.message(nl.RTM_NEWLINK, 5, 1, b'abcd') + nl.message(nl.NLMSG_ERROR, 0, 1, struct.pack('=i', -17))
    assert nl.parse_messages(data) == [(nl.RTM_NEWLINK, 5, 1, b'abcd'), (nl.NLMSG_ERROR, 0, 1, struct.pack('=i', -17))]

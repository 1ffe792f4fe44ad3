# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A small rtnetlink client (standard library only) for the CNI plugin's endpoints.

It speaks just the requests an endpoint needs (a veth pair whose peer is created straight inside the
container's namespace, links up with an alias, addresses, routes, link deletion and look-up) over one
``NETLINK_ROUTE`` socket per namespace: no ``ip`` process per step, which is what lets the agent serve a
runtime that starts many containers at once. Every request asks for an acknowledgement; the first
error is raised as :class:`NetlinkError` (an ``OSError`` carrying the kernel's errno and the request).

A socket belongs to the namespace its creator was in: :func:`open_in` enters a namespace in the calling
thread (``setns(2)`` is per thread), opens the socket and comes back.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import os
import socket
import struct
import threading

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_NEWROUTE = 20, 24
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
IFF_UP = 0x1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_GROUP, IFLA_NET_NS_FD = 1, 3, 4, 18, 20, 27, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFA_F_NODAD = 0x02
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
RT_TABLE_MAIN, RTN_UNICAST = 254, 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
RTPROT_BOOT = 3
CLONE_NEWNET = 0x40000000
NLA_F_NESTED = 0x8000

_HDR = struct.Struct('=IHHII')          # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct('=BxHiII')      # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct('=BBBBI')       # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct('=BBBBBBBBI')    # rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
_ATTR = struct.Struct('=HH')


class NetlinkError(OSError):
    """The kernel refused a request: ``errno`` is its error, ``what`` says which request."""

    def __init__(self, err, what):
        super().__init__(err, '%s: %s' % (what, os.strerror(err)))
        self.what = what


# ---------------------------------------------------------------------------------------------
# encoding (pure: unit-tested without a kernel)
# ---------------------------------------------------------------------------------------------

def attr(kind, payload):
    """One netlink attribute, padded to 4 bytes."""
    length = _ATTR.size + len(payload)
    return _ATTR.pack(length, kind) + payload + b'\0' * (-length % 4)


def attr_str(kind, text, nul=True):
    return attr(kind, text.encode('ascii') + (b'\0' if nul else b''))


def attr_u32(kind, value):
    return attr(kind, struct.pack('=I', value))


def nested(kind, *parts):
    return attr(kind | NLA_F_NESTED, b''.join(parts))


def mac_bytes(mac):
    return bytes(int(part, 16) for part in mac.split(':'))


def ip4(text):
    return socket.inet_aton(text)


def family_of(text):
    """(address family, packed address) of an IPv4 or IPv6 address."""
    if ':' in text:
        return socket.AF_INET6, socket.inet_pton(socket.AF_INET6, text)
    return socket.AF_INET, ip4(text)


def message(kind, flags, seq, body):
    return _HDR.pack(_HDR.size + len(body), kind, flags, seq, 0) + body


def ifinfo(index=0, flags=0, change=0):
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


def veth_request(name, peer, peer_netns_fd, mtu=None, mac=None, peer_mac=None):
    """RTM_NEWLINK body: veth ``name`` here, its peer ``peer`` created inside the namespace ``peer_netns_fd``."""
    peer_attrs = attr_str(IFLA_IFNAME, peer) + attr_u32(IFLA_NET_NS_FD, peer_netns_fd)
    own = attr_str(IFLA_IFNAME, name)
    if mtu:
        peer_attrs += attr_u32(IFLA_MTU, int(mtu))
        own += attr_u32(IFLA_MTU, int(mtu))
    if peer_mac:
        peer_attrs += attr(IFLA_ADDRESS, mac_bytes(peer_mac))
    if mac:
        own += attr(IFLA_ADDRESS, mac_bytes(mac))
    info = nested(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, 'veth', nul=False),
                  nested(IFLA_INFO_DATA, attr(VETH_INFO_PEER, ifinfo() + peer_attrs)))
    return ifinfo() + own + info


def link_set_request(index, up=None, alias=None, group=None):
    flags = IFF_UP if up else 0
    body = ifinfo(index, flags, IFF_UP if up is not None else 0)
    if alias is not None:
        body += attr_str(IFLA_IFALIAS, alias, nul=False)
    if group is not None:
        body += attr_u32(IFLA_GROUP, group)
    return body


def addr_request(index, address, prefixlen, nodad=False):
    """RTM_NEWADDR body (IPv4 or IPv6, by ``address``); ``nodad``: an IPv6 address usable at once."""
    family, raw = family_of(address)
    return _IFADDR.pack(family, prefixlen, IFA_F_NODAD if nodad else 0, RT_SCOPE_UNIVERSE, index) + \
        attr(IFA_LOCAL, raw) + attr(IFA_ADDRESS, raw)


def route_request(dst, prefixlen, index, gateway=None, scope=RT_SCOPE_UNIVERSE, protocol=RTPROT_BOOT):
    """RTM_NEWROUTE body of a route in the main table (IPv4 or IPv6, by ``dst``)."""
    family, raw = family_of(dst)
    body = _RTMSG.pack(family, prefixlen, 0, 0, RT_TABLE_MAIN, protocol, scope, RTN_UNICAST, 0)
    if prefixlen:
        body += attr(RTA_DST, raw)
    if gateway:
        body += attr(RTA_GATEWAY, family_of(gateway)[1])
    return body + attr_u32(RTA_OIF, index)


def parse_messages(data):
    """[(type, flags, seq, payload)] of a datagram holding one or more netlink messages."""
    out, offset = [], 0
    while offset + _HDR.size <= len(data):
        length, kind, flags, seq, _pid = _HDR.unpack_from(data, offset)
        if length < _HDR.size:
            break
        out.append((kind, flags, seq, data[offset + _HDR.size:offset + length]))
        offset += (length + 3) & ~3
    return out


def parse_attrs(payload):
    """{type: raw value} of a run of attributes (the last one of a type wins)."""
    out, offset = {}, 0
    while offset + _ATTR.size <= len(payload):
        length, kind = _ATTR.unpack_from(payload, offset)
        if length < _ATTR.size:
            break
        out[kind & ~NLA_F_NESTED] = payload[offset + _ATTR.size:offset + length]
        offset += (length + 3) & ~3
    return out


# ---------------------------------------------------------------------------------------------
# namespaces
# ---------------------------------------------------------------------------------------------

_libc = None
_libc_lock = threading.Lock()


def setns(fd, nstype=CLONE_NEWNET):
    """Move the calling thread into the namespace ``fd`` refers to."""
    if hasattr(os, 'setns'):  # Python 3.12+
        os.setns(fd, nstype)
        return
    global _libc
    with _libc_lock:
        if _libc is None:
            # the C library already loaded into this process (no ldconfig run, as find_library would do)
            _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, 'setns: %s' % os.strerror(err))


def open_in(netns_fd):
    """A :class:`Netlink` socket living in the namespace ``netns_fd`` (this thread comes back home)."""
    home = os.open('/proc/thread-self/ns/net', os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(netns_fd)
        try:
            return Netlink()
        finally:
            setns(home)
    finally:
        os.close(home)


# ---------------------------------------------------------------------------------------------
# the socket
# ---------------------------------------------------------------------------------------------

class Netlink:
    """One rtnetlink socket; requests are acknowledged one by one, in order."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        self.close()

    def request(self, kind, flags, body, what):
        """Send one request with NLM_F_ACK; return the payloads of its reply messages (before the ACK)."""
        self.seq += 1
        seq = self.seq
        self.sock.send(message(kind, NLM_F_REQUEST | NLM_F_ACK | flags, seq, body))
        replies = []
        while True:
            data = self.sock.recv(65536)
            for mkind, _mflags, mseq, payload in parse_messages(data):
                if mseq != seq:
                    continue  # a late answer to an earlier request: not ours
                if mkind == NLMSG_ERROR:
                    err = -struct.unpack_from('=i', payload)[0]
                    if err:
                        raise NetlinkError(err, what)
                    return replies
                if mkind == NLMSG_DONE:
                    return replies
                replies.append((mkind, payload))

    # ------------------------------------------------------------------ links
    def add_veth(self, name, peer, peer_netns_fd, mtu=None, mac=None, peer_mac=None):
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                     veth_request(name, peer, peer_netns_fd, mtu, mac, peer_mac),
                     'create veth %s (peer %s)' % (name, peer))

    def link_index(self, name):
        """The index of link ``name``, or None when there is none."""
        try:
            replies = self.request(RTM_GETLINK, 0, ifinfo() + attr_str(IFLA_IFNAME, name), 'look up %s' % name)
        except NetlinkError as exc:
            if exc.errno == errno_mod.ENODEV:
                return None
            raise
        for kind, payload in replies:
            if kind == RTM_NEWLINK:
                return _IFINFO.unpack_from(payload)[2]
        return None

    def link_set(self, index, name, up=None, alias=None, group=None):
        self.request(RTM_NEWLINK, 0, link_set_request(index, up, alias, group), 'set link %s' % name)

    def link_del(self, name):
        """Delete link ``name``; False when there was none."""
        try:
            self.request(RTM_DELLINK, 0, ifinfo() + attr_str(IFLA_IFNAME, name), 'delete %s' % name)
        except NetlinkError as exc:
            if exc.errno == errno_mod.ENODEV:
                return False
            raise
        return True

    def group_del(self, group):
        """Delete every link of ``group`` in one request (one RCU wait for all of them)."""
        try:
            self.request(RTM_DELLINK, 0, ifinfo() + attr_u32(IFLA_GROUP, group), 'delete link group %d' % group)
        except NetlinkError as exc:
            if exc.errno == errno_mod.ENODEV:
                return
            raise

    # ------------------------------------------------------------------ addresses and routes
    def addr_add(self, index, address, prefixlen, name='', nodad=False):
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, addr_request(index, address, prefixlen, nodad),
                     'add %s/%d to %s' % (address, prefixlen, name or index))

    def route_replace(self, dst, prefixlen, index, gateway=None, scope=RT_SCOPE_UNIVERSE, protocol=RTPROT_BOOT,
                      name=''):
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE,
                     route_request(dst, prefixlen, index, gateway, scope, protocol),
                     'route %s/%d%s dev %s' % (dst, prefixlen, ' via ' + gateway if gateway else '', name or index))

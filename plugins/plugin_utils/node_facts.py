# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What action calico_node_facts reads on a host, and the facts it makes of it.

The host is read by one POSIX shell command (:func:`script`): one ``ip -j -batch -`` for all kernel state,
the BIRD and iptables versions, the ``iptables-save`` of both backends (IPv4 and IPv6), BIRD's sessions and
the CNI store's record count, each output between marker lines carrying a per-run random token. The
controller parses it (:func:`parse`). No Python starts on the host: a module run would spend most of its
CPU compiling Ansible's module support from source before reading anything.

Every value that reaches the script is shell-quoted; the role passes only validated settings.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import shlex

from ansible_collections.netfleet.calico.plugins.module_utils import iproute, iproute_routes
from ansible_collections.netfleet.calico.plugins.module_utils.bird import sessions_from_reply

# the tools live in sbin, which a login's PATH may lack (AnsibleModule.get_bin_path looks there too)
SBIN_PATH = ':/usr/local/sbin:/usr/sbin:/sbin'


class NodeFactsError(Exception):
    """The host's answer cannot be read (a missing ``ip``, an ``ip`` without JSON output)."""


def ip_queries(protocol):
    """The read-only ``ip -j -batch`` commands, in the order :func:`kernel_facts` takes their documents."""
    return [
        'route show table main proto %d' % protocol,
        # "table main" lists IPv4 only; "table all" prints a table for every route outside main
        'route show table all root ::/0 proto %d' % protocol,
        'addr show',
        'route show table main exact 0.0.0.0/0',
        'link show type veth',
        'link show type ipip',
    ]


_TOOL = '''\
run() { n=$1; shift
  if command -v "$1" >/dev/null 2>&1; then
    printf '%s begin %s\\n' "$m" "$n"; "$@" 2>&1; r=$?; printf '\\n%s end %s %s\\n' "$m" "$n" "$r"
  else printf '%s missing %s\\n' "$m" "$n"; fi; }
'''

_SCRIPT = '''\
LC_ALL=C; export LC_ALL; PATH="$PATH{sbin}"; export PATH
m={marker}
{tool}\
if command -v ip >/dev/null 2>&1; then
  printf '%s begin ip\\n' "$m"
  {{ e=$(printf '{queries}' | ip -j -batch - 2>&1 >&3); r=$?; }} 3>&1
  printf '\\n%s end ip %s\\n%s begin ip-stderr\\n%s\\n%s end ip-stderr 0\\n' "$m" "$r" "$m" "$e" "$m"
else printf '%s missing ip\\n' "$m"; fi
run bird {bird} --version
run iptables iptables --version
run iptables-nft-save iptables-nft-save
run iptables-legacy-save iptables-legacy-save
command -v iptables-nft-save >/dev/null 2>&1 || command -v iptables-legacy-save >/dev/null 2>&1 \\
  || run iptables-save iptables-save
run ip6tables-nft-save ip6tables-nft-save
run ip6tables-legacy-save ip6tables-legacy-save
command -v ip6tables-nft-save >/dev/null 2>&1 || command -v ip6tables-legacy-save >/dev/null 2>&1 \\
  || run ip6tables-save ip6tables-save
'''

_BIRDC = '''\
if [ -e {socket} ]; then run birdc {birdc} -s {socket} show protocols all; else printf '%s nosocket birdc\\n' "$m"; fi
'''

_CNI = '''\
n=0; for f in {store}/*.json; do [ -e "$f" ] && n=$((n + 1)); done; printf '%s count cni %s\\n' "$m" "$n"
'''


def script(protocol, bird_binary='bird', birdc_binary='birdc', bird_socket=None, cni_data_dir=None, marker=None):
    """``(marker, command)``: the shell command that reads the host, and the marker its output sections carry."""
    marker = marker or '@@calico_node_facts-%s' % secrets.token_hex(8)
    text = _SCRIPT.format(marker=shlex.quote(marker), tool=_TOOL, sbin=SBIN_PATH, bird=shlex.quote(bird_binary),
                          queries=''.join(q + '\\n' for q in ip_queries(protocol)))
    if bird_socket:
        text += _BIRDC.format(socket=shlex.quote(bird_socket), birdc=shlex.quote(birdc_binary))
    if cni_data_dir:
        text += _CNI.format(store=shlex.quote(cni_data_dir.rstrip('/') + '/endpoints'))
    return marker, text


def sections(marker, text):
    """``{name: (rc, output) or None}`` from the command's output: None for a tool that is not installed,
    an int for a count, and ``'nosocket'`` for BIRD's socket missing."""
    found, name, lines = {}, None, []
    lead = marker + ' '
    # a connection with a terminal (ssh -tt, as for sudo) ends every line with CR LF
    for line in text.replace('\r\n', '\n').split('\n'):
        if not line.startswith(lead):
            if name is not None:
                lines.append(line)
            continue
        word = line[len(lead):].split(' ')
        if word[0] == 'begin' and len(word) == 2:
            name, lines = word[1], []
        elif word[0] == 'end' and len(word) == 3 and word[1] == name:
            # the lines between the markers, joined, are the output exactly (the newline printed before the
            # end marker ends the last of them)
            found[name] = (int(word[2]) if word[2].lstrip('-').isdigit() else -1, '\n'.join(lines))
            name = None
        elif word[0] == 'missing' and len(word) == 2:
            found[word[1]] = None
        elif word[0] == 'nosocket' and len(word) == 2:
            found[word[1]] = 'nosocket'
        elif word[0] == 'count' and len(word) == 3 and word[2].isdigit():
            found[word[1]] = int(word[2])
    return found


def kernel_facts(docs, prefix):
    """Blocks, workloads, endpoints, addresses, default route and IPIP devices from the documents of
    :func:`ip_queries`."""
    routes, routes6, addrs, defaults, links, tunnels = docs
    owned = [iproute_routes.route_from_kernel(entry, 4) for entry in routes]
    owned6 = [iproute_routes.route_from_kernel(entry, 6) for entry in routes6 if 'table' not in entry]
    blocks = sorted({r.dst for r in owned if r.type == 'blackhole'}, key=ipaddress.ip_network)
    blocks6 = sorted({r.dst for r in owned6 if r.type == 'blackhole'}, key=ipaddress.ip_network)
    host_routes, host_routes6 = {}, {}
    for route in owned + owned6:
        if route.type == 'unicast' and route.dev and not route.via:
            if route.dst.endswith('/32'):
                host_routes.setdefault(route.dev, route.dst[:-3])
            elif route.dst.endswith('/128'):
                host_routes6.setdefault(route.dev, route.dst[:-4])
    endpoints, workloads, workloads6 = [], {}, {}
    for link in sorted(links, key=lambda item: item.get('ifname', '')):
        ifname = link.get('ifname', '')
        owner = iproute.decode_owner_alias(link.get('ifalias')) if ifname.startswith(prefix) else None
        if owner is None:
            continue
        ip_addr, ip6 = host_routes.get(ifname), host_routes6.get(ifname)
        endpoints.append({'name': owner['name'], 'ifname': ifname, 'ip': ip_addr, 'ip6': ip6, 'netns': owner['netns'],
                          'owned_netns': owner['owned']})
        if ip_addr:
            workloads[owner['name']] = ip_addr
        if ip6:
            workloads6[owner['name']] = ip6
    addresses = [{'ifname': link.get('ifname'), 'address': info.get('local'), 'prefixlen': info.get('prefixlen')}
                 for link in addrs for info in link.get('addr_info') or [] if info.get('family') == 'inet']
    addresses6 = [{'ifname': link.get('ifname'), 'address': info.get('local'), 'prefixlen': info.get('prefixlen')}
                  for link in addrs for info in link.get('addr_info') or []
                  if info.get('family') == 'inet6' and info.get('scope') == 'global']
    return {
        'blocks': blocks,
        'blocks6': blocks6,
        'workloads': workloads,
        'workloads6': workloads6,
        'addresses6': addresses6,
        'endpoints': endpoints,
        'addresses': addresses,
        'default_route': bool(defaults),
        'ipip_devices': sorted(link['ifname'] for link in tunnels if link.get('ifname')),
    }


def parse_bird_version(text):
    match = re.search(r'BIRD version\s+(\S+)', text or '')
    return match.group(1) if match else None


def parse_iptables_backend(text):
    match = re.search(r'iptables v\S+(?:\s+\(([^)]+)\))?', text or '')
    if not match:
        return None
    flavour = (match.group(1) or 'legacy').lower()
    if 'nf_tables' in flavour or flavour == 'nft':
        return 'nft'
    return 'legacy' if 'legacy' in flavour else flavour


def count_rules(save):
    """Rules in `iptables-save` output (its `-A` lines); None when the save tool is missing."""
    if save is None:
        return None
    return sum(1 for line in save.splitlines() if line.startswith('-A '))


def parse_owned_chains(save):
    """{table: [cali-* chain names]} from `iptables-save` output (tables without one are left out)."""
    chains, table = {}, None
    for line in save.splitlines():
        if line.startswith('*'):
            table = line[1:].strip()
        elif line.startswith(':cali-') and table:
            chains.setdefault(table, []).append(line[1:].split()[0])
    return {name: sorted(names) for name, names in chains.items()}


def parse(marker, stdout, protocol, prefix=iproute.DEFAULT_INTERFACE_PREFIX, bird_socket=None, cni_data_dir=None):
    """The facts (the ``calico_node_facts`` fact) from the output of :func:`script`; raises NodeFactsError."""
    found = sections(marker, stdout)
    if 'ip' not in found:
        raise NodeFactsError('the host gave no answer to its read (no output of ip)')
    if found['ip'] is None:
        raise NodeFactsError('ip (iproute2) is not installed on the host: install iproute2')
    rc, out = found['ip']
    try:
        docs = iproute.parse_json_stream(out)
    except ValueError as exc:
        docs, rc = [], rc or str(exc)
    if rc or len(docs) != len(ip_queries(protocol)):
        err = (found.get('ip-stderr') or (0, ''))[1].strip()
        raise NodeFactsError('ip -j -batch failed (rc=%s, %d documents for %d commands): %s' % (
            rc, len(docs), len(ip_queries(protocol)), err or out.strip()[:200] or 'no output'))
    facts = kernel_facts(docs, prefix)

    def text(name):
        return None if found.get(name) is None else found[name][1]

    bird = text('bird')
    facts['bird_version'] = parse_bird_version(bird) if bird is not None else None
    iptables = text('iptables')
    facts['iptables_backend'] = parse_iptables_backend(iptables) if iptables is not None else None
    # both backends: calico_chains uses whichever holds rules, and a host may hold them in either
    saves = [text('iptables-nft-save'), text('iptables-legacy-save')]
    facts['iptables_rules'] = {'nft': count_rules(saves[0]), 'legacy': count_rules(saves[1])}
    if not any(saves):
        saves = [text('iptables-save')]
    facts['cali_chains'] = parse_owned_chains(''.join(s for s in saves if s))
    saves6 = [text('ip6tables-nft-save'), text('ip6tables-legacy-save')]
    if not any(saves6):
        saves6 = [text('ip6tables-save')]
    facts['cali_chains6'] = parse_owned_chains(''.join(s for s in saves6 if s))
    if cni_data_dir:
        facts['cni_attachments'] = found.get('cni') if isinstance(found.get('cni'), int) else 0
    if bird_socket:
        facts['bgp'] = bgp_state(found.get('birdc'), bird_socket)
    return facts


def bgp_state(answer, socket):
    """BIRD's sessions, shaped like calico_bgp_status's result (bird_running, sessions), plus the socket."""
    state = {'socket': socket, 'bird_running': False, 'sessions': []}
    if answer == 'nosocket':
        return state
    if answer is None:
        reply = sessions_from_reply(None, '', '', socket)
    else:
        reply = sessions_from_reply(answer[0], answer[1], '', socket)
    reply.pop('bird_error', None)
    state.update(reply)
    return state

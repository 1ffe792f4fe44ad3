# -*- coding: utf-8 -*-
# Copyright (c) netfleet.calico contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The resident per-host agent of the CNI plugin (the article's Felix for containers a runtime starts).

A runtime executes ``netfleet-calico`` for every ADD and DEL; starting an interpreter for each of them
costs far more CPU than the work itself once a runtime starts many containers at once. So the executable
is a few lines of ``sh`` that hand the call to this agent over a Unix socket (``nc -U``), and the agent,
already running, serves it with the same code the plugin runs in-process (:mod:`cni`).

Protocol, one call per connection: the client sends the network configuration (the plugin's stdin) and
closes its side; the agent answers ``<exit status>\\n<stdout>`` and closes. The call's ``CNI_*``
environment is read from the client process itself (``SO_PEERCRED`` names it; ``/proc/<pid>/environ``),
so the client needs no process to pass it on. Only root may connect (socket mode 0600, peer uid checked).

Calls that arrive while a batch is being served form the next batch: its calls share one hold of the store
lock and one ``ipset restore`` / ``iptables-restore`` (:func:`cni_batch.handle_many`), and every endpoint is made
over netlink (:mod:`netlink`), so a burst of containers costs a few processes in all. DEL and GC have a
worker of their own: removing links and rules waits for the kernel's RCU grace periods (tens of ms, asleep,
not on a CPU), and a container that is starting should not wait behind one that is going.
While no agent answers (not started yet, restarting), the executable runs the plugin in-process: slower,
never wrong, as both take the same store lock.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import signal
import socket
import struct
import sys
import threading
import time

from ansible_collections.netfleet.calico.plugins.module_utils import cni, cni_batch, cni_endpoint

MAX_REQUEST = 4 << 20
READ_TIMEOUT = 30.0
_CRED = struct.Struct('3i')


class AgentError(Exception):
    pass


def peer_environ(conn):
    """The ``CNI_*`` variables of the process at the other end of ``conn`` (which must be root's)."""
    pid, uid, _gid = _CRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
    if uid != 0:
        raise AgentError('peer uid %d is not root' % uid)
    with open('/proc/%d/environ' % pid, 'rb') as handle:
        data = handle.read()
    return environ_of(data)


def environ_of(data):
    env = {}
    for item in data.split(b'\0'):
        key, sep, value = item.partition(b'=')
        if sep and key.startswith(b'CNI_'):
            env[key.decode('ascii', 'replace')] = value.decode('utf-8', 'replace')
    return env


def read_request(conn):
    conn.settimeout(READ_TIMEOUT)
    chunks, size = [], 0
    while True:
        data = conn.recv(65536)
        if not data:
            break
        chunks.append(data)
        size += len(data)
        if size > MAX_REQUEST:
            raise AgentError('request larger than %d bytes' % MAX_REQUEST)
    return b''.join(chunks).decode('utf-8', 'replace')


def answer_bytes(status, out):
    return ('%d\n%s' % (status, out + '\n' if out else '')).encode('utf-8')


class Call:
    __slots__ = ('environ', 'text', 'started', 'done', 'answer')

    def __init__(self, environ, text):
        self.environ, self.text = environ, text
        self.started = time.monotonic()
        self.done = threading.Event()
        self.answer = None


class Agent:
    """Accepts calls on ``socket_path`` and serves them in batches: one worker for ADD, CHECK, STATUS and
    VERSION, one for DEL and GC."""

    def __init__(self, socket_path, pidfile=None, handle_many=None):
        self.socket_path = socket_path
        self.pidfile = pidfile
        self.handle_many = handle_many or cni_batch.handle_many
        self.queues = {'start': queue.Queue(), 'end': queue.Queue()}
        self.stopping = threading.Event()
        self.listener = None
        self.kernels = {}

    # ------------------------------------------------------------------ start / stop
    def bind(self):
        directory = os.path.dirname(self.socket_path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if answers(self.socket_path):
            raise AgentError('another agent already answers on %s' % self.socket_path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)  # a stale socket of an agent that is gone
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            listener.bind(self.socket_path)
        finally:
            os.umask(old)
        os.chmod(self.socket_path, 0o600)
        if self.pidfile:  # before listening: whoever finds the agent answering finds its pid file too
            tmp = self.pidfile + '.tmp'
            with open(tmp, 'w', encoding='ascii') as handle:
                handle.write('%d\n' % os.getpid())
            os.replace(tmp, self.pidfile)
        listener.listen(512)
        listener.settimeout(0.5)
        self.listener = listener

    def stop(self, *_args):
        self.stopping.set()

    def cleanup(self):
        if self.listener is not None:
            self.listener.close()
        for path in (self.socket_path, self.pidfile):
            if path and self._ours(path):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    def _ours(self, path):
        if path == self.pidfile:
            try:
                with open(path, encoding='ascii') as handle:
                    return handle.read().strip() == str(os.getpid())
            except (OSError, ValueError):
                return False
        return True

    # ------------------------------------------------------------------ serving
    def serve(self):
        workers = [threading.Thread(target=self.work, args=(name,), name='cni-' + name, daemon=True)
                   for name in self.queues]
        for worker in workers:
            worker.start()
        try:
            while not self.stopping.is_set():
                try:
                    conn, _addr = self.listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self.stopping.is_set():
                        break
                    raise
                threading.Thread(target=self.connection, args=(conn,), daemon=True).start()
        finally:
            self.listener.close()
            for calls in self.queues.values():
                calls.put(None)
            for worker in workers:
                worker.join(timeout=60)

    def connection(self, conn):
        with conn:
            try:
                environ = peer_environ(conn)
                text = read_request(conn)
            except (OSError, AgentError, ValueError) as exc:
                with contextlib.suppress(OSError):
                    conn.sendall(answer_bytes(1, json.dumps({'cniVersion': '1.0.0', 'code': 5,
                                                             'msg': 'agent: cannot read the call: %s' % exc})))
                return
            call = Call(environ, text)
            self.queues['end' if environ.get('CNI_COMMAND') in ('DEL', 'GC') else 'start'].put(call)
            call.done.wait()
            with contextlib.suppress(OSError):
                conn.sendall(answer_bytes(*call.answer))

    def next_batch(self, name):
        """The calls waiting now in queue ``name`` (at least one; blocks for the first); None once stopped and
        drained."""
        calls = self.queues[name]
        first = calls.get()
        if first is None:
            return None
        batch = [first]
        while True:
            try:
                call = calls.get_nowait()
            except queue.Empty:
                return batch
            if call is None:
                calls.put(None)  # serve this batch, then stop
                return batch
            batch.append(call)

    def work(self, name):
        while True:
            batch = self.next_batch(name)
            if batch is None:
                return
            self.serve_batch(batch, name)

    def serve_batch(self, batch, name='start'):
        if self.kernels.get(name) is None:  # a netlink socket per worker: requests and answers never mix
            self.kernels[name] = cni_endpoint.Kernel(timeout=60)

        def answer(i, value):
            call = batch[i]
            if call.answer is None:
                call.answer = value
                call.done.set()
                cni.log(call.environ, call.text, value[0], value[1], call.started)

        try:
            self.handle_many([(c.environ, c.text) for c in batch], self.kernels[name], answer)
        except Exception as exc:  # never leave a runtime waiting: every call gets an answer
            failed = (1, json.dumps({'cniVersion': '1.0.0', 'code': 5, 'msg': 'agent: %s: %s'
                                     % (type(exc).__name__, exc)}))
            for i in range(len(batch)):
                answer(i, failed)
            self.kernels[name] = None  # start over with a fresh netlink socket


def answers(path, timeout=1.0):
    """True when something accepts connections on the Unix socket ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    probe.settimeout(timeout)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def main(argv=None):
    parser = argparse.ArgumentParser(prog='netfleet-calico-agent', description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--socket', required=True, help='Unix socket the plugin executable connects to')
    parser.add_argument('--pidfile', help='pid file written once the socket listens')
    args = parser.parse_args(argv)
    agent = Agent(args.socket, args.pidfile)
    try:
        agent.bind()
    except (AgentError, OSError) as exc:
        sys.stderr.write('netfleet-calico-agent: %s\n' % exc)
        return 1
    signal.signal(signal.SIGTERM, agent.stop)
    signal.signal(signal.SIGINT, agent.stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        agent.serve()
    finally:
        agent.cleanup()
    return 0

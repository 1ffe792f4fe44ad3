"""The CNI plugin's resident agent (plugins/module_utils/cni_agent.py): its wire format, the environment read
from the calling process, and batches, over a real Unix socket with real ``nc -U`` clients; the calls
themselves are served by a recorder here (cni.handle_many is tested in test_cni.py)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest

from ansible_collections.netfleet.calico.plugins.module_utils import cni_agent


def test_environ_of_keeps_only_cni_variables():
    data = b'PATH=/bin\0CNI_COMMAND=ADD\0CNI_ARGS=K8S_POD_NAME=a;X=b\0junk\0CNI_NETNS=/run/netns/x\0'
    assert cni_agent.environ_of(data) == {'CNI_COMMAND': 'ADD', 'CNI_ARGS': 'K8S_POD_NAME=a;X=b',
                                          'CNI_NETNS': '/run/netns/x'}


def test_answer_bytes():
    assert cni_agent.answer_bytes(0, '') == b'0\n'
    assert cni_agent.answer_bytes(1, '{"code": 7}') == b'1\n{"code": 7}\n'


@pytest.fixture
def agent(tmp_path):
    seen = []
    gate = threading.Event()
    gate.entered = threading.Event()

    def handle_many(calls, _kernel, answer):
        gate.entered.set()
        gate.wait(5)  # hold the first batch so that the others queue up behind it
        seen.append([env.get('CNI_CONTAINERID') for env, _text in calls])
        for i, (env, text) in enumerate(calls):
            answer(i, (0 if json.loads(text)['ok'] else 1, json.dumps({'id': env['CNI_CONTAINERID']})))

    sock = str(tmp_path / 'run' / 'agent.sock')
    server = cni_agent.Agent(sock, str(tmp_path / 'agent.pid'), handle_many=handle_many)
    server.kernels = {'start': object(), 'end': object()}  # never used by the recorder
    server.bind()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield server, seen, gate
    server.stop()
    thread.join(10)
    server.cleanup()
    assert not os.path.exists(sock) and not os.path.exists(str(tmp_path / 'agent.pid'))


def test_calls_that_arrive_together_are_one_batch_and_each_gets_its_answer(agent):
    server, seen, gate = agent
    assert open(server.pidfile).read().strip() == str(os.getpid())
    assert os.stat(server.socket_path).st_mode & 0o777 == 0o600
    procs = []
    for i in range(8):
        env = {'PATH': os.environ['PATH'], 'CNI_COMMAND': 'ADD', 'CNI_CONTAINERID': 'c%d' % i}
        procs.append(subprocess.Popen(['nc', '-UN', server.socket_path], env=env, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True))
        procs[-1].stdin.write(json.dumps({'ok': i != 3}))
        procs[-1].stdin.close()
        if i == 0:
            assert gate.entered.wait(5)  # c0 is being served (held by the gate) before the others connect
    deadline = time.monotonic() + 5
    while server.queues['start'].qsize() < 7 and time.monotonic() < deadline:
        time.sleep(0.01)
    gate.set()
    outs = [p.stdout.read() for p in procs]
    assert [p.wait() for p in procs] == [0] * 8
    for i, out in enumerate(outs):
        status, _nl, body = out.partition('\n')
        assert status == ('1' if i == 3 else '0') and json.loads(body) == {'id': 'c%d' % i}
    assert seen[0] == ['c0'] and sorted(sum(seen[1:], [])) == ['c%d' % i for i in range(1, 8)]
    assert len(seen) < 8  # batched


def test_a_second_agent_on_the_same_socket_refuses(agent):
    server, _seen, gate = agent
    gate.set()
    with pytest.raises(cni_agent.AgentError, match='already answers'):
        cni_agent.Agent(server.socket_path).bind()
    assert cni_agent.answers(server.socket_path)

"""The weight-sync group (actor rank 0 + the rollout engines' workers) binds the address it is
given — the Ray node's — not whatever the hostname resolves to (127.0.1.1 on many clusters,
where an engine on another node would wait until the timeout).  Real gloo, two ranks as two
threads of this process; 127.0.0.2 stands for a node address other than the default."""

import threading

import psutil
import torch

from rlhf_dist.engine.dist import group_store, standalone_group

NODE = "127.0.0.2"


def _ports_bound_to(address: str) -> set:
    return {
        c.laddr.port
        for c in psutil.Process().net_connections("tcp")
        if c.laddr and c.laddr.ip == address
    }


def test_gloo_weight_group_binds_the_given_node_address(monkeypatch):
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    before = _ports_bound_to(NODE)
    store = group_store("127.0.0.1", 0, is_master=True, timeout_s=30)
    received, groups = {}, {}

    def rank(r: int) -> None:
        client = store if r == 0 else group_store("127.0.0.1", store.port, False, 30)
        group = standalone_group(client, r, 2, "gloo", 30, prefix="bind-test", host=NODE)
        tensor = torch.arange(4.0) if r == 0 else torch.zeros(4)
        group.broadcast(tensor, 0).wait()
        received[r], groups[r] = tensor, (group, client)

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert torch.equal(received[1], torch.arange(4.0))
    assert _ports_bound_to(NODE) - before, "no gloo socket on the given node address"

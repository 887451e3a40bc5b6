"""`streamrnn serve --ray` on a real two-node Ray cluster on 127.0.0.1 (Ray's own test cluster):
the real CLI as a subprocess drives two worker actors, one per node; one actor's process is killed
with SIGKILL mid-stream and Ray restarts it; it resumes from the store actor's snapshot."""

import signal
import sys
import zlib
from pathlib import Path

import pytest

from streamrnn.transport import wire

sys.path.insert(0, str(Path(__file__).parent))
from test_cli_stream import SR, Proc, free_port, models, procs  # noqa: E402,F401
from test_serve import (Collector, Producer, audio_of, check_restored_streams, close_sockets,  # noqa: E402,F401
                        metric, scrape, send_killing_worker_0)

ray = pytest.importorskip("ray")  # the `ray` extra is part of `test`: CI has it


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                      "include_dashboard": False})
    try:
        c.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        c.wait_for_nodes()
        yield c
    finally:
        c.shutdown()


def test_ray_actors_bit_identical_and_a_killed_actor_resumes(tmp_path, models, procs, cluster):
    path, model = models["audio"]
    p_in, p_out, p_metrics = free_port(), free_port(), free_port()
    s = Proc(["-m", "streamrnn", "serve", "--model", path, "--source", f"zmq+pull://127.0.0.1:{p_in}",
              "--sink", f"zmq+pub://127.0.0.1:{p_out}", "--workers", "2", "--no-events", "--ray", cluster.address,
              "--snapshot-interval", "0.3", "--metrics", f"127.0.0.1:{p_metrics}"], tmp_path, "serve")
    procs.append(s)
    s.wait_for("err", r"streamrnn: serving", timeout=120)
    text = scrape(p_metrics)
    nodes = {line.split('node="')[1].split('"')[0] for line in text.splitlines()
             if line.startswith("streamrnn_worker_up{")}
    assert nodes == {"127.0.0.1"}  # the registry says where each worker runs
    col = Collector(p_out)
    prod = Producer(p_in)
    ids = [f"r{i}" for i in range(8)]
    shard = {sid: zlib.crc32(sid.encode()) % 2 for sid in ids}
    assert set(shard.values()) == {0, 1}
    xs = {sid: audio_of(i, 3.0) for i, sid in enumerate(ids)}
    for sid in ids:
        prod.start(sid)
    killed = send_killing_worker_0(prod, xs, ids, p_metrics)
    for sid in ids:
        prod.end(sid)
    assert col.wait_eos(ids, timeout=90) == set()
    text = scrape(p_metrics)
    assert metric(text, "streamrnn_worker_restarts_total", worker="0") == 1.0
    assert metric(text, "streamrnn_worker_restarts_total", worker="1") == 0.0
    assert f'pid="{killed}"' not in text
    assert s.finish(signal.SIGTERM, timeout=60) == 0
    col.close()
    prod.close()
    lost = check_restored_streams(col, ids, xs, shard, model)
    assert lost > 0
    # SPREAD: one actor per node, as the registry in the aggregate stats message says (also after the restart)
    reg = [m.meta["registry"] for m in col.msgs if m.kind == wire.STATS and m.meta.get("scope") == "service"][-1]
    assert len({reg[w]["node_id"] for w in ("0", "1")}) == 2
    assert len(cluster.list_all_nodes()) == 2

"""``streamrnn serve --ray``: workers as Ray actors across a cluster (``pip install 'streamrnn[ray]'``).

Imported only with ``--ray`` (``import streamrnn`` never imports Ray).  The data stays on ZeroMQ:

* each worker is an actor (``max_restarts=-1``: Ray starts it again wherever it can when its
  process or node dies; ``scheduling_strategy="SPREAD"``: the actors spread over the nodes), running
  ``streamrnn.serve.worker.run_worker`` in a thread; its ingress is a PULL socket bound to its
  node's address on a free port, its egress a PUB socket connected to the supervisor's proxy;
* on start (and on every restart) it reports its pid, node and ingress address on the control
  socket; the supervisor keeps that **registry** (in the aggregate stats message and the metrics)
  and points the router at the new address;
* snapshots go to a **named detached store actor** (``ActorStore``): a snapshot written with
  ``ray.put`` would be owned by the worker that wrote it and die with it, so a replacement could
  not read it; the store actor owns the bytes and outlives any worker (a shared directory would
  need a file system every node mounts).  If the store actor's own node dies the snapshots are lost
  and the replacements start empty (a new output epoch each, after the producers' next descriptor).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading

log = logging.getLogger(__name__)

from streamrnn.serve.store import STORE_NAMESPACE, ActorStore


def import_ray(address: str | None = None):
    if address and address.startswith(("127.", "localhost")) and "ray" not in sys.modules:
        # A cluster on this machine's loopback (tests, one machine): Ray would otherwise replace
        # 127.0.0.1 by the machine's LAN address, where a loopback-only cluster does not listen.  This is
        # Ray's own switch for keeping every address on the loopback (read when Ray is imported).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        from streamrnn.errors import ConfigError

        raise ConfigError("--ray needs Ray: pip install 'streamrnn[ray]'") from None
    return ray


def _free_port(host: str) -> int:
    s = socket.socket()
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _port_free(host: str, port: int) -> bool:
    s = socket.socket()
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class _Store:
    """The store actor: worker name -> the bytes of its last snapshot (``streamrnn.serve.store.pack``)."""

    def __init__(self):
        self.data: dict[str, bytes] = {}

    def put(self, name: str, data: bytes) -> None:
        self.data[name] = data

    def get(self, name: str):
        return self.data.get(name)

    def delete(self, name: str) -> None:
        self.data.pop(name, None)


class _Worker:
    """One worker as an actor: ``run_worker`` in a thread, its ingress on this node's address."""

    def __init__(self, spec_json: str):
        from streamrnn.serve.worker import run_worker

        import ray

        spec = json.loads(spec_json)
        logging.basicConfig(level=int(spec.get("log_level", logging.WARNING)),
                            format=f"%(asctime)s worker-{spec['index']} %(name)s %(levelname)s: %(message)s")
        ip = ray.util.get_node_ip_address()
        index = int(spec["index"])
        # A restart on the same node binds the port of its predecessor: the router's socket reconnects by
        # itself and what it queued meanwhile arrives (on another node the router is redirected, and
        # what was queued for the old address is lost, counted as the restored streams' gap).
        store = ActorStore(spec["store"]["name"], spec["store"].get("namespace"))
        key = f"address-{index}"
        prev = (store.get(key) or b"").decode()
        host, _, old_port = prev.rpartition(":")
        port = int(old_port) if host == ip and old_port.isdigit() and _port_free(ip, int(old_port)) else _free_port(ip)
        store.put(key, f"{ip}:{port}".encode())
        spec["ingress"] = f"zmq+pull://{ip}:{port}"
        self.address = f"tcp://{ip}:{port}"
        self.stop = threading.Event()
        self.rc = None
        self.done = threading.Event()

        import zmq

        ctx = zmq.Context.instance()
        ctl = ctx.socket(zmq.PUSH)
        ctl.setsockopt(zmq.LINGER, 1000)
        ctl.connect(spec["control"])
        node = ray.get_runtime_context().get_node_id()

        def tell(event, **kw):
            ctl.send(json.dumps({"event": event, "worker": index, "pid": os.getpid(), **kw}).encode())

        def run():
            try:
                self.rc = run_worker(spec, self.stop, on_ready=lambda p, n: tell(
                    "ready", restored=n, address=self.address, node=ip, node_id=node))
            except Exception as e:  # noqa: BLE001 (reported to the supervisor, then the actor exits)
                log.exception("worker %d failed", index)
                tell("failed", error=str(e))
                self.rc = 1
            tell("exit", rc=self.rc)
            self.done.set()

        self.thread = threading.Thread(target=run, name=f"streamrnn-worker-{index}", daemon=True)
        self.thread.start()

    def pid(self) -> int:
        return os.getpid()

    def drain(self, timeout: float):
        """Stop and wait for the drain (every stream ends with eos); returns the exit status."""
        self.stop.set()
        self.done.wait(timeout)
        return self.rc


class RayWorkers:
    """The workers of a service as Ray actors; the supervisor's other backend beside ``LocalWorkers``."""

    name = "ray"
    restarts_itself = True  # Ray restarts a dead actor; the supervisor only follows its new address

    def __init__(self, address: str, rundir: str, n: int):
        ray = import_ray(address)
        self.ray = ray
        if not ray.is_initialized():
            try:  # "auto": the cluster this machine belongs to (`ray start`), else RAY_ADDRESS
                handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
                ray.init(address=address or "auto", logging_level=logging.WARNING, log_to_driver=True)
                for sig, h in handlers.items():  # ray.init installs its own (exit at once): serve drains instead
                    if h is not None and threading.current_thread() is threading.main_thread():
                        signal.signal(sig, h)
            except ConnectionError as e:
                from streamrnn.errors import ConfigError

                raise ConfigError(f"--ray {address or 'auto'}: no Ray cluster there ({e}); start one with "
                                  f"`ray start --head` (docs/operations.md, \"Running on a Ray cluster\")") from None
        self.ip = ray.util.get_node_ip_address()
        self.ports = {k: _free_port(self.ip) for k in ("egress", "control")}
        self.store_name = f"streamrnn-serve-store-{os.getpid()}-{os.urandom(4).hex()}"
        self.store = ray.remote(num_cpus=0)(_Store).options(
            name=self.store_name, namespace=STORE_NAMESPACE, lifetime="detached").remote()
        self.actor_cls = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=0)(_Worker)
        self.actors: dict[int, object] = {}
        self.address: dict[int, str] = {}
        self.drained: dict[int, object] = {}

    def ingress_endpoint(self, i: int) -> tuple[str, str]:
        return "", self.address.get(i, "")  # the actor binds on its node and says where (ready message)

    def egress_endpoint(self) -> tuple[str, str]:
        a = f"{self.ip}:{self.ports['egress']}"
        return f"zmq+pub://{a}?connect", f"tcp://{a}"

    def control_address(self) -> str:
        return f"tcp://{self.ip}:{self.ports['control']}"

    def store_spec(self) -> dict:
        return {"kind": "ray", "name": self.store_name, "namespace": STORE_NAMESPACE}

    def start(self, i: int, spec: dict) -> dict:
        spec = dict(spec, parent_pid=None)  # an actor's parent is its raylet; Ray ends it with its driver
        self.actors[i] = self.actor_cls.options(scheduling_strategy="SPREAD", name=None).remote(json.dumps(spec))
        return {"node": "(placing)", "pid": None}

    def ready(self, i: int, msg: dict) -> str | None:
        """A (re)started actor said where its ingress is: the old address if it moved, else None."""
        old, new = self.address.get(i), msg.get("address")
        self.address[i] = new
        return old if old != new else None

    def alive(self, i: int) -> bool:
        return i in self.actors  # Ray restarts it; the supervisor never does

    def exitcode(self, i: int):
        return None

    def terminate(self, i: int) -> None:
        self.drained[i] = self.actors[i].drain.remote(25.0)

    def join(self, i: int, timeout: float):
        try:
            ref = self.drained.pop(i) if i in self.drained else self.actors[i].drain.remote(timeout)
            rc = self.ray.get(ref, timeout=timeout)
        except Exception as e:  # noqa: BLE001 (a worker that cannot drain is killed below)
            log.error("worker %d did not drain: %s", i, e)
            rc = None
        self.ray.kill(self.actors.pop(i), no_restart=True)
        return rc

    def close(self) -> None:
        try:
            self.ray.kill(self.store, no_restart=True)
        except Exception:  # noqa: BLE001 (already gone with the cluster)
            pass

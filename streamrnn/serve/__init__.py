"""``streamrnn serve``: one service over every core (local worker processes) or many machines (Ray
actors), with sticky routing by stream id and streams' state that survives a worker.

Ray is imported only by ``streamrnn.serve.ray_backend`` and ``store.ActorStore``, and only with ``--ray``.
"""

from streamrnn.serve.routing import shard_of
from streamrnn.serve.service import Service, run_service

__all__ = ["Service", "run_service", "shard_of"]

"""A faithful, stateful, fault-injectable CML 2.9 simulator (EXTERNAL-SYSTEMS.md §1).

One server hosts many virtual CML controllers ("workers"), one per EC2 worker LCM manages:
`POST /_sim/workers {"name": "w1"}` creates one and answers its `base_url`
(`<server>/w/w1`); its REST API lives at `<base_url>/api/v0/...` with the shapes of
`cml-2.9-openapi.json`. It mirrors `workers/clients/cml.py` and also serves what Cisco's
`virl2-client` 2.9.1 calls for its lab life cycle. With `auto_workers` (as `simulators.runner` starts
it, for the embedded default and the process stack) the first request to an unknown `/w/<name>/`
creates that virtual CML with the default options, so it warms up like a real controller booting
after its machine, and LCM itself never calls the control API.

The parts, composed here:
- `state`: the workers' state, the §1.3 state machine, tokens, faults and timings (described there);
- `topology`: the import format, parsed, validated, turned into a lab and downloaded again;
- `serialise`: the JSON bodies built from the state;
- `api` (`api_system`, `api_labs`): the CML REST views and what runs around each of them;
- `control`: the `/_sim/workers...` control API (described there).
"""

from django.conf import settings
from flask import Flask
from werkzeug.exceptions import HTTPException

from simulators.cml.api import register_api
from simulators.cml.control import WORKER_NAME, new_worker, register_control
from simulators.cml.serialise import worker_summary
from simulators.cml.state import CML_VERSION, OPERATIONS, CMLFaults, CMLState, SimWorker
from simulators.cml.topology import DEFAULT_NODE_DEFINITIONS
from simulators.cml.web import error_response
from simulators.common import Simulator

__all__ = ["OPERATIONS", "CMLSimulator"]


def _setting(name: str, default: str) -> str:
    return getattr(settings, name, default) if settings.configured else default


class CMLSimulator(CMLState, Simulator):
    """Many virtual CML 2.9 controllers, each at `/w/<name>/api/v0`; see the module docstring."""

    name = "cml"

    def __init__(
        self,
        *,
        zero_delay: bool = False,
        timings: dict | None = None,
        seed: int | None = None,
        username: str | None = None,
        password: str | None = None,
        node_definitions: set[str] | frozenset[str] | None = None,
        version: str = CML_VERSION,
        auto_workers: bool = False,
        control_token: str | None = None,
    ):
        self.workers: dict[str, SimWorker] = {}
        self.auto_workers = auto_workers
        self.username = username or _setting("LCM_CML_USERNAME", "admin")
        self.password = password or _setting("LCM_CML_PASSWORD", "admin")
        self.node_definitions = frozenset(node_definitions or DEFAULT_NODE_DEFINITIONS)
        self.version = version
        super().__init__(zero_delay=zero_delay, timings=timings, seed=seed, control_token=control_token)
        self.faults = CMLFaults(seed)

    def default_timings(self) -> dict:
        return {
            "warmup": 2.0,
            "node_queue": 0.2,
            "node_boot": 1.0,
            "licence_registration": 0.5,
            "token_lifetime": 86400.0,
        }

    def worker_named(self, name: str) -> SimWorker | None:
        """The virtual CML called `name`; with `auto_workers`, one is made for a valid unknown name."""
        worker = self.workers.get(name)
        if worker is None and self.auto_workers and WORKER_NAME.match(name):
            with self.lock:
                worker = self.workers.get(name) or self.workers.setdefault(name, new_worker(self, name, {}))
        return worker

    def reset_state(self) -> None:
        self.workers.clear()

    def control_state(self) -> dict:
        return {"workers": {name: worker_summary(self, w) for name, w in self.workers.items()}}

    def register_routes(self, app: Flask) -> None:
        register_control(self, app)
        app.register_error_handler(HTTPException, _http_error)
        register_api(self, app)


def _http_error(exc: HTTPException):
    return error_response(exc.code or 500, exc.description or exc.name)

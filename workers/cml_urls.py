"""How a worker's CML is reached: its base URL from `LCM_CML_URL_TEMPLATE`, and the simulator's virtual CML.

`cml_url_for(worker)`: a launched instance's CML address comes from `LCM_CML_URL_TEMPLATE`; when that
address is a virtual CML of the CML simulator, `ensure_simulated_cml(worker)` creates the virtual CML
(`POST /_sim/workers {"name"}`) once the instance runs, so it warms up like a real controller booting
after its machine.
"""

import requests
from django.conf import settings

from lcm.http import Unavailable


def cml_url_for(worker) -> str:
    """The CML base URL of a worker's instance, from `LCM_CML_URL_TEMPLATE` (fields: name, worker_id,
    instance_id, private_ip, public_ip, address = public or private IP); empty template = the CML simulator."""
    template = settings.LCM_CML_URL_TEMPLATE or f"{settings.LCM_CML_SIMULATOR_URL.rstrip('/')}/w/{{name}}"
    return template.format(
        name=worker.name,
        worker_id=worker.pk,
        instance_id=worker.aws_instance_id or "",
        private_ip=worker.private_ip or "",
        public_ip=worker.public_ip or "",
        address=worker.public_ip or worker.private_ip or "",
    ).rstrip("/")


def simulated_cml_name(url: str) -> str | None:
    """The virtual CML's name when `url` is one of the CML simulator's (`<simulator>/w/<name>`), else None."""
    prefix = f"{settings.LCM_CML_SIMULATOR_URL.rstrip('/')}/w/"
    if url and url.startswith(prefix):
        return url[len(prefix) :].strip("/") or None
    return None


def ensure_simulated_cml(worker) -> None:
    """Create the worker's virtual CML in the simulator if its address is one (idempotent: 200 when it exists).

    Raises `Unavailable` when the simulator does not answer: the worker simply is not ready yet.
    """
    name = simulated_cml_name(worker.cml_base_url)
    if name is None:
        return
    url = f"{settings.LCM_CML_SIMULATOR_URL.rstrip('/')}/_sim/workers"
    try:
        response = requests.post(
            url,
            json={"name": name},
            timeout=(settings.LCM_HTTP_CONNECT_TIMEOUT, settings.LCM_HTTP_READ_TIMEOUT),
        )
    except requests.RequestException as exc:
        raise Unavailable("cml-simulator", "create_worker", exc.__class__.__name__) from None
    if response.status_code not in (200, 201):
        raise Unavailable("cml-simulator", "create_worker", f"HTTP {response.status_code}", response.status_code)

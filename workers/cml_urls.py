"""How a worker's CML is reached: its base URL from `LCM_CML_URL_TEMPLATE`.

`cml_url_for(worker)`: a launched instance's CML address comes from `LCM_CML_URL_TEMPLATE`; with no
template it is a virtual CML of the CML simulator (`<simulator>/w/<name>`), which the simulator makes
on first contact, warming up like a real controller booting after its machine.
"""

from django.conf import settings


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

"""How a worker's CML is reached: its base URL from `LCM_CML_URL_TEMPLATE`, and which base URLs an admin may set.

`cml_url_for(worker)`: a launched instance's CML address comes from `LCM_CML_URL_TEMPLATE`; with no
template it is a virtual CML of the CML simulator (`<simulator>/w/<name>`), which the simulator makes
on first contact, warming up like a real controller booting after its machine.

`cml_url_problem(url)`: LCM sends the deployment-wide CML credentials to every worker's `cml_base_url`, so in
production (`LCM_CML_URL_POLICY`, on with DJANGO_DEBUG=0) a URL typed by an admin (admin form, REST API,
`worker_add`) must be https on a host of `LCM_CML_ALLOWED_HOSTS`; the shipped CML simulator's own URLs stay
allowed (the launcher runs production settings against it on loopback). With DEBUG on, any http(s) URL is.
"""

import ipaddress
from urllib.parse import urlsplit

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


def cml_url_problem(url: str) -> str | None:
    """Why `url` may not be a worker's CML base URL here, or None when it may."""
    parts = urlsplit(str(url or "").strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL with a host"
    if parts.username or parts.password:
        return "must not carry credentials (LCM sends LCM_CML_USERNAME/LCM_CML_PASSWORD itself)"
    if not settings.LCM_CML_URL_POLICY or _is_simulator(parts):
        return None
    if parts.scheme != "https":
        return "must use https in production (LCM sends the CML credentials to it)"
    if not host_allowed(parts.hostname, settings.LCM_CML_ALLOWED_HOSTS):
        return f"host {parts.hostname!r} is not in LCM_CML_ALLOWED_HOSTS"
    return None


def _is_simulator(parts) -> bool:
    simulator = urlsplit(settings.LCM_CML_SIMULATOR_URL)
    same_server = (parts.scheme, parts.hostname, parts.port) == (simulator.scheme, simulator.hostname, simulator.port)
    return same_server and parts.path.startswith(simulator.path.rstrip("/") + "/w/")


def host_allowed(host: str, allowed: list[str]) -> bool:
    """Whether `host` matches an entry: the same name, `.example.com` (the domain and its subdomains),
    an IP address or a CIDR network."""
    host = host.lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in (item.strip().lower().rstrip(".") for item in allowed):
        if not entry:
            continue
        if address is not None and "/" in entry:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
        elif entry.startswith("."):
            if host == entry[1:] or host.endswith(entry):
                return True
        elif host == entry:
            return True
    return False

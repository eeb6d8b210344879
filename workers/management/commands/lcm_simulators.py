"""`manage.py lcm_simulators`: run the CML, LDS, Grading Engine, moto and OIDC simulators until Ctrl-C (SPEC §1).

Their control API (`/_sim/...`) demands `X-Sim-Token: <LCM_SIM_TOKEN>`; without LCM_SIM_TOKEN a token is
generated and printed (the launcher sets one and passes it on)."""

import json

from django.conf import settings

from lcm.management.command_utils import LcmCommand, fail
from simulators.runner import SIMULATOR_NAMES, SimulatorStartError, start_simulators, wait_for_signal

# The setting that points LCM at each simulator, printed next to its URL.
URL_SETTINGS = {
    "cml": "POST /_sim/workers for a virtual CML",
    "lds": "LCM_LDS_BASE_URL",
    "grading": "LCM_GRADING_BASE_URL",
    "moto": "LCM_AWS_ENDPOINT_URL",
    "oidc": "LCM_OIDC_ISSUER = <url>/realms/lcm",
}


class Command(LcmCommand):
    help = (
        "Run the local CML, LDS, Grading Engine, EC2/CloudWatch (moto) and OpenID Connect simulators in the "
        "foreground until SIGINT/SIGTERM. Ports come from LCM_SIM_*_PORT (0 picks a free one); the control API "
        "takes X-Sim-Token: LCM_SIM_TOKEN (generated and printed when unset)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--zero-delay", action="store_true", help="No simulated waiting (default: LCM_SIM_ZERO_DELAY)."
        )
        parser.add_argument("--host", help="Address to listen on (default: LCM_SIM_HOST).")
        parser.add_argument(
            "--only", action="append", choices=SIMULATOR_NAMES, help="Run only this simulator (repeatable)."
        )
        self.add_json_argument(parser)

    def handle(self, *args, **options):
        host = options["host"] or settings.LCM_SIM_HOST
        try:
            handle = start_simulators(
                host,
                cml_port=settings.LCM_SIM_CML_PORT,
                lds_port=settings.LCM_SIM_LDS_PORT,
                grading_port=settings.LCM_SIM_GRADING_PORT,
                moto_port=settings.LCM_SIM_MOTO_PORT,
                oidc_port=settings.LCM_SIM_OIDC_PORT,
                zero_delay=options["zero_delay"] or settings.LCM_SIM_ZERO_DELAY,
                webhook_url=settings.LCM_SIM_WEBHOOK_URL or None,
                webhook_secret=settings.WEBHOOK_SECRET,
                only=options["only"],
                control_token=settings.LCM_SIM_TOKEN or None,
            )
        except SimulatorStartError as exc:
            raise fail(exc) from None
        if options["json"]:
            self.stdout.write(json.dumps({"urls": handle.urls}))
        else:
            for name, url in handle.urls.items():
                self.stdout.write(f"{name:<8} {url}  ({URL_SETTINGS[name]})")
            if not settings.LCM_SIM_TOKEN:  # chosen here: whoever drives the simulators needs it
                self.stdout.write(f"Control API (/_sim/...): header X-Sim-Token: {handle.token}")
            self.stdout.write("Simulators running; press Ctrl-C to stop.")
        self.stdout.flush()
        wait_for_signal(handle)

"""Run the signal service alone: `python -m tandem_signal` (one Kubernetes Deployment)."""

from tandem_runtime.service import run_service

from tandem_signal.app import create_app
from tandem_signal.settings import SignalSettings


def main() -> None:
    settings = SignalSettings()
    run_service(
        name="signal",
        settings=settings,
        mount=lambda nc, signer: [("/signal", create_app(settings=settings, nc=nc, signer=signer))],
    )


if __name__ == "__main__":
    main()

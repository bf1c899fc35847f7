"""Run the live service alone: `python -m tandem_live` (one Kubernetes Deployment)."""

from tandem_runtime.service import run_service

from tandem_live.app import create_app
from tandem_live.settings import LiveSettings


def main() -> None:
    settings = LiveSettings()
    run_service(
        name="live",
        settings=settings,
        mount=lambda nc, signer: [("/live", create_app(settings=settings, nc=nc, signer=signer))],
    )


if __name__ == "__main__":
    main()

"""Run the ingest service alone: `python -m tandem_ingest` (one Kubernetes Deployment)."""

from tandem_runtime.service import run_service

from tandem_ingest.app import create_app
from tandem_ingest.settings import IngestSettings


def main() -> None:
    settings = IngestSettings()
    run_service(
        name="ingest",
        settings=settings,
        mount=lambda nc, signer: [("/ingest", create_app(settings=settings, nc=nc, signer=signer))],
    )


if __name__ == "__main__":
    main()

"""Run the sessions service alone: `python -m tandem_sessions` (one Kubernetes Deployment)."""

from tandem_runtime.service import run_service

from tandem_sessions.app import create_app
from tandem_sessions.settings import SessionsSettings


def main() -> None:
    settings = SessionsSettings()
    run_service(
        name="sessions",
        settings=settings,
        mount=lambda nc, signer: [("/api", create_app(settings=settings, nc=nc, signer=signer))],
    )


if __name__ == "__main__":
    main()

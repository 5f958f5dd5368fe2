"""The ``hydramix`` console script: importing each stage module registers its command on the app."""

from __future__ import annotations

from stages import prepare, subset, train_generator, synthesize, verify, score, train_classifier, evaluate, report  # noqa: F401  (registration by import, in pipeline order)
from stages.app import app


def main() -> None:
    app()


if __name__ == "__main__":
    main()

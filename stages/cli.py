"""The ``hydramix`` console script: importing each stage module registers its command on the app."""

from __future__ import annotations

# Registration by import, in pipeline order (this is the order `hydramix --help` lists them in).
from stages import (  # noqa: F401
    prepare,
    subset,
    train_generator,
    synthesize,
    verify,
    score,
    train_classifier,
    evaluate,
    report,
)
from stages.app import app


def main() -> None:
    app()


if __name__ == "__main__":
    main()

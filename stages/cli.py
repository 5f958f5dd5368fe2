"""The ``hydramix`` console script. Commands are imported on demand (``stages.app.StageGroup``), so this module
imports no stage: ``hydramix --help`` stays fast."""

from __future__ import annotations

from stages.app import app


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""docs/configuration.md in full: the services' variables and the operator's, one table each.

The operator is the one package allowed to see both tables (the services never
import the operator), so the whole reference is composed here; the rendering is
:mod:`xchat.core.settings_doc`'s. Regenerate with::

    .venv/bin/python -m xchat_operator.settings_doc > docs/configuration.md
"""

from __future__ import annotations

import sys

from xchat.core import settings_doc
from xchat.core.settings import VARIABLES as SERVICE_VARIABLES

from .settings import VARIABLES as OPERATOR_VARIABLES

REGENERATE = ".venv/bin/python -m xchat_operator.settings_doc > docs/configuration.md"


def render() -> str:
    return settings_doc.render((*SERVICE_VARIABLES, *OPERATOR_VARIABLES), regenerate=REGENERATE)


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()

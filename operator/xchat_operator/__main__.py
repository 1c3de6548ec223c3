"""``python -m xchat_operator [kopf run flags]``.

Without namespace flags it watches ``$XCHAT_OPERATOR_NAMESPACES`` (comma-separated;
the least-privilege RBAC in ``operator/rbac`` binds per namespace) or, if unset,
all namespaces.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    from kopf.cli import main as kopf_main

    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a in ("-n", "--namespace", "-A", "--all-namespaces") or a.startswith("--namespace=") for a in args):
        namespaces = [n for n in os.environ.get("XCHAT_OPERATOR_NAMESPACES", "").split(",") if n]
        args += [f"--namespace={n}" for n in namespaces] or ["--all-namespaces"]
    kopf_main(["run", "-m", "xchat_operator", *args], prog_name="xchat-operator")


if __name__ == "__main__":
    main()

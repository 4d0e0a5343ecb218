"""Evaluating a ValidatingAdmissionPolicy's CEL validations on an object, as the API server would, with a CEL
interpreter (cel-python)."""

from __future__ import annotations

from typing import Any


def admitted(policy: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    """The messages of the validations `obj` fails (an empty list: admitted)."""
    import celpy

    env = celpy.Environment()
    failed = []
    for validation in policy["spec"]["validations"]:
        program = env.program(env.compile(validation["expression"]))
        try:
            ok = program.evaluate({"object": celpy.json_to_cel(obj)})
        except celpy.CELEvalError:
            ok = False  # an evaluation error denies, as failurePolicy: Fail does
        if not ok:
            failed.append(validation["message"])
    return failed

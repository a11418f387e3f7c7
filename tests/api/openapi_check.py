"""Checks for the OpenAPI tests, with the reference Python validators.

  openapi_check.py spec DOC.json
      openapi-spec-validator validates the whole description (OpenAPI 3.1).
  openapi_check.py instances DOC.json SCHEMA < instances.jsonl
      every JSON line on stdin must validate against components.schemas.SCHEMA
      (openapi-schema-validator's OAS 3.1 dialect), $refs resolved inside DOC.

Exit 1 with the validator's message on the first failure.
"""

import json
import sys

from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate


def main() -> None:
    command, path = sys.argv[1], sys.argv[2]
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    if command == "spec":
        validate(doc)
        return
    name = sys.argv[3]
    schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    validator = OAS31Validator(schema)
    count = 0
    for line in sys.stdin:
        if line.strip():
            validator.validate(json.loads(line))
            count += 1
    if count == 0:
        sys.exit(f"no instance of {name} was given")


if __name__ == "__main__":
    main()

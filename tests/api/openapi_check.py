"""Checks for the OpenAPI tests, with the reference Python validators.

  openapi_check.py spec DOC.json
      openapi-spec-validator validates the whole description (OpenAPI 3.1).
  openapi_check.py instances DOC.json < instances.tsv
      every line on stdin is `SCHEMA<TAB>JSON`: the JSON must validate against
      components.schemas.SCHEMA (openapi-schema-validator's OAS 3.1 dialect), $refs
      resolved inside DOC.

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
    count = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        name, instance = line.split("\t", 1)
        if name not in doc["components"]["schemas"]:
            sys.exit(f"no schema named {name}")
        schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
        try:
            OAS31Validator(schema).validate(json.loads(instance))
        except Exception as e:
            sys.exit(f"{name}: {e}")
        count += 1
    if count == 0:
        sys.exit("no instance was given")


if __name__ == "__main__":
    main()

"""Parses a Prometheus text exposition (stdin) with prometheus_client's own parser and prints
every sample as JSON lines: {"name", "labels", "value"}. Fails (exit 1) on text the parser
rejects, so the Rust test fails too."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main() -> None:
    text = sys.stdin.read()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            print(json.dumps({"name": sample.name, "labels": sample.labels, "value": sample.value}))


if __name__ == "__main__":
    main()

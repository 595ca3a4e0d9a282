"""Parses Prometheus text exposition with the official Python client's parser.

Usage: prometheus_parse.py < metrics.txt
Prints a JSON list of samples: {"name", "labels", "value"}; exits non-zero if the text does
not parse.
"""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        samples.append({"name": sample.name, "labels": sample.labels, "value": sample.value})
print(json.dumps(samples))

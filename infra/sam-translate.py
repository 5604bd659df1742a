#!/usr/bin/env python3
"""Prints the CloudFormation JSON that the SAM transform makes of a template, offline
(aws-sam-translator, as CloudFormation runs it): what cfn-lint and the IAM table test
check, since rules such as E3505 only see resources after the transform.

    python3 infra/sam-translate.py template.yaml > translated.json
"""
import json
import os
import sys

from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


def as_packaged(template):
    """What `sam deploy` hands CloudFormation: local CodeUris become uploaded S3 objects."""
    for resource in template.get("Resources", {}).values():
        properties = resource.get("Properties") or {}
        code = properties.get("CodeUri")
        if resource.get("Type") == "AWS::Serverless::Function" and isinstance(code, str) \
                and not code.startswith("s3://"):
            properties["CodeUri"] = f"s3://packaged-artifacts/{code.strip('/')}.zip"
    return template


class NoManagedPolicies:
    """The template names no AWS managed policy, so nothing needs looking up in IAM."""

    def load(self):
        return {}


def main():
    # The transform fills in pseudo parameters such as AWS::Region; any region will do.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with open(sys.argv[1]) as f:
        template = as_packaged(yaml_parse(f.read()))
    try:
        translated = transform(template, {}, NoManagedPolicies())
    except InvalidDocumentException as e:
        for cause in e.causes:
            print(f"sam-translate: {cause.message}", file=sys.stderr)
        sys.exit(1)
    json.dump(translated, sys.stdout, indent=1, default=str)
    print()


if __name__ == "__main__":
    main()

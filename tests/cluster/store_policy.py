"""The bucket policy of the local object store (store.sh): the users of the namespaces pointed at it
may read, write, list and delete the bucket's objects, and nothing else (not its policy, not the
bucket itself). The root user, whose keys come from the AWS_* variables of `store.sh env`, writes it.

Usage: store_policy.py BUCKET ACCESS_KEY_ID...
"""

from __future__ import annotations

import json
import sys
from typing import Any

import boto3
from botocore.config import Config

OBJECT_ACTIONS = [
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
]
BUCKET_ACTIONS = ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"]


def policy(bucket: str, principals: list[str]) -> dict[str, Any]:
    who = {"AWS": sorted(set(principals))}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "NamespacesListTheBucket",
                "Effect": "Allow",
                "Principal": who,
                "Action": BUCKET_ACTIONS,
                "Resource": [f"arn:aws:s3:::{bucket}"],
            },
            {
                "Sid": "NamespacesUseItsObjects",
                "Effect": "Allow",
                "Principal": who,
                "Action": OBJECT_ACTIONS,
                "Resource": [f"arn:aws:s3:::{bucket}/*"],
            },
        ],
    }


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    bucket, principals = argv[0], argv[1:]
    # Endpoint, keys and region from the environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).
    client = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy(bucket, principals)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

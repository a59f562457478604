"""AWS's published Session Manager example policies, verbatim, decide as AWS documents them.

Sources (AWS Systems Manager User Guide, awsdocs/aws-systems-manager-user-guide):
"Quickstart default IAM policies for Session Manager"
(doc_source/getting-started-restrict-access-quickstart.md) and "Additional sample IAM policies
for Session Manager" (doc_source/getting-started-restrict-access-examples.md). Only the
documentation's callout images are left out of the JSON. A node is asked about under both of
its names, as the server does; ``arn:hatchway:…`` stands for AWS's ``arn:aws:…``.
"""

from __future__ import annotations

import pytest

from hatchway.policy import ContextValue, PolicyError, parse_policy

from .helpers import decide

# "Example 1: Restrict access to specific instances"
EXAMPLE_1 = """
{
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": [
                "ssm:StartSession"
            ],
            "Resource": [
                "arn:aws:ec2:us-east-2:123456789012:instance/i-1234567890EXAMPLE",
                "arn:aws:ec2:us-east-2:123456789012:instance/i-abcdefghijEXAMPLE",
                "arn:aws:ec2:us-east-2:123456789012:instance/i-0e9d8c7b6aEXAMPLE"
            ]
        },
        {
            "Effect": "Allow",
            "Action": [
                "ssm:TerminateSession",
                "ssm:ResumeSession"
            ],
            "Resource": [
                "arn:aws:ssm:*:*:session/${aws:username}-*"
            ]
        }
    ]
}
"""

# "Example 2: Restrict access based on instance tags" (region is the guide's placeholder)
EXAMPLE_2 = """
{
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": [
                "ssm:StartSession"
            ],
            "Resource": [
                "arn:aws:ec2:region:987654321098:instance/*"
            ],
            "Condition": {
                "StringLike": {
                    "ssm:resourceTag/Finance": [
                        "WebServers"
                    ]
                }
            }
        },
        {
            "Effect": "Allow",
            "Action": [
                "ssm:TerminateSession",
                "ssm:ResumeSession"
            ],
            "Resource": [
                "arn:aws:ssm:*:*:session/${aws:username}-*"
            ]
        }
    ]
}
"""

# Example 2, second policy: both tags required.
EXAMPLE_2_TWO_TAGS = """
{
   "Version":"2012-10-17",
   "Statement":[
      {
         "Effect":"Allow",
         "Action":[
            "ssm:StartSession"
         ],
         "Resource":"*",
         "Condition":{
            "StringLike":{
               "ssm:resourceTag/tag-key1":[
                  "tag-value1"
               ],
               "ssm:resourceTag/tag-key2":[
                  "tag-value2"
               ]
            }
         }
      }
   ]
}
"""

# "Example 3: Allow a user to end only sessions they started", method 1.
EXAMPLE_3_USERNAME = """
{
    "Version": "2012-10-17",
    "Statement": [
        {
            "Action": [
                "ssm:DescribeSessions"
            ],
            "Effect": "Allow",
            "Resource": [
                "*"
            ]
        },
        {
            "Action": [
                "ssm:TerminateSession"
            ],
            "Effect": "Allow",
            "Resource": [
                "arn:aws:ssm:*:*:session/${aws:username}-*"
            ]
        }
    ]
}
"""

# Example 3, method 2: the session's system tag aws:ssmmessages:session-id and ${aws:userid}.
EXAMPLE_3_USERID_TAG = """
{
     "Version": "2012-10-17",
     "Statement": [
         {
             "Effect": "Allow",
             "Action": [
                "ssm:TerminateSession"
             ],
             "Resource": "*",
             "Condition": {
                 "StringLike": {
                     "ssm:resourceTag/aws:ssmmessages:session-id": [
                        "${aws:userid}"
                     ]
                 }
             }
         }
     ]
}
"""

# "Example 4: Allow full (administrative) access to all sessions"
EXAMPLE_4 = """
{
    "Version": "2012-10-17",
    "Statement": [
        {
            "Action": [
                "ssm:StartSession",
                "ssm:TerminateSession",
                "ssm:ResumeSession",
                "ssm:DescribeSessions",
                "ssm:GetConnectionStatus"
            ],
            "Effect": "Allow",
            "Resource": [
                "*"
            ]
        }
    ]
}
"""

# Quickstart end user policy, tab "Amazon EC2".
QUICKSTART_EC2 = """
{
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": [
                "ssm:StartSession",
                "ssm:SendCommand"
            ],
            "Resource": [
                "arn:aws:ec2:region:987654321098:instance/i-02573cafcfEXAMPLE"
            ]
        },
        {
            "Effect": "Allow",
            "Action": [
                "ssm:GetConnectionStatus",
                "ssm:DescribeInstanceInformation"
            ],
            "Resource": "*"
        },
        {
            "Effect": "Allow",
            "Action": [
                "ssm:TerminateSession",
                "ssm:ResumeSession"
            ],
            "Resource": [
                "arn:aws:ssm:*:*:session/${aws:username}-*"
            ]
        }
    ]
}
"""

# Quickstart end user policy, tab "Session Manager and CLI": its last statement keeps the
# guide's placeholder "key-name", which the guide says to replace by a KMS key ARN. IAM
# refuses the placeholder (a Resource must be "*" or an ARN), and so do we.
QUICKSTART_CLI = """
{
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": [
                "ssm:StartSession"
            ],
            "Resource": [
                "arn:aws:ec2:region:987654321098:instance/i-02573cafcfEXAMPLE",
                "arn:aws:ssm:region:account-id:document/SSM-SessionManagerRunShell"
            ],
            "Condition": {
                "BoolIfExists": {
                    "ssm:SessionDocumentAccessCheck": "true"
                }
            }
        },
        {
            "Effect": "Allow",
            "Action": [
                "ssm:DescribeSessions",
                "ssm:GetConnectionStatus",
                "ssm:DescribeInstanceProperties",
                "ec2:DescribeInstances"
            ],
            "Resource": "*"
        },
        {
            "Effect": "Allow",
            "Action": [
                "ssm:TerminateSession",
                "ssm:ResumeSession"
            ],
            "Resource": [
                "arn:aws:ssm:*:*:session/${aws:username}-*"
            ]
        },
        {
            "Effect": "Allow",
            "Action": [
                "kms:GenerateDataKey"
            ],
            "Resource": "key-name"
        }
    ]
}
"""


def node(instance: str, region: str, account: str) -> tuple[str, ...]:
    return (
        f"arn:hatchway:ssm:{region}:{account}:managed-instance/{instance}",
        f"arn:hatchway:ec2:{region}:{account}:instance/{instance}",
    )


def session(
    session_id: str, region: str = "us-east-2", account: str = "123456789012"
) -> tuple[str]:
    return (f"arn:hatchway:ssm:{region}:{account}:session/{session_id}",)


DEV: dict[str, ContextValue] = {"aws:username": "dev-user", "aws:userid": "AIDAEXAMPLE"}

CASES: list[tuple[str, str, str, tuple[str, ...], dict[str, ContextValue], bool]] = [
    # (name, policy, action, resource aliases, context, allowed)
    (
        "1: listed node",
        EXAMPLE_1,
        "ssm:StartSession",
        node("i-abcdefghijEXAMPLE", "us-east-2", "123456789012"),
        DEV,
        True,
    ),
    (
        "1: other node",
        EXAMPLE_1,
        "ssm:StartSession",
        node("i-99999999999EXAMPLE", "us-east-2", "123456789012"),
        DEV,
        False,
    ),
    (
        "1: other region",
        EXAMPLE_1,
        "ssm:StartSession",
        node("i-abcdefghijEXAMPLE", "us-west-1", "123456789012"),
        DEV,
        False,
    ),
    ("1: own session", EXAMPLE_1, "ssm:TerminateSession", session("dev-user-0a1b2c3d"), DEV, True),
    ("1: resume own", EXAMPLE_1, "ssm:ResumeSession", session("dev-user-0a1b2c3d"), DEV, True),
    (
        "1: other's session",
        EXAMPLE_1,
        "ssm:TerminateSession",
        session("admin-0a1b2c3d"),
        DEV,
        False,
    ),
    ("1: not listed action", EXAMPLE_1, "ssm:DescribeSessions", ("*",), DEV, False),
    (
        "2: tagged node",
        EXAMPLE_2,
        "ssm:StartSession",
        node("mi-1", "region", "987654321098"),
        {**DEV, "ssm:resourceTag/Finance": "WebServers"},
        True,
    ),
    (
        "2: other tag value",
        EXAMPLE_2,
        "ssm:StartSession",
        node("mi-1", "region", "987654321098"),
        {**DEV, "ssm:resourceTag/Finance": "Databases"},
        False,
    ),
    (
        "2: untagged node",
        EXAMPLE_2,
        "ssm:StartSession",
        node("mi-1", "region", "987654321098"),
        DEV,
        False,
    ),
    (
        "2: both tags",
        EXAMPLE_2_TWO_TAGS,
        "ssm:StartSession",
        node("mi-1", "local", "1"),
        {"ssm:resourceTag/tag-key1": "tag-value1", "ssm:resourceTag/tag-key2": "tag-value2"},
        True,
    ),
    (
        "2: one tag",
        EXAMPLE_2_TWO_TAGS,
        "ssm:StartSession",
        node("mi-1", "local", "1"),
        {"ssm:resourceTag/tag-key1": "tag-value1"},
        False,
    ),
    ("3: describe", EXAMPLE_3_USERNAME, "ssm:DescribeSessions", ("*",), DEV, True),
    (
        "3: own session",
        EXAMPLE_3_USERNAME,
        "ssm:TerminateSession",
        session("dev-user-1"),
        DEV,
        True,
    ),
    (
        "3: other's session",
        EXAMPLE_3_USERNAME,
        "ssm:TerminateSession",
        session("admin-1"),
        DEV,
        False,
    ),
    # As on AWS, the pattern is a prefix: user "dev" matches the sessions of user "dev-user".
    (
        "3: prefix user",
        EXAMPLE_3_USERNAME,
        "ssm:TerminateSession",
        session("dev-user-1"),
        {"aws:username": "dev"},
        True,
    ),
    ("3: no resume", EXAMPLE_3_USERNAME, "ssm:ResumeSession", session("dev-user-1"), DEV, False),
    (
        "3: session tag",
        EXAMPLE_3_USERID_TAG,
        "ssm:TerminateSession",
        session("x"),
        {**DEV, "ssm:resourceTag/aws:ssmmessages:session-id": "AIDAEXAMPLE"},
        True,
    ),
    (
        "3: other's tag",
        EXAMPLE_3_USERID_TAG,
        "ssm:TerminateSession",
        session("x"),
        {**DEV, "ssm:resourceTag/aws:ssmmessages:session-id": "AIDAOTHER"},
        False,
    ),
    ("4: start anywhere", EXAMPLE_4, "ssm:StartSession", node("mi-1", "local", "1"), {}, True),
    ("4: any session", EXAMPLE_4, "ssm:TerminateSession", session("someone-1"), {}, True),
    ("4: not IAM", EXAMPLE_4, "hatchway:CreateUser", ("*",), {}, False),
    (
        "ec2: the node",
        QUICKSTART_EC2,
        "ssm:StartSession",
        node("i-02573cafcfEXAMPLE", "region", "987654321098"),
        DEV,
        True,
    ),
    ("ec2: status", QUICKSTART_EC2, "ssm:GetConnectionStatus", ("*",), DEV, True),
    (
        "ec2: other node",
        QUICKSTART_EC2,
        "ssm:StartSession",
        node("i-1", "region", "987654321098"),
        DEV,
        False,
    ),
]


@pytest.mark.parametrize(
    ("document", "action", "resources", "context", "allowed"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_aws_example_policies_decide_as_documented(
    document: str,
    action: str,
    resources: tuple[str, ...],
    context: dict[str, ContextValue],
    allowed: bool,
) -> None:
    assert decide(document, action=action, resources=resources, context=context).allowed is allowed


def test_quickstart_placeholder_key_name_is_refused_like_iam() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(QUICKSTART_CLI)
    assert caught.value.path == "Statement[3].Resource"
    fixed = QUICKSTART_CLI.replace(
        '"key-name"',
        '"arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-12345EXAMPLE"',
    )
    document = fixed.replace("region:account-id", "region:987654321098")
    shell = ("arn:hatchway:ssm:region:987654321098:document/SSM-SessionManagerRunShell",)
    # The document access check: allowed when the check is asked for or absent (BoolIfExists).
    for check in ({}, {"ssm:SessionDocumentAccessCheck": "true"}):
        assert decide(document, action="ssm:StartSession", resources=shell, context=check).allowed
    refused = {"ssm:SessionDocumentAccessCheck": "false"}
    assert not decide(document, action="ssm:StartSession", resources=shell, context=refused).allowed

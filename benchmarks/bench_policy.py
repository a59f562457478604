"""Policy evaluation rate: decisions per second on one core, in-process.

python benchmarks/bench_policy.py [--policies 10] [--statements 20] [--seconds 2]

A user with --policies policies of --statements statements each, written the way Session
Manager policies are (actions with wildcards, node ARNs under both names, tag conditions,
``${aws:username}`` session patterns, IP and time conditions, a Deny on production nodes),
asks a mix of requests: most match nothing or only an action, one is allowed by the last
statement of the last policy, one is explicitly denied. Prints the rate for each request and
for the whole mix. The issue's target is > 100,000 decisions/s for 10 × 20. Figures only, no
assertion on time. A last line asks about 20,000 distinct nodes, more than a document
remembers, so that every decision is computed from scratch.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from common import machine_line

from hatchway.policy import NamedPolicy, Request, evaluate, parse_policy

ACCOUNT = "123456789012"
REGION = "local"


def node(instance: str) -> tuple[str, ...]:
    return (
        f"arn:hatchway:ssm:{REGION}:{ACCOUNT}:managed-instance/{instance}",
        f"arn:hatchway:ec2:{REGION}:{ACCOUNT}:instance/{instance}",
    )


def statement(p: int, s: int, last: bool) -> dict[str, object]:
    """A varied statement; the user's one useful Allow is the very last one."""
    if last:
        return {
            "Sid": "ShellOnDevNodes",
            "Effect": "Allow",
            "Action": ["ssm:StartSession"],
            "Resource": ["arn:aws:ec2:*:*:instance/*", "arn:aws:ssm:*:*:document/SSM-*"],
            "Condition": {
                "StringEquals": {"ssm:resourceTag/Env": "dev"},
                "BoolIfExists": {"aws:SecureTransport": "true"},
            },
        }
    kind = s % 10  # each policy has two statements of each kind, as a team's policies would
    if kind == 0:
        return {"Effect": "Allow", "Action": f"ssm:Describe{s}*", "Resource": "*"}
    if kind == 1:
        return {
            "Effect": "Allow",
            "Action": ["ssm:TerminateSession", "ssm:ResumeSession"],
            "Resource": f"arn:aws:ssm:*:*:session/${{aws:username}}-team{p}{s}-*",
        }
    if kind == 2:
        return {
            "Effect": "Allow",
            "Action": "ssm:StartSession",
            "Resource": f"arn:aws:ec2:*:{ACCOUNT}:instance/mi-{p:02d}{s:02d}*",
            "Condition": {"StringLike": {"ssm:resourceTag/Team": [f"team-{p}-*", f"t{s}"]}},
        }
    if kind == 3:
        return {
            "Effect": "Allow",
            "Action": [f"hatchway:Get{s}*", f"hatchway:List{s}*"],
            "Resource": f"arn:aws:iam::{ACCOUNT}:user/team{p}/*",
            "Condition": {"IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "192.168.0.0/16"]}},
        }
    if kind == 4:
        return {
            "Sid": f"NoProd{p}x{s}",
            "Effect": "Deny",
            "Action": "ssm:StartSession",
            "Resource": f"arn:aws:ec2:*:*:instance/mi-prod{p}*",
            "Condition": {"StringEquals": {"ssm:resourceTag/Env": "prod"}},
        }
    if kind == 5:
        return {
            "Effect": "Allow",
            "Action": "ssm:SendCommand",
            "Resource": f"arn:aws:ssm:*:*:document/Team{p}-*",
            "Condition": {"DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}},
        }
    if kind == 6:
        return {
            "Effect": "Allow",
            "Action": "ssm:GetDocument",
            "Resource": f"arn:aws:ssm:*:*:document/Team{p}-{s}*",
        }
    if kind == 7:
        return {
            "Effect": "Allow",
            "Action": ["hatchway:*AccessKey*", "hatchway:GetUser"],
            "Resource": "arn:aws:iam::*:user/${aws:username}",
        }
    if kind == 8:
        return {
            "Effect": "Allow",
            "Action": "ssm:AddTagsToResource",
            "Resource": f"arn:aws:ssm:*:*:managed-instance/mi-{p:02d}*",
            "Condition": {"ForAllValues:StringLike": {"aws:TagKeys": [f"team{p}:*"]}},
        }
    return {"Effect": "Allow", "Action": "ec2:DescribeInstances", "Resource": "*"}


def build(policies: int, statements: int) -> list[NamedPolicy]:
    return [
        NamedPolicy(
            f"arn:aws:iam::{ACCOUNT}:policy/Team{p}",
            parse_policy(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        statement(p, s, last=(p, s) == (policies - 1, statements - 1))
                        for s in range(statements)
                    ],
                }
            ),
        )
        for p in range(policies)
    ]


CONTEXT = {
    "aws:username": "dev-user",
    "aws:userid": "AIDA0123456789ABCDEF",
    "aws:PrincipalTag/team": "platform",
    "aws:SourceIp": "127.0.0.1",
    "aws:CurrentTime": "2026-11-30T12:00:00Z",
    "aws:SecureTransport": "true",
    "ssm:SessionDocumentAccessCheck": "true",
}


def requests() -> list[tuple[str, Request]]:
    def tagged(env: str) -> dict[str, str]:
        return {**CONTEXT, "ssm:resourceTag/Env": env, "aws:ResourceTag/Env": env}

    return [
        ("allowed (last statement)", Request("ssm:StartSession", node("mi-0a"), tagged("dev"))),
        ("explicit deny", Request("ssm:StartSession", node("mi-prod3-1"), tagged("prod"))),
        ("no match: StartSession", Request("ssm:StartSession", node("mi-0c"), tagged("qa"))),
        (
            "no match: TerminateSession",
            Request(
                "ssm:TerminateSession",
                (f"arn:hatchway:ssm:{REGION}:{ACCOUNT}:session/other-0a1b",),
                CONTEXT,
            ),
        ),
        ("no match: CreateUser", Request("hatchway:CreateUser", ("*",), CONTEXT)),
        ("no match: DescribeSessions", Request("ssm:DescribeSessions", ("*",), CONTEXT)),
    ]


def rate(policies: list[NamedPolicy], batch: list[Request], seconds: float) -> float:
    """Decisions per second evaluating ``batch`` round-robin for about ``seconds``."""
    done = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        for request in batch:
            evaluate(policies, request)
        done += len(batch)
        now = time.perf_counter()
        if now >= end:
            return done / (now - start)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--policies", type=int, default=10)
    parser.add_argument("--statements", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    args = parser.parse_args(argv)
    import hatchway

    print(machine_line(), flush=True)
    print(f"Python {sys.version.split()[0]}, hatchway from {Path(hatchway.__file__).parent}")
    policies = build(args.policies, args.statements)
    cases = requests()
    print(f"{args.policies} policies x {args.statements} statements, {len(cases)} requests")
    for name, request in cases:
        decision = evaluate(policies, request)
        per_second = rate(policies, [request], args.seconds / 2)
        print(f"  {name:28s} {decision.outcome:13s} {per_second:>12,.0f} decisions/s")
    mixed = rate(policies, [r for _, r in cases], args.seconds)
    target = "met" if mixed > 100_000 else "NOT met"
    print(f"mix of all {len(cases)}: {mixed:,.0f} decisions/s (target > 100,000: {target})")
    # Each document remembers the statements that can apply per (action, resource); a fleet
    # larger than that memory asks about nodes it has not seen: every decision starts cold.
    tags = {**CONTEXT, "ssm:resourceTag/Env": "qa"}
    cold = [Request("ssm:StartSession", node(f"mi-{i:05d}"), tags) for i in range(20_000)]
    cold_rate = rate(policies, cold, 0)
    print(f"StartSession on 20,000 distinct nodes (cold): {cold_rate:,.0f} decisions/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

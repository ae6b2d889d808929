"""`mcp-gateway bus-user create|list|revoke|template`: the worker users of the embedded NATS.

    mcp-gateway bus-user create tickets --tools-subjects support.tickets.create [--resources x] [--env-file F]
    mcp-gateway bus-user list [--json]
    mcp-gateway bus-user revoke tickets
    mcp-gateway bus-user template tickets --tools-subjects support.tickets.create   # for a NATS of your own

A new user's password is printed once (or written to `--env-file`, mode 0600, as MCPGW_NATS_USER and
MCPGW_NATS_PASSWORD lines, for `set -a; . FILE`), and only its bcrypt hash is kept. The users are kept in the
embedded NATS's data folder (`<data_dir>/nats/auth.json`); a running server reloads them at once (its config,
SIGHUP): a new user may connect, a revoked one is disconnected. Each may consume the commands of its tool
subjects only and publish only their events (mcp_gateway/embedded/auth.py, `worker_permissions`).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from mcp_gateway_worker.contract import Subjects

from mcp_gateway.embedded import BusAuth, running_nats_pid, worker_permissions
from mcp_gateway.errors import GatewayError
from mcp_gateway.settings import Settings

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Register `bus-user` and its actions on the CLI's sub-command parsers."""
    users = sub.add_parser("bus-user", help="worker users of the embedded NATS: create, list, revoke, template")
    actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="a worker user for some tool subjects; prints its password once")
    _subjects_arguments(create)
    create.add_argument(
        "--env-file", type=Path, metavar="FILE", help="write MCPGW_NATS_USER and MCPGW_NATS_PASSWORD there (0600)"
    )
    listing = actions.add_parser("list", help="the worker users and what each may serve")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    revoke = actions.add_parser("revoke", help="remove a worker user (its connections are closed)")
    revoke.add_argument("name")
    template = actions.add_parser("template", help="print the NATS users block for a NATS of your own")
    _subjects_arguments(template)


def _subjects_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the user name: 1 to 64 of A-Z a-z 0-9 _ -")
    parser.add_argument(
        "--tools-subjects",
        required=True,
        action="append",
        metavar="A,B",
        help="the tool subjects it serves (the `subject` of each tool's config), comma-separated",
    )
    parser.add_argument(
        "--resources", action="append", default=[], metavar="X,Y", help="resource template subjects it reads"
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Do the action; the exit code."""
    nats_dir = settings.data_dir / "nats"
    if args.action == "template":
        return _template(settings, args)
    if settings.nats_url is not None:
        raise GatewayError(
            f"bus users are the embedded NATS's, and nats_url is set ({settings.source}): on a NATS of your own, "
            "add the users to its config (`mcp-gateway bus-user template NAME --tools-subjects ...` prints them)"
        )
    auth = BusAuth(nats_dir)
    match args.action:
        case "create":
            user, password = auth.create(args.name, settings.subject_prefix, args.tools_subjects, args.resources)
            print(
                f"created bus user {user.name!r}: tool subjects {', '.join(user.tool_subjects)}; "
                f"resources {', '.join(user.resources) or 'none'}; prefix {user.prefix}"
            )
            if args.env_file is not None:
                _env_file(args.env_file, user.name, password)
                print(f"its credentials are in {args.env_file} (mode 0600): `set -a; . {args.env_file}; set +a`")
            else:
                print(f"password: {password}")
                print(
                    "(shown once: only its bcrypt hash is kept.) A worker connects with --user and --password, or "
                    "MCPGW_NATS_USER and MCPGW_NATS_PASSWORD, and the URL of `mcp-gateway nats-url`."
                )
        case "revoke":
            user = auth.revoke(args.name)
            print(f"revoked bus user {user.name!r}")
        case _:
            found = auth.users()
            if args.json:
                print(json.dumps([u.view() for u in found], indent=2))
                return 0
            if not found:
                print(f"no bus users in {nats_dir} (mcp-gateway bus-user create NAME --tools-subjects ...)")
            for u in found:
                reads = f"  resources {','.join(u.resources)}" if u.resources else ""
                print(
                    f"{u.name:<24} {u.created_at}  prefix {u.prefix}  tool subjects {','.join(u.tool_subjects)}{reads}"
                )
            return 0
    print(auth.reload_running(running_nats_pid(nats_dir), nats_dir / "nats.log"))
    return 0


def _env_file(path: Path, name: str, password: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, f"MCPGW_NATS_USER={name}\nMCPGW_NATS_PASSWORD={password}\n".encode())
    finally:
        os.close(fd)


def _template(settings: Settings, args: argparse.Namespace) -> int:
    """The users block for a NATS of one's own: the gateway's user and this worker's, passwords to fill in."""
    from mcp_gateway.embedded.auth import subject_list

    subjects = Subjects(settings.subject_prefix)
    tools = subject_list(args.tools_subjects, "tool subject")
    reads = subject_list(args.resources, "resource subject")
    permissions = worker_permissions(args.name, subjects, tools, reads)
    print("# nats-server config: the gateway's user may do anything; the worker's, only what serving its tools needs.")
    print("# Passwords: bcrypt hashes (`nats server passwd`), or plain text. Workers connect with inbox_prefix")
    print(f"# _INBOX_{args.name} (the Python SDK and the Node worker do, given the user).")
    print("authorization {")
    print("  users = [")
    print('    {"user": "mcpgw-gateway", "password": "<bcrypt hash of the gateway\'s password>"}')
    user = {"user": args.name, "password": f"<bcrypt hash of {args.name}'s password>", "permissions": permissions}
    body = json.dumps(user, indent=2).replace("\n", "\n    ")
    print(f"    {body}")
    print("  ]")
    print("}")
    return 0

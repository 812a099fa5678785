"""`mhp service ...`, `mhp service external ...` and `mhp port ...`.

mhp service create NAME (--image REF | --build DIR [--dockerfile F] [--build-arg K=V]...)
                    [--command "CMD ARGS"] [--env K=V]... [--secret-env K=V]... [--label K=V]...
                    [--port NAME[=CONTAINER][:HOST][/udp][@0.0.0.0]]... [--network host|none|NET]
                    [--memory 256m] [--cpus 0.5] [--pids N] [--restart POLICY] [--user U]
                    [--health-cmd "SHELL CMD"] [--health-interval S] [--writable-root]
                    [--cap-add CAP]... [--cap-drop CAP]... [--pull missing|always|never] [--stopped]
                    [--auto-proxy [HOSTNAME]] [--no-https] [--no-preserve-host]
                    [--allow-user LOGIN]... [--allow-org ORG]... [--scope S]... [--resource-path /mcp]
mhp service list | show NAME | delete NAME | start NAME | stop NAME | restart NAME | stats NAME
mhp service update NAME [the create options]     changes only what is given (a new generation)
mhp service logs NAME [-f] [--tail N] [--since 10m|UNIX] [--timestamps]
mhp service external create NAME URL [--description TEXT] | list | show NAME | update NAME URL | delete NAME
mhp port list | check PORT [--udp] | release PORT [--udp]
mhp port allocate [--port P] [--udp] [--public] [--purpose TEXT]
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from . import render
from .client import ApiClient, CliError

SERVICES = "/api/v1/services/"
EXTERNAL = "/api/v1/services/external/"
PORTS = "/api/v1/ports/"
PORT_SPEC = re.compile(
    r"^(?P<name>[a-z][a-z0-9-]*)(?:=(?P<container>\d+))?(?::(?P<host>\d+))?(?:/(?P<protocol>tcp|udp))?"
    r"(?:@(?P<bind>127\.0\.0\.1|0\.0\.0\.0))?$"
)

Command = Callable[..., argparse.ArgumentParser]


def _key_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _port(text: str) -> dict[str, Any]:
    match = PORT_SPEC.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            "expected NAME[=CONTAINER_PORT][:HOST_PORT][/udp][@0.0.0.0] (e.g. http, web=8080, dns=53/udp), "
            f"got {text!r}"
        )
    port: dict[str, Any] = {"name": match["name"]}
    if match["container"]:
        port["container_port"] = int(match["container"])
    if match["host"]:
        port["host_port"] = int(match["host"])
    if match["protocol"]:
        port["protocol"] = match["protocol"]
    if match["bind"]:
        port["bind"] = match["bind"]
    return port


def _item(collection: str, name: str) -> str:
    return collection + quote(name, safe="")


# ---- services


def _spec(args: argparse.Namespace) -> dict[str, Any]:
    """The spec fields the user gave (create: the body; update: the PATCH)."""
    spec: dict[str, Any] = {}
    if args.image is not None:
        spec.update(image=args.image, build=None)
    if args.build is not None:
        build: dict[str, Any] = {"context": args.build, "args": dict(args.build_arg or [])}
        if args.dockerfile:
            build["dockerfile"] = args.dockerfile
        spec.update(build=build, image=None)
    if args.command is not None:
        spec["command"] = shlex.split(args.command) if args.command else None
    if args.env is not None or args.secret_env is not None:
        environment: dict[str, Any] = dict(args.env or [])
        environment.update({k: {"secret": True, "value": v} for k, v in args.secret_env or []})
        spec["environment"] = environment
    if args.label is not None:
        spec["labels"] = dict(args.label)
    if args.port is not None:
        spec["ports"] = args.port
    simple = {
        "network_mode": args.network,
        "memory_limit": args.memory,
        "cpu_limit": args.cpus,
        "pids_limit": args.pids,
        "restart_policy": args.restart,
        "user": args.user,
        "cap_add": args.cap_add,
        "cap_drop": args.cap_drop,
        "pull": args.pull,
    }
    spec.update({k: v for k, v in simple.items() if v is not None})
    if args.writable_root is not None:
        spec["read_only_root"] = not args.writable_root
    if args.health_cmd is not None:
        spec["healthcheck"] = (
            {"test": ["CMD-SHELL", args.health_cmd], "interval_seconds": args.health_interval}
            if args.health_cmd
            else None
        )
    return spec


def service_create(api: ApiClient, args: argparse.Namespace) -> Any:
    if (args.image is None) == (args.build is None):
        raise CliError("give exactly one of --image and --build")
    body: dict[str, Any] = {"name": args.name, **_spec(args), "start": not args.stopped}
    if args.auto_proxy is not None:
        proxy: dict[str, Any] = {"enable_https": args.https, "preserve_host_header": args.preserve_host}
        if args.auto_proxy:
            proxy["hostname"] = args.auto_proxy
        if args.allow_user or args.allow_org:
            auth: dict[str, Any] = {
                "allowed_users": args.allow_user or [],
                "allowed_orgs": args.allow_org or [],
            }
            if args.scope:
                auth["required_scopes"] = args.scope
            proxy["auth"] = auth
            proxy["resource"] = {"path": args.resource_path, "scopes_supported": args.scope or ["mcp"]}
        body["auto_proxy"] = proxy
    elif args.allow_user or args.allow_org:
        raise CliError("--allow-user and --allow-org protect the service's proxy: add --auto-proxy")
    return api.request("POST", SERVICES, body)


def service_update(api: ApiClient, args: argparse.Namespace) -> Any:
    changes = _spec(args)
    if not changes:
        raise CliError("nothing to update: give at least one option (see mhp service update --help)")
    etag = None
    if "environment" in changes:
        # --env/--secret-env add to what is there; secrets already stored are kept as they are. The PATCH
        # carries the read's ETag, so a concurrent change to the environment is not silently overwritten.
        current, etag = api.read(_item(SERVICES, args.name))
        merged = {
            k: ({"secret": True} if isinstance(v, dict) else v) for k, v in current["environment"].items()
        }
        merged.update(changes["environment"])
        changes["environment"] = merged
    return api.request("PATCH", _item(SERVICES, args.name), changes, if_match=etag)


def service_logs(api: ApiClient, args: argparse.Namespace) -> Any:
    params: dict[str, Any] = {"tail": args.tail, "timestamps": str(args.timestamps).lower()}
    if args.since:
        params["since"] = args.since
    path = _item(SERVICES, args.name) + "/logs"
    args.printed = True
    if args.follow:
        params["follow"] = "true"
        try:
            for chunk in api.stream_text(path, params):
                sys.stdout.write(chunk)
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass
        return None
    text = api.text(path, params)
    if args.json:
        render.print_json({"service": args.name, "logs": text})
    else:
        sys.stdout.write(text)
    return None


def _add_spec_options(parser: argparse.ArgumentParser) -> None:
    image = parser.add_mutually_exclusive_group()
    image.add_argument("--image", metavar="REF", help="image to run (pulled when missing, see --pull)")
    image.add_argument(
        "--build", metavar="DIR", help="build from DIR under the build root (DOCKER_BUILD_ROOT)"
    )
    parser.add_argument("--dockerfile", metavar="FILE", help="Dockerfile inside DIR (default Dockerfile)")
    parser.add_argument("--build-arg", metavar="K=V", type=_key_value, action="append")
    parser.add_argument(
        "--command", metavar="'CMD ARGS'", help="replaces the image's command ('' = the image's)"
    )
    parser.add_argument("--env", metavar="K=V", type=_key_value, action="append", help="environment variable")
    parser.add_argument(
        "--secret-env", metavar="K=V", type=_key_value, action="append", help="stored encrypted, never shown"
    )
    parser.add_argument("--label", metavar="K=V", type=_key_value, action="append")
    parser.add_argument(
        "--port",
        metavar="SPEC",
        type=_port,
        action="append",
        help="NAME[=CONTAINER][:HOST][/udp][@0.0.0.0]; the host port is allocated when left out",
    )
    parser.add_argument("--network", metavar="MODE", help="host, none or a named network")
    parser.add_argument(
        "--memory", metavar="SIZE", help="memory limit, e.g. 256m (exceeding it is an OOM kill)"
    )
    parser.add_argument("--cpus", metavar="N", type=float, help="CPU limit, e.g. 0.5")
    parser.add_argument("--pids", metavar="N", type=int, help="process limit")
    parser.add_argument(
        "--restart", metavar="POLICY", help="no, always, unless-stopped (default), on-failure[:N]"
    )
    parser.add_argument("--user", metavar="UID[:GID]")
    parser.add_argument(
        "--health-cmd", metavar="'SHELL CMD'", help="healthcheck run in the container ('' = none)"
    )
    parser.add_argument("--health-interval", metavar="SECONDS", type=float, default=30.0)
    parser.add_argument(
        "--writable-root",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="writable root filesystem (default: read-only with a small writable /tmp)",
    )
    parser.add_argument("--cap-add", metavar="CAP", action="append")
    parser.add_argument("--cap-drop", metavar="CAP", action="append", help="default: ALL")
    parser.add_argument("--pull", choices=["missing", "always", "never"])


def add_service_commands(groups: Any, command: Command) -> None:
    service = groups.add_parser("service", help="Docker-managed and external services").add_subparsers(
        dest="action", required=True
    )
    sub = command(service, "create", service_create, render.SERVICE_COLUMNS, help_text="run a container")
    sub.add_argument("name", help="service name: a lower-case DNS label")
    _add_spec_options(sub)
    sub.add_argument("--stopped", action="store_true", help="create it without starting it")
    sub.add_argument(
        "--auto-proxy",
        nargs="?",
        const="",
        metavar="HOSTNAME",
        help="also create its proxy (default hostname NAME.BASE_DOMAIN)",
    )
    sub.add_argument("--https", action=argparse.BooleanOptionalAction, default=True, help="proxy on HTTPS")
    sub.add_argument(
        "--preserve-host",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="send the public Host upstream (--no-preserve-host for MCP SDK servers on loopback)",
    )
    sub.add_argument("--allow-user", metavar="LOGIN", action="append", help="protect the proxy with OAuth")
    sub.add_argument("--allow-org", metavar="ORG", action="append")
    sub.add_argument("--scope", metavar="SCOPE", action="append", help="required scope (default: mcp)")
    sub.add_argument("--resource-path", metavar="PATH", default="/mcp", help="protected resource path")
    command(service, "list", lambda api, a: api.request("GET", SERVICES), render.SERVICE_COLUMNS, many=True)
    for action, method, suffix, help_text in (
        ("show", "GET", "", "the service, its state and endpoint"),
        ("start", "POST", "/start", "start it"),
        ("stop", "POST", "/stop", "stop it (the container and its logs are kept)"),
        ("restart", "POST", "/restart", "restart its container"),
        ("delete", "DELETE", "", "delete it with its container, ports and auto proxy"),
    ):
        sub = command(
            service,
            action,
            lambda api, a, m=method, s=suffix: api.request(m, _item(SERVICES, a.name) + s),
            render.SERVICE_DETAIL_COLUMNS if method != "DELETE" else [],
            help_text=help_text,
        )
        sub.add_argument("name")
    sub = command(
        service, "update", service_update, render.SERVICE_DETAIL_COLUMNS, help_text="change options"
    )
    sub.add_argument("name")
    _add_spec_options(sub)
    sub = command(
        service,
        "stats",
        lambda api, a: api.request("GET", _item(SERVICES, a.name) + "/stats"),
        render.STATS_COLUMNS,
        help_text="CPU, memory, network and block IO, restarts",
    )
    sub.add_argument("name")
    sub = command(service, "logs", service_logs, [], help_text="the container's output")
    sub.add_argument("name")
    sub.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    sub.add_argument("--tail", type=int, default=100, metavar="N", help="lines from the end (default 100)")
    sub.add_argument("--since", metavar="WHEN", help="Unix time or a duration back: 10m, 2h")
    sub.add_argument("--timestamps", action="store_true")
    sub.set_defaults(printed=False)

    external = service.add_parser("external", help="names for URLs: targets service://NAME").add_subparsers(
        dest="external_action", required=True
    )
    columns = render.EXTERNAL_SERVICE_COLUMNS
    sub = command(
        external,
        "create",
        lambda api, a: api.request(
            "POST", EXTERNAL, {"name": a.name, "url": a.service_url, "description": a.description}
        ),
        columns,
    )
    sub.add_argument("name")
    sub.add_argument("service_url", metavar="URL")  # not `url`: --url names the API
    sub.add_argument("--description", default="")
    command(external, "list", lambda api, a: api.request("GET", EXTERNAL), columns, many=True)
    sub = command(external, "show", lambda api, a: api.request("GET", _item(EXTERNAL, a.name)), columns)
    sub.add_argument("name")
    sub = command(
        external,
        "update",
        lambda api, a: api.request(
            "PUT", _item(EXTERNAL, a.name), {"url": a.service_url, "description": a.description}
        ),
        columns,
        help_text="point the name at another URL (every proxy and route using it follows)",
    )
    sub.add_argument("name")
    sub.add_argument("service_url", metavar="URL")  # not `url`: --url names the API
    sub.add_argument("--description", default="")
    sub = command(external, "delete", lambda api, a: api.request("DELETE", _item(EXTERNAL, a.name)), [])
    sub.add_argument("name")


# ---- ports


def port_allocate(api: ApiClient, args: argparse.Namespace) -> Any:
    body: dict[str, Any] = {
        "protocol": "udp" if args.udp else "tcp",
        "bind": "0.0.0.0" if args.public else "127.0.0.1",
        "purpose": args.purpose,
    }
    if args.port is not None:
        body["port"] = args.port
    return api.request("POST", PORTS, body)


def _port_path(args: argparse.Namespace, suffix: str = "") -> str:
    return f"{PORTS}{args.port}{suffix}?protocol={'udp' if args.udp else 'tcp'}"


def add_port_commands(groups: Any, command: Command) -> None:
    port = groups.add_parser("port", help="host port allocations").add_subparsers(
        dest="action", required=True
    )
    command(port, "list", lambda api, a: api.request("GET", PORTS), render.PORT_COLUMNS, many=True)
    sub = command(
        port,
        "check",
        lambda api, a: api.request("GET", _port_path(a, "/check")),
        render.PORT_CHECK_COLUMNS,
        help_text="could it be allocated now?",
    )
    sub.add_argument("port", type=int)
    sub.add_argument("--udp", action="store_true")
    sub = command(port, "allocate", port_allocate, render.PORT_COLUMNS, help_text="allocate a host port")
    sub.add_argument("--port", type=int, help="this port (default: any free one of PORT_RANGES)")
    sub.add_argument("--udp", action="store_true")
    sub.add_argument("--public", action="store_true", help="bind 0.0.0.0 (admin, or the public-ports grant)")
    sub.add_argument("--purpose", default="", help="what it is for (shown in lists)")
    sub = command(port, "release", lambda api, a: api.request("DELETE", _port_path(a)), [])
    sub.add_argument("port", type=int)
    sub.add_argument("--udp", action="store_true")

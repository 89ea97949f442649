"""``vmforge plugins``: what is installed, from metadata (nothing is imported)."""

from __future__ import annotations

import argparse
import json
import sys

from vmforge.plugins import GROUPS, PluginError, registry


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("plugins", help="list installed plugins",
                       description="List installed plugins: kind, name, distribution, version.")
    p.add_argument("--kind", choices=list(GROUPS), help="only this kind")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--check", action="store_true",
                   help="import every plugin and report the ones that fail")
    p.add_argument("--hooks", action="store_true", help="list hooks and who implements them")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    reg = registry()
    if args.hooks:
        impls = reg.hook_implementers()
        if args.json:
            print(json.dumps(impls, indent=2))
        else:
            for hook, who in impls.items():
                print(f"{hook}: {', '.join(who) or '-'}")
        return 0
    entries = reg.entries(args.kind, include_blocked=True)
    conflicts = {key for key in reg.conflicts()}
    errors: dict[tuple[str, str], str] = {}
    if args.check:
        for kind in ([args.kind] if args.kind else list(GROUPS)):
            if kind == "hooks":
                try:
                    reg.plugin_manager  # noqa: B018 - loads and validates hook modules
                except PluginError as exc:
                    errors[(exc.info.kind, exc.info.name) if hasattr(exc, "info") else
                           ("hooks", "?")] = str(exc)
                continue
            for name, result in reg.load_all(kind).items():
                if isinstance(result, PluginError):
                    errors[(kind, name)] = str(result)

    def status(e) -> str:  # type: ignore[no-untyped-def]
        if e.blocked:
            return "blocked"
        if (e.kind, e.name) in conflicts:
            return "conflict"
        if (e.kind, e.name) in errors:
            return "error"
        return "ok"

    if args.json:
        rows = []
        for e in entries:
            row = e.to_json()
            row["status"] = status(e)
            if e.kind == "hooks":  # the commands it declares (None: every one)
                row["commands"] = reg.hook_commands(e)
            if (e.kind, e.name) in errors:
                row["error"] = errors[(e.kind, e.name)]
            rows.append(row)
        print(json.dumps(rows, indent=2))
    else:
        if not entries:
            print("no plugins installed")
        else:
            width = max(len(e.name) for e in entries)
            dwidth = max(len(e.dist) for e in entries)
            print(f"{'KIND':8} {'NAME':{width}} {'DISTRIBUTION':{dwidth}} VERSION  STATUS")
            for e in entries:
                print(f"{e.kind:8} {e.name:{width}} {e.dist:{dwidth}} {e.version:8} {status(e)}")
        for msg in errors.values():
            print(f"error: {msg}", file=sys.stderr)
        for (kind, name), infos in reg.conflicts().items():
            print(f"warning: {kind} name {name!r} is claimed by "
                  f"{', '.join(i.dist for i in infos)}", file=sys.stderr)
    return 1 if errors else 0

"""`tcpstack cleanup [--dry-run]`: remove what tcpstack processes that died left behind.

    tcpstack cleanup --dry-run   # list only
    tcpstack cleanup             # remove

Two kinds of leftovers, both only tcpstack's own (see stack/link/netns.py and stack/cli/control.py):

* network namespaces tcpstack created (they carry an owner record under /run/tcpstack/netns/)
  whose creating process is gone, e.g. after `kill -9` of `serve` or `demo`; whatever still runs
  inside them (load generators) goes with them;
* control sockets /run/tcpstack/*.sock that nothing listens on any more.

Namespaces tcpstack did not create are never listed nor touched, even if their name looks like
ours. Every start of `serve`, `demo` and `bench` does the same for the namespaces on its own.
"""

from __future__ import annotations

import argparse

from stack.cli.common import CliError, Subcommands, require_kernel_link
from stack.cli.control import ControlError, remove_stale_socket, stale_sockets
from stack.link.netns import NetnsError, reap_stale, stale_namespaces


def register(sub: Subcommands) -> None:
    p = sub.add_parser("cleanup", help="list and remove stale namespaces and control sockets of dead tcpstacks",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    require_kernel_link()
    namespaces = stale_namespaces()
    try:
        sockets = stale_sockets()
    except ControlError as exc:
        raise CliError(str(exc)) from None
    if not namespaces and not sockets:
        print("nothing to clean up")
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for ns in namespaces:
        what = "network namespace" if ns.exists else "owner record of vanished network namespace"
        print(f"{verb} {what} {ns.name} (created by pid {ns.pid}, which is gone)")
    for path in sockets:
        print(f"{verb} control socket {path} (nothing listens on it)")
    if args.dry_run:
        return 0
    try:
        reap_stale()
    except NetnsError as exc:
        raise CliError(str(exc)) from None
    failed = [ns.name for ns in stale_namespaces() if ns.exists]
    for path in sockets:
        remove_stale_socket(path)
    if failed:
        raise CliError(f"could not delete network namespace(s) {', '.join(failed)}")
    return 0

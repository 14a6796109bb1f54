"""The command line: ``tinymnist COMMAND ...`` (also ``python -m tinymnist``). It only parses and dispatches:
each command is a module of ``tinymnist.commands``; exit codes are ``tinymnist.errors``'.

``main(argv)`` returns the exit code: 0 pass; 1 a gate failed, a run diverged, or a comparison found a
regression; 2 bad usage, bad data or a missing dependency (one line); 3 an internal error (one line, and the
saved traceback's path); 130 Ctrl-C; 143 SIGTERM. Only stdlib modules are imported before a command runs, and
every handler here is import-free, so a Ctrl-C while torch is loading ends as 130 with one line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from tinymnist import sources
from tinymnist.commands import NAMES, _args
from tinymnist.errors import (
    EXIT_GATE,
    EXIT_INTERRUPTED,
    EXIT_PIPE,
    EXIT_TERMINATED,
    EXIT_USAGE,
    GateFailed,
    Terminated,
    UserError,
    internal_error,
    raised_by_user,
)
from tinymnist.shell import console

PROG = "tinymnist"


class _Once(argparse.Action):
    """An option given twice is a usage error, not its last value: ``compare --steps 1 --steps 2`` compared step
    2 only and passed over step 1's regression with exit 0 (the seventh independent sweep of issue 30). Options
    meant to repeat say so (``--set``, ``--variant``: ``action="append"``). An on/off flag too (``--dry-run
    --dry-run``, the eighth sweep): one rule for every option."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = namespace.__dict__.setdefault("_options_given", set())
        if self.dest in given:
            raise argparse.ArgumentError(self, "given twice; give it once (a list goes after one flag)")
        given.add(self.dest)
        super().__call__(parser, namespace, values, option_string)


class _StoreOnce(_Once, argparse._StoreAction):
    pass


class _StoreTrueOnce(_Once, argparse._StoreTrueAction):
    pass


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, like every other error (argparse prints the usage block first);
    the usage is a --help away, and an option given twice is refused (``_StoreOnce``). Subcommands' parsers are
    of the same class."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("action", "store", _StoreOnce)
        self.register("action", None, _StoreOnce)
        self.register("action", "store_true", _StoreTrueOnce)

    def error(self, message: str):
        # one line, whatever a path in it holds (the ninth independent sweep: a "\\n" and a raw byte from --out)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {console(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="tinymnist: tiny CNNs on MNIST, gated.")
    p.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    for name in NAMES:
        importlib.import_module(f"tinymnist.commands.{name}").add_parser(sub)
    return p


def _version() -> str:
    """tinymnist's version and the torch it runs on, read from the installed metadata: importing torch for
    --version would cost seconds."""
    from importlib import metadata

    def installed(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:  # run from a checkout that was never installed
            return "unknown (not installed)"

    return f"{installed('tinymnist')} (torch {installed('torch')})"


def _exit_at_once(signum, frame) -> None:
    # Until a command installs its own handlers (training, bisect: tinymnist.runner.sigterm_as_interrupt), a
    # Ctrl-C or SIGTERM ends the process here. Raised as KeyboardInterrupt instead, it lands inside whatever
    # import is running (torch, numpy, scipy load for seconds), which some libraries half-swallow: measured on
    # a fresh clone, 5 and 4 of 24 interrupts in the first second (two runs) ended as exit 3 (numpy left
    # half-imported, then a RecursionError) or as a death by SIGINT after the message was printed (-2);
    # `python -m tools.interrupts` measures it (24 of 24 end with 130 since).
    print(f"\ninterrupted; no result was being written{_again}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED)


_running = False  # a command is running in this process
# What an interrupt before a command's own handlers prints to go on: a train interrupted while it reads the data
# (seconds to minutes, before any seed starts) is continued by the resume command, as one interrupted later is.
_again = ""


def main(argv: list[str] | None = None) -> int:
    global _running, _again
    if _running:
        # User code (a builder pointed at tinymnist.cli:main, a plugin) called the command line from inside a
        # command: it would parse this process's argv again and recurse. Raised, so the user code's fence names it.
        raise RuntimeError("tinymnist's command line was called from inside a tinymnist command; it cannot nest")
    try:
        previous = {s: signal.signal(s, _exit_at_once) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread (an embedding application): leave its signals alone
        previous = {}
    _running = True
    try:
        code = _main(argv)
        if code == EXIT_USAGE:
            _args.remove_empty_made()
        return code
    except KeyboardInterrupt as e:  # raised by code, or by a command's own handler after it restored ours
        print(f"\ninterrupted; no result was being written{_again}", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(e, Terminated) else EXIT_INTERRUPTED
    finally:
        _running, _again = False, ""
        _args.MADE.clear()  # this command's own: a later command in this process takes back only its own
        for s, h in previous.items():
            signal.signal(s, h)


def _main(argv: list[str] | None) -> int:
    global _again
    from tinymnist.threads import prepare_process

    prepare_process()  # before torch is imported: its OpenMP threads read the wait policy once, at start
    sources.watch()  # before any user code: the files a run executes are what its commit must hold
    for stream in (sys.stdout, sys.stderr):
        # Paths that are not UTF-8 arrive as surrogate escapes: print them back as the bytes they were.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            # Line-buffered: a log file (CI) gets each line when it is printed, not when the buffer fills.
            reconfigure(errors="surrogateescape", line_buffering=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    # The command's name for messages, before parsing has said which it is.
    name = next((a for a in argv if a in NAMES), "")
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # argparse has printed usage and the error
            return int(e.code or 0)
        args._argv = argv
        name = args.command
        command = importlib.import_module(f"tinymnist.commands.{args.command}")
        # what an interrupt before the command's own handlers prints: each command says how it goes on, if it does
        _again = command.again(argv) if hasattr(command, "again") else ""
        return command.run(args)
    except (UserError, GateFailed) as e:
        if raised_by_user(e):  # the user's code raised one of ours: its error, not our verdict
            return _failed(name, e)
        if isinstance(e, UserError):
            print(f"{PROG} {name}: error: {console(e)}", file=sys.stderr)  # one line, whatever a name holds
            return EXIT_USAGE
        print(f"GATE FAILED: {console(e)}", file=sys.stderr)
        return EXIT_GATE
    except KeyboardInterrupt:
        raise
    except BaseException as e:
        return _failed(name, e)


def _failed(name: str, e: BaseException) -> int:
    """What no command handled. Raised in the user's code (a model's forward, a module they wrote): exit 2 naming
    it. Anything but an Exception (SystemExit, GeneratorExit) is only ever raised by user code here: our
    commands return their codes, so a user's sys.exit(0) in a forward pass must not end tinymnist with 0, a
    silent pass. Otherwise a missing dependency (exit 2), a closed stdout (141) or a bug of ours (exit 3)."""
    from tinymnist.errors import said, user_code_at

    found = user_code_at(e)
    if found or not isinstance(e, Exception):
        where, e = found or ("", e)
        text = said(e)
        print(
            f"{PROG} {name}: error: user code{' at ' + console(where) if where else ''} raised {console(text)}; "
            "fix it (a model's or plugin's code, not tinymnist's)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if isinstance(e, ImportError):  # a dependency missing or broken (also while parsing): the environment's fault
        missing = e.name or str(e)
        print(
            f"{PROG} {name}: error: cannot import {missing} ({e}); reinstall it: pip install 'tinymnist[all]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if isinstance(e, BrokenPipeError) and _stdout_gone():  # not another pipe (a subprocess's): that is a bug
        # `tinymnist models | head -2`: the reader has all it wanted. Quiet, as a command SIGPIPE ends; stdout
        # goes to /dev/null so that the interpreter's last flush cannot fail again on the way out.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE
    return internal_error(PROG, name, e)  # a bug, not a verdict: exit 3, one line, the traceback kept in a file


def _stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (poll says POLLERR on its write end)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no real file behind stdout (captured by a test)
        return False

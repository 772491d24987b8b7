"""The ``edge-mer`` console script: one subcommand per module, registered by name.

Only this entry point configures logging.  User errors (:class:`EdgeMerError`)
print as one line on stderr and exit 2, with no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence

from edge_mer import __version__
from edge_mer.errors import EdgeMerError

log = logging.getLogger(__name__)

#: subcommand -> module with ``add_arguments(parser)``, ``run(args) -> int`` and a docstring.
SUBCOMMANDS: dict[str, str] = {
    "info": "edge_mer.cli.info",
    "run": "edge_mer.cli.run",
    "bench": "edge_mer.cli.bench",
    "adapt": "edge_mer.cli.adapt",
    "fleet": "edge_mer.cli.fleet",
}
#: Host tools add subcommands through this entry-point group (``edge-mer export`` comes from
#: edge_mer_export), so the device runtime never imports them.
PLUGIN_GROUP = "edge_mer.commands"


def _plugins() -> dict[str, str]:
    import importlib.metadata  # lazy: 80 ms, paid after the signal handlers are in place

    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP)
            if ep.name not in SUBCOMMANDS}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; a host-tool subcommand is imported only when ``argv`` chooses it."""
    parser = argparse.ArgumentParser(prog="edge-mer", description="Multimodal emotion recognition at the edge.")
    parser.add_argument("--version", action="version", version=f"edge-mer {__version__}")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log verbosity on stderr (default: WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    words = set(sys.argv[1:] if argv is None else argv)
    plugins = _plugins()
    for name, module_name in {**SUBCOMMANDS, **plugins}.items():
        if name in plugins and name not in words:
            # Not chosen: list it without importing the host tool into the device runtime.
            sub.add_parser(name, help=f"host tool ({module_name}); see edge-mer {name} --help")
            continue
        module = importlib.import_module(module_name)
        summary = (module.__doc__ or "").strip().splitlines()[0]
        child = sub.add_parser(name, help=summary, description=summary)
        module.add_arguments(child)
        child.set_defaults(_run=module.run)
    return parser


class _SignalExit:
    """The SIGINT/SIGTERM handler until a command installs its own: exit now, without a traceback.

    For the daemon (``run``) a stop is its normal end, exit 0; any other
    command was interrupted, so it exits 128 + the signal number (130, 143)
    and a half-written export or benchmark never looks like a success.
    :attr:`code` remembers the exit code once a signal came.
    """

    def __init__(self, daemon: bool) -> None:
        self.daemon = daemon
        self.code: int | None = None

    def __call__(self, signum: int, _frame: object) -> None:
        self.code = 0 if self.daemon else 128 + signum
        raise SystemExit(self.code)


def _stdout_gone() -> int:
    """The reader of stdout went away (``edge-mer ... | head``): stop quietly, as Unix tools do."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # later flushes go nowhere, silently
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code.

    SIGINT and SIGTERM end any command without a traceback from the first
    line on (see :class:`_SignalExit`); ``edge-mer run`` replaces this with its
    own orderly stop. The previous handlers are restored on return.
    """
    words = set(sys.argv[1:] if argv is None else argv)
    previous = {}
    handler = _SignalExit(daemon="run" in words)
    if threading.current_thread() is threading.main_thread():  # signal handlers can only be set there
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _main(argv)
    except ImportError:
        # A stop that lands while a C extension initialises (onnxruntime's pybind module) comes
        # back as that import's ImportError: it is still the stop, not a broken install.
        if handler.code is not None:
            return handler.code
        raise
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _quiet_native_logs(level: str) -> None:
    """Below DEBUG, keep OpenCV's own C++ log lines (``[ WARN:0@0.01] global cap_v4l.cpp:914 ...``) off stderr.

    A camera that cannot be opened already fails with edge-mer's one-line
    SensorError; OpenCV's warnings about each backend it tried only bury it.
    An ``OPENCV_LOG_LEVEL`` the user set wins. (PortAudio's ALSA/JACK output is
    silenced where the microphone calls it: :mod:`edge_mer.sources.native_stderr`.)
    """
    if level == "DEBUG" or "OPENCV_LOG_LEVEL" in os.environ:
        return
    os.environ["OPENCV_LOG_LEVEL"] = "FATAL"  # read when cv2 logs first; cv2 is imported lazily, after this
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:  # imported already (a plugin): tell it directly
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_FATAL)


def _main(argv: Sequence[str] | None) -> int:
    """Parse, configure logging, run the chosen command; user errors become one line and exit 2."""
    # brainflow imports pkg_resources, whose deprecation warning would greet every user on stderr.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        _quiet_native_logs(args.log_level)
        code = int(args._run(args) or 0)
        sys.stdout.flush()  # here, not at interpreter exit, so a closed pipe is handled below
        return code
    except EdgeMerError as exc:
        print(f"edge-mer: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return _stdout_gone()
    except KeyboardInterrupt:  # only before the handlers above were set (argv parsing in a thread)
        return 130


if __name__ == "__main__":
    sys.exit(main())

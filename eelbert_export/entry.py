"""The ``eelbert-export`` console script. Until the command line has put its own handlers in
place, Ctrl-C or SIGTERM ends the process quietly, with no traceback from a half-done import.
Around the command's own handlers a signal ends the process at once with its status and one
line; once the command has returned (its work and clean-up done), signals are ignored while
Python shuts down, so the process ends with the command's status and is never killed by the
signal itself (Python resets its own handlers to the default as it finalizes)."""

import os
import signal
import sys

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def ending(signum, frame) -> None:
    try:
        sys.stdout.flush()
    finally:
        os.write(2, f"eelbert-export: stopped by {signal.Signals(signum).name}\n".encode())
        os._exit(128 + signum)


def run() -> None:
    for s in SIGNALS:
        signal.signal(s, signal.SIG_DFL)
    from eelbert_export.cli import main

    for s in SIGNALS:
        signal.signal(s, ending)
    try:
        main()
    finally:
        for s in SIGNALS:
            signal.signal(s, signal.SIG_IGN)

"""The ``eelbert-export`` console script. Until the command line has put its own handlers in
place, Ctrl-C or SIGTERM ends the process quietly, with no traceback from a half-done import."""

import signal


def run() -> None:
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_DFL)
    from eelbert_export.cli import main

    main()

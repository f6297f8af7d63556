"""What the command-line tools share: one exit-status convention, said in every
``--help``.

* 0: everything succeeded;
* 1: some inputs failed (each one named on stderr), the others were processed;
* 2: a usage or configuration error (bad option, missing model or data folder,
  refusing to overwrite without ``--force``); nothing was processed.

argparse's own errors exit with 2 as well.

Authors
 * speechbrain-s4m contributors
"""

import argparse
import sys
from typing import Optional

EXIT_OK = 0
EXIT_SOME_INPUTS_FAILED = 1
EXIT_USAGE = 2

EXIT_STATUS_HELP = (
    "exit status: 0 success; 1 some inputs failed (each named on stderr), the others "
    "were processed; 2 usage or configuration error, nothing was processed"
)


def command_parser(prog: str, description: str, epilog: Optional[str] = None, **kwargs) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` whose ``--help`` ends with :data:`EXIT_STATUS_HELP`.

    Example
    -------
    >>> "exit status: 0 success" in command_parser("tool", "Does things.").format_help()
    True
    """
    epilog = EXIT_STATUS_HELP if epilog is None else f"{EXIT_STATUS_HELP}\n\n{epilog}"
    return argparse.ArgumentParser(prog=prog, description=description, epilog=epilog, **kwargs)


def usage_error(prog: str, error: object) -> int:
    """Print ``prog: error: <error>`` to stderr and return :data:`EXIT_USAGE`.

    Example
    -------
    >>> usage_error("tool", "no such folder: x")
    2
    """
    print(f"{prog}: error: {error}", file=sys.stderr)
    return EXIT_USAGE

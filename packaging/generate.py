"""Write blankslate's man page and its bash and zsh completions, all made from the command
line's own argument parser (so they cannot drift from it):

    python packaging/generate.py OUTDIR   →  OUTDIR/blankslate.1, blankslate.bash, _blankslate

``make install`` runs it with the development venv (argparse-manpage and shtab are in the
``test`` extra) and installs the results under PREFIX.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import shtab

from sandbox_app import __version__
from sandbox_app.cli import build_parser

FILES = {"man": "blankslate.1", "bash": "blankslate.bash", "zsh": "_blankslate"}


def generate(out: Path) -> dict[str, Path]:
    """Write the three files into ``out``; return them by kind."""
    out.mkdir(parents=True, exist_ok=True)
    written = {kind: out / name for kind, name in FILES.items()}
    for shell in ("bash", "zsh"):
        written[shell].write_text(shtab.complete(build_parser(), shell=shell))
    # argparse-manpage's command line is its stable interface (its Python API is private).
    tool = Path(sys.executable).with_name("argparse-manpage")
    subprocess.run(
        [str(tool), "--module", "sandbox_app.cli", "--function", "build_parser",
         "--prog", "blankslate", "--project-name", "Blank Slate", "--version", __version__,
         "--description", "every browsing session in its own throwaway virtual machine",
         "--manual-title", "Blank Slate manual", "--output", str(written["man"])],
        check=True,
    )
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python packaging/generate.py OUTDIR", file=sys.stderr)
        return 2
    for path in generate(Path(argv[0])).values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

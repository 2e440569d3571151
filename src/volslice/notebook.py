"""Execute a notebook with its parameters cell replaced (what `make demo` does with the inference notebook).

    python -m volslice.notebook notebooks/inference.ipynb --out WORK/inference.ipynb KEY=VALUE ...

Each VALUE is a Python literal (strings quoted: DATA_ROOT='"work/demo/data"'), or taken as a
string if it is not one. The cell tagged ``parameters`` is replaced by these assignments on top of
its own defaults; the executed notebook is saved to --out and its printed output echoed.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

from volslice.io import atomic_path


def parse_parameters(pairs: list[str]) -> dict:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"parameters look like NAME=VALUE, got {pair!r}")
        try:
            params[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[key] = value
    return params


def execute(path, parameters: dict, out=None, timeout: int = 1800):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    cell = next((c for c in nb.cells if "parameters" in c.metadata.get("tags", [])), None)
    if cell is None:
        raise ValueError(f"{path} has no cell tagged 'parameters'")
    cell.source += "\n# injected\n" + "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    NotebookClient(nb, timeout=timeout, kernel_name="python3").execute()
    if out:
        with atomic_path(out, suffix=".ipynb") as tmp:
            nbformat.write(nb, str(tmp))
    return nb


def printed_output(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--out", type=Path, help="where to save the executed notebook")
    parser.add_argument("parameters", nargs="*", help="NAME=VALUE")
    args = parser.parse_intermixed_args(argv)
    nb = execute(args.notebook, parse_parameters(args.parameters), args.out)
    print(printed_output(nb), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

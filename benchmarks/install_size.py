"""Disk size of the installed stack: every distribution that ``requirements.txt`` pins, with
everything they require (recursively), as installed in this environment's site-packages.

    python benchmarks/install_size.py            # requirements.txt of this checkout
    python benchmarks/install_size.py --top 15   # also the 15 largest distributions

Sizes are the sum of the files each distribution's RECORD lists (what ``pip install`` wrote),
so other packages of the environment do not count. The total depends on the PyTorch build:
the default (CUDA) wheels pull the ``nvidia-*`` libraries, the CPU-only wheels do not.
"""
from __future__ import annotations

import argparse
import importlib.metadata as metadata
import os
import re
from typing import Iterable, Optional, Sequence

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 2.0**30


def pinned_names(requirements_file: str) -> list[tuple[str, frozenset[str]]]:
    """``(name, extras)`` of every requirement line of a pip requirements file."""
    found = []
    with open(requirements_file, encoding="utf-8") as lines:
        for line in lines:
            line = re.sub(r"#.*", "", line).strip()
            if line and not line.startswith("-"):
                requirement = Requirement(line)
                found.append((requirement.name, frozenset(requirement.extras)))
    return found


def dependency_closure(roots: Iterable[tuple[str, frozenset[str]]]) -> dict[str, metadata.Distribution]:
    """The installed distributions ``roots`` need, recursively (markers evaluated here)."""
    found: dict[str, metadata.Distribution] = {}
    pending = list(roots)
    while pending:
        name, extras = pending.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        key = canonicalize_name(name)
        new = key not in found
        found[key] = dist
        for line in dist.requires or []:
            requirement = Requirement(line)
            environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            if requirement.marker is None or any(requirement.marker.evaluate(env) for env in environments):
                if new or extras:
                    pending.append((requirement.name, frozenset(requirement.extras)))
    return found


def installed_bytes(dist: metadata.Distribution) -> int:
    """Sum of the sizes of the files the distribution installed (its RECORD)."""
    total = 0
    for file in dist.files or []:
        path = file.locate()
        if os.path.isfile(path):
            total += os.path.getsize(path)
    return total


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requirements", default=os.path.join(REPO, "requirements.txt"), help="pip requirements file")
    parser.add_argument("--top", type=int, default=10, help="list this many largest distributions")
    args = parser.parse_args(argv)
    sizes = {name: installed_bytes(dist) for name, dist in dependency_closure(pinned_names(args.requirements)).items()}
    total = sum(sizes.values())
    nvidia = sum(size for name, size in sizes.items() if name.startswith("nvidia-") or name == "triton")
    print(f"{len(sizes)} distributions (requirements.txt and their dependencies): {total / GIB:.2f} GiB installed")
    print(f"  of which CUDA libraries (nvidia-*, triton): {nvidia / GIB:.2f} GiB; without them: {(total - nvidia) / GIB:.2f} GiB")
    for name, size in sorted(sizes.items(), key=lambda item: -item[1])[: args.top]:
        print(f"  {size / 2**20:9.1f} MiB  {name} {metadata.version(name)}")


if __name__ == "__main__":
    main()

"""The layers picture in ``docs/architecture.svg``, drawn from the contracts in ``.importlinter``.

``python -m tests.architecture_map > docs/architecture.svg`` draws it again; ``tests/test_architecture.py``
fails while the picture and the contracts disagree. Every package in a layer needs a caption here.
"""

from __future__ import annotations

import sys
from html import escape
from pathlib import Path

CONTRACTS = Path(__file__).parents[1] / ".importlinter"

CAPTIONS = {
    "cli": "the fleet command: build-model, serve, openapi, simulate",
    "simulate": "fleet simulate: drives a service over HTTP; reports, plots",
    "client": "FleetClient, over HTTP",
    "console": "terminal output",
    "server_process": "a service in a child process",
    "cluster": "shards on Ray, the front, ownership, resizes, remote participants",
    "api": "HTTP: routes, codecs, keys, guards, quotas, the one error table",
    "ui": "the dashboard and API docs pages",
    "federated": "rounds, participants, strategies, global versions",
    "fleet": "devices: lock, files, interpreter lifetime; residency, jobs, samples",
    "data": "datasets, partitions, each device's assignment",
    "runtime": "interpreters, verification, isolation",
    "model": "building trainable models",
    "profiles": "phones: speed, availability, mixes",
    "privacy": "DP accounting, clipping; SecAgg+",
    "storage": "files under the data dir",
    "wire": "shared with clients",
    "config": "settings",
    "errors": "the error vocabulary",
    "version": "the version",
}

WIDTH, ROW, GAP, LEFT = 940, 50, 14, 150


def layers(contracts: str) -> list[list[str]]:
    """The layers contract's rows, top first, each a list of sibling packages."""
    block = contracts.split("type = layers", 1)[1].split("layers =\n", 1)[1].split("\n\n", 1)[0]
    return [[name.strip() for name in line.split("|")] for line in block.splitlines() if line.strip()]


def render(rows: list[list[str]]) -> str:
    height = len(rows) * (ROW + GAP) + GAP + 10
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">',
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        '<defs><marker id="head" markerWidth="10" markerHeight="10" refX="9" refY="5" orient="auto">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#546e7a"/></marker></defs>',
        f'<line x1="40" y1="{GAP + 8}" x2="40" y2="{height - GAP - 12}" stroke="#546e7a" stroke-width="3" '
        'marker-end="url(#head)"/>',
        f'<text x="56" y="{height // 2}" font-size="13" fill="#37474f" '
        f'transform="rotate(-90 56 {height // 2})" text-anchor="middle">imports point down</text>',
    ]
    span = WIDTH - LEFT - GAP
    for r, row in enumerate(rows):
        y = GAP + r * (ROW + GAP)
        width = (span - GAP * (len(row) - 1)) / len(row)
        for c, name in enumerate(row):
            x = LEFT + c * (width + GAP)
            out.append(
                f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{ROW}" rx="6" '
                'fill="#e3f2fd" stroke="#1e88e5"/>'
            )
            out.append(
                f'<text x="{x + 10:.1f}" y="{y + 21}" font-size="15" font-weight="bold" fill="#0d47a1">'
                f"{escape(name)}</text>"
            )
            caption = escape(CAPTIONS[name])
            out.append(f'<text x="{x + 10:.1f}" y="{y + 40}" font-size="12" fill="#37474f">{caption}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    sys.stdout.write(render(layers(CONTRACTS.read_text())))


if __name__ == "__main__":
    main()

"""``ecgd keygen --out DIR [--name NAME]``: a recipient key pair and a pseudonym key."""
from __future__ import annotations

import argparse
from pathlib import Path

from ecgd.security.keys import generate_keys, load_recipient


DESCRIPTION = """Write NAME.key (private, 0600: keep it at the reading station only),
NAME.pub (copy to the appliance's [reports] recipients) and pseudonym.key (0600: for the
appliance's [privacy] pseudonym_key_file or systemd credential). Existing files are never
overwritten."""


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="directory to write into (created 0700 if missing)")
    parser.add_argument("--name", default="reading-station",
                        help="base name of the key pair (default: reading-station)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    paths = generate_keys(args.out, name=args.name)
    key_id = load_recipient(paths["public"]).key_id
    print(f"private key  {paths['private']}  (key id {key_id}; never copy to the appliance)")
    print(f"public key   {paths['public']}")
    print(f"pseudonym    {paths['pseudonym']}")
    return 0

"""``ecgd keygen``: the reading station's age keys, or an appliance's signing key."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional

from ecgd.security.keys import (
    DEFAULT_SIGNING_KEY_NAME,
    generate_keys,
    generate_signing_key,
    load_enrolled_appliance,
)

DEFAULT_STATION_KEY_NAME = "reading-station"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "keygen",
        help="write the station's age keys and the pseudonym key, or an appliance signing key",
        description=(
            "At the reading station: write NAME.key (the age identity, 0600: it never leaves "
            "the station; `age --decrypt -i NAME.key` also reads reports), NAME.pub (the age "
            "recipient: copy to the appliance's [reports] recipients) and pseudonym.key (0600: "
            "for the appliance's [privacy] pseudonym_key_file). With --appliance, on the "
            "appliance: write NAME.key (its Ed25519 signing key, 0600: for [reports] "
            "signing_key_file) and NAME.pub (enrol it at the station as "
            "APPLIANCES_DIR/<appliance name>.pub). Existing files are never overwritten."
        ),
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="directory to write into (created 0700 if missing)")
    parser.add_argument("--appliance", action="store_true",
                        help="write this appliance's signing key pair instead")
    parser.add_argument("--name", default=None,
                        help=f"base name of the key pair (default: {DEFAULT_STATION_KEY_NAME}, "
                             f"or {DEFAULT_SIGNING_KEY_NAME} with --appliance)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    name: Optional[str] = args.name
    if args.appliance:
        paths = generate_signing_key(args.out, name=name or DEFAULT_SIGNING_KEY_NAME)
        key_id = load_enrolled_appliance(paths["public"]).key_id
        print(f"signing key  {paths['private']}  (key id {key_id}; readable by the service only)")
        print(f"public key   {paths['public']}  (enrol at the reading station)")
        return 0
    paths = generate_keys(args.out, name=name or DEFAULT_STATION_KEY_NAME)
    print(f"age identity  {paths['private']}  (never copy to the appliance)")
    print(f"recipient     {paths['public']}  ({paths['public'].read_text().strip()})")
    print(f"pseudonym     {paths['pseudonym']}")
    return 0

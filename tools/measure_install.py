"""The appliance's installed size and import-time memory, for one or more versions of ecgd.

    python tools/measure_install.py [--rev 1f303f0] [--rev WORKTREE] [--data ../shared/data]

Each version (a git revision, or WORKTREE for the checkout as it is) is installed without
extras into a fresh virtualenv, as the README's appliance install does. Measured:

- installed size: every file under the venv (pip and setuptools included), in MB;
- the largest packages and whether pandas, matplotlib, aiohttp or soundfile are there;
- peak RSS (VmHWM) of a Python process that imports what the daemon imports
  (``ecgd.daemon``), then again after it reads one 10-s WFDB record (CinC E07500), the
  path where the wfdb package used to be imported.

Prints a Markdown table. Installs need the package index, as any pip install does.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("pandas", "matplotlib", "aiohttp", "soundfile", "wfdb")
_PROBE = """
import sys
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
import ecgd.daemon
after_import = peak_mb()
from ecgd.records.reader import read_recording
read_recording(sys.argv[1], 1 << 26)
print(after_import, peak_mb())
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", action="append", help="git revision, or WORKTREE")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    revisions = args.rev or ["1f303f0", "WORKTREE"]
    rows = []
    for revision in revisions:
        with tempfile.TemporaryDirectory(prefix="ecgd-install-") as folder:
            rows.append(_measure(revision, Path(folder), args.data))
    print("| version | installed (MB) | packages | heavy packages | RSS after import "
          "(MiB) | RSS after a WFDB read (MiB) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['revision']} | {row['size_mb']:.0f} | {row['packages']} | "
              f"{row['heavy'] or 'none'} | {row['import_mb']:.0f} | {row['read_mb']:.0f} |")
    return 0


def _measure(revision: str, folder: Path, data: Path) -> Dict[str, object]:
    source = folder / "src"
    if revision == "WORKTREE":
        files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                               cwd=REPO, capture_output=True, text=True, check=True).stdout
        archive = subprocess.run(["tar", "-cf", "-", "-C", str(REPO), *files.split()],
                                 capture_output=True, check=True).stdout
    else:
        archive = subprocess.run(["git", "archive", "--format=tar", revision], cwd=REPO,
                                 capture_output=True, check=True).stdout
    source.mkdir()
    subprocess.run(["tar", "-xf", "-", "-C", str(source)], input=archive, check=True)
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    str(source)], check=True)
    listed = subprocess.run([python, "-m", "pip", "list", "--format=freeze",
                             "--disable-pip-version-check"],
                            capture_output=True, text=True, check=True).stdout
    packages: List[str] = [line.split("==")[0].lower() for line in listed.splitlines()]
    size_bytes = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file()
                     and not p.is_symlink())
    probe = subprocess.run([python, "-c", _PROBE, str(data / "cinc2021" / "E07500.hea")],
                           capture_output=True, text=True, check=True, cwd=folder).stdout
    import_mb, read_mb = (float(value) for value in probe.split())
    return {"revision": revision, "size_mb": size_bytes / 1e6, "packages": len(packages),
            "heavy": ", ".join(p for p in HEAVY if p in packages),
            "import_mb": import_mb, "read_mb": read_mb}


if __name__ == "__main__":
    sys.exit(main())

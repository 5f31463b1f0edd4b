#!/usr/bin/env bash
# ecgd on Debian bookworm arm64 (the Raspberry Pi OS base) under qemu user-mode emulation,
# installed as the README's Pi install does it and compared with the same run on x86-64.
#
# Usage: tools/arm64_check.sh [--ci]
#   (no option)  the full check, installed the README's Pi way (a debootstrapped bookworm,
#                `pip install CHECKOUT` run by the emulated pip): model build + verify,
#                `ecgd analyze` parity (FP32 and INT8) on every format, a refused format, the
#                daemon round trip with two drops, and the test suite's arm64 subset
#                (ARM64_EXCLUDED_TESTS and ARM64_DESELECTED_TESTS say what it leaves out,
#                and why).
#   --ci         what .ci/run runs, cold, in minutes: the arm64 wheels are fetched and
#                unpacked by this machine's native pip (pip under emulation costs 7+ min of
#                CPU) into a venv of Debian's arm64 Python, unpacked from bookworm's packages
#                without running their maintainer scripts (debootstrap's second stage costs
#                3 min of CPU under emulation). Then, emulated: model build + verify, FP32
#                analyze parity on 2 windows (one accepted, one rejected by QC), the daemon
#                round trip with one drop drained at SIGTERM.
#
# Needs root (apt-get, debootstrap, chroot, mounts) and a Python with ecgd installed on
# PATH (the x86 side: activate the checkout's venv first). Installs qemu-user-static,
# binfmt-support and debootstrap when missing, and registers qemu-aarch64 with binfmt_misc.
# The root filesystem and the pip cache are kept in $ECGD_ARM64_CACHE
# (default ~/.cache/ecgd-arm64), never in the checkout; the recordings are read from
# $ECGD_SHARED_DATA (default ../shared/data beside the checkout), bind-mounted read-only.
#
# Exit 0 only when every step passed and no difference was found; every difference is
# printed. Timings printed here are costs of the check under emulation, never Pi timings.
set -euo pipefail
{  # parsed whole before it runs: editing this file during a run cannot change that run

REPO=$(cd "$(dirname "$0")/.." && pwd)
DATA=$(realpath "${ECGD_SHARED_DATA:-$REPO/../shared/data}")
CACHE=${ECGD_ARM64_CACHE:-$HOME/.cache/ecgd-arm64}
ARM64_PYTHON=3.11  # bookworm's python3
LABELS=shared/data/ecgfounder/tasks.txt  # relative to the run folder
SUBSET=full

# Test files that do not run under emulation, and why. Everything else in tests/ (readers,
# QC, R-peaks, preprocessing, resampling, sealing, pseudonyms, wire decoders, windowing,
# config, reports, durable writes, CLI, `ecgd analyze`, the model session) runs on arm64;
# the PyTorch and batch tests skip by themselves (torch, pyarrow and Ray are test-only and
# not installed there).
ARM64_EXCLUDED_TESTS=(
  # Timing: they wait for the daemon or a pseudo-terminal stream with deadlines set for
  # native speed (READY=1, settle_s, stall and reconnect backoff); emulation is 10-100x
  # slower, so they would fail for being slow, not wrong. The daemon round trip below
  # covers READY=1, a spool drop, sealing and the SIGTERM drain on arm64.
  tests/test_daemon.py
  tests/test_daemon_serial.py
  tests/test_serial_source.py
  tests/test_simulate.py
  # Timing, seen failing under emulation: the probe's supervisor plays systemd's
  # WatchdogSec=10 and restarts a daemon silent for 10 s, which one full-size window (5-6 s
  # here) and a long input in hand exceed (one start more than the kills it made); the
  # full-disk test waits 60 s for five recordings to be done while simulated live windows
  # arrive at 20x real time, each one 5-6 s of inference here.
  tests/test_daemon_probe.py
  tests/test_daemon_retention.py
  # Cost: test_model_quantize calibrates an INT8 model (10 s natively; one full-size window
  # costs 5-6 s of emulation on a quiet machine, 30-45 s on a loaded one); the INT8 analyze
  # parity below runs one calibrated model on arm64 against x86 instead.
  tests/test_model_quantize.py
  # systemd-analyze checks the unit file's text (architecture-independent); the root
  # filesystem has no systemd.
  tests/test_systemd_unit.py
)

# Single tests left out of files that otherwise run, and why (pytest node ids).
ARM64_DESELECTED_TESTS=(
  # Cost: `ecgd analyze` on every file of the shared recordings (27 s natively, about an
  # hour of emulation); the analyze parity below runs every format on arm64 against x86.
  tests/test_analyze.py::test_every_shared_file_gives_reports_or_one_clear_error
)

case "${1:-}" in
  "") ;;
  --ci) SUBSET=ci ;;
  *) echo "usage: $0 [--ci]" >&2; exit 2 ;;
esac

# What the root filesystem holds; a cached one built from another spec is rebuilt.
if [[ $SUBSET == full ]]; then
  ROOTFS=$CACHE/bookworm-arm64
  # age: the independent decoder the seal tests check ecgd's reports against (as .ci/run).
  ROOTFS_SPEC="debootstrap bookworm arm64 minbase python3,python3-venv,ca-certificates,age"
else
  ROOTFS=$CACHE/bookworm-arm64-unpacked
  ROOTFS_SPEC="debootstrap --foreign bookworm arm64 minbase python3 (unpacked, unconfigured)"
fi
HOST_RUN=$ROOTFS/ecgd-check  # the run folder (/ecgd-check inside the root filesystem)

fail() { echo "arm64_check: $*" >&2; exit 1; }

STAGE_NAMES=()
STAGE_SECONDS=()
STAGE_STARTED=$SECONDS
stage() {  # close the running stage (if any) and open the next one
  if [[ -n "${STAGE_NAME:-}" ]]; then
    STAGE_NAMES+=("$STAGE_NAME"); STAGE_SECONDS+=($((SECONDS - STAGE_STARTED)))
  fi
  STAGE_NAME=$1; STAGE_STARTED=$SECONDS
  echo "== arm64_check [$SUBSET]: $1"
}

[[ $(id -u) == 0 ]] || fail "needs root (apt-get, debootstrap, chroot, mount)"
[[ -f $DATA/SOURCES.md ]] || fail "shared recordings not found at $DATA (set ECGD_SHARED_DATA)"
python -c 'import ecgd' 2>/dev/null \
  || fail "no ecgd on this Python (x86 side): activate the checkout's venv first"

stage "host: qemu-user-static, binfmt_misc, debootstrap"
if ! command -v debootstrap >/dev/null || ! command -v qemu-aarch64-static >/dev/null \
    || ! command -v update-binfmts >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    qemu-user-static binfmt-support debootstrap >/dev/null
fi
if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
    || fail "cannot mount binfmt_misc here; arm64 programs cannot run transparently"
fi
[[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] || update-binfmts --enable qemu-aarch64
# F (fix binary): the kernel opens the interpreter now, so it also works inside the chroot.
grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
  || fail "qemu-aarch64 is registered without the F flag; it cannot run inside a chroot"

stage "root filesystem (Debian bookworm arm64, cached in $CACHE)"
mkdir -p "$CACHE"
exec 9>"$CACHE/lock"
flock 9  # one check at a time per cache
if [[ "$(cat "$ROOTFS/.ecgd-rootfs" 2>/dev/null)" != "$ROOTFS_SPEC" ]]; then
  # A killed debootstrap leaves its /proc mounted in the partial tree: unmount it first.
  # --one-file-system: never delete through a mount (in_arm64's live in a private
  # namespace and vanish with it, but a root filesystem must never be deleted through one).
  { findmnt -rn -o TARGET | grep -F "$ROOTFS.partial/" || true; } | sort -r \
    | xargs -r -n1 umount -l
  rm -rf --one-file-system "$ROOTFS" "$ROOTFS.partial"
  if [[ $SUBSET == full ]]; then
    read -r _ suite arch variant packages <<<"$ROOTFS_SPEC"
    debootstrap --arch="$arch" --variant="$variant" --include="$packages" "$suite" \
      "$ROOTFS.partial" >"$CACHE/debootstrap.log" 2>&1 \
      || fail "debootstrap failed; see $CACHE/debootstrap.log"
  else
    read -r _ _ suite arch variant packages _ <<<"$ROOTFS_SPEC"
    # The first stage only: it downloads every package and unpacks the essential ones
    # natively; the second stage (configuring them all under emulation) is skipped. Python
    # and its libraries are unpacked from the downloaded packages here; nothing in the
    # check needs a maintainer script (users, alternatives, pip's CA bundle).
    debootstrap --foreign --arch="$arch" --variant="$variant" --include="$packages" \
      "$suite" "$ROOTFS.partial" >"$CACHE/debootstrap.log" 2>&1 \
      || fail "debootstrap --foreign failed; see $CACHE/debootstrap.log"
    for package in $(cat "$ROOTFS.partial/debootstrap/base"); do
      # --keep-directory-symlink: /lib is a link to usr/lib in bookworm (merged /usr).
      dpkg-deb --fsys-tarfile "$ROOTFS.partial/var/cache/apt/archives/${package}"_*.deb \
        | tar -x --keep-directory-symlink -C "$ROOTFS.partial"
    done
    # The first stage leaves /proc a link to the host's; it must be a mount point.
    rm "$ROOTFS.partial/proc" && mkdir "$ROOTFS.partial/proc"
    rm -rf "$ROOTFS.partial/var/cache/apt/archives"/*.deb
    chroot "$ROOTFS.partial" /sbin/ldconfig  # the library cache a configured system has
  fi
  echo "$ROOTFS_SPEC" >"$ROOTFS.partial/.ecgd-rootfs"
  mv "$ROOTFS.partial" "$ROOTFS"
fi

# The emulated CPU is the Pi 4's: a Cortex-A72 (ARMv8.0-A, NEON; no dot product, no SVE),
# so numpy and ONNX Runtime pick the kernels they pick on a Pi 4. qemu-user passes the host's
# /proc/cpuinfo through, and ONNX Runtime's CPU detection crashes (SIGSEGV at import) on an
# x86 one; a Pi 4's own cpuinfo is mounted over it, one entry per host core (as /sys says).
EMULATED_CPU=cortex-a72
CPUINFO=$CACHE/cpuinfo-$EMULATED_CPU
for ((core = 0; core < $(nproc --all); core++)); do
  printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$core"
  printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n'
  printf 'CPU part\t: 0xd08\nCPU revision\t: 3\n\n'
done >"$CPUINFO"

in_arm64() {  # run the bash script on stdin inside the arm64 root filesystem
  # A private mount namespace: /proc, /dev, /sys, a fresh /tmp and the read-only recordings
  # are mounted for this call only and disappear with it, even when the check is killed.
  unshare --mount --propagation private /bin/bash -euo pipefail -c '
    root=$1 data=$2 ca_bundle=$3 cpuinfo=$4 cpu=$5
    mount -t proc proc "$root/proc"
    mount --bind -o ro "$cpuinfo" "$root/proc/cpuinfo"
    mount --rbind /dev "$root/dev"
    mount --rbind /sys "$root/sys"
    mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
    mount --bind "$data" "$root/ecgd-check/shared/data"
    mount -o remount,bind,ro "$root/ecgd-check/shared/data"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    # Trust what the host trusts (pip behind a TLS-inspecting proxy needs its CA). The --ci
    # root filesystem has no CA bundle: nothing in it goes on the network.
    if [[ -e $root/etc/ssl/certs/ca-certificates.crt ]]; then
      mount --bind -o ro "$ca_bundle" "$root/etc/ssl/certs/ca-certificates.crt"
    fi
    exec env -i QEMU_CPU="$cpu" PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      HOME=/root LANG=C.UTF-8 PIP_CACHE_DIR=/var/cache/ecgd-pip PIP_DISABLE_PIP_VERSION_CHECK=1 \
      chroot "$root" /bin/bash -euo pipefail -s
  ' _ "$ROOTFS" "$DATA" "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" \
    "$CPUINFO" "$EMULATED_CPU"
}

stage "x86-64: reference model, INT8 quantization, ecgd analyze"
rm -rf --one-file-system "$HOST_RUN"
mkdir -p "$HOST_RUN"/{checkout,shared/data,x86,arm64}
# The checkout as it is: tracked and new files, not what .gitignore leaves out.
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' file; do [[ -e $file ]] && printf '%s\0' "$file"; done \
  | tar --null -T - -cf -) | tar -C "$HOST_RUN/checkout" -xf -
# The arm64 venv gets the same releases as this one, so a difference is the architecture's.
python -m pip freeze --exclude-editable >"$HOST_RUN/x86/constraints.txt"
python "$REPO/tools/arm64_parity.py" inputs "$DATA/ludb/data/101.hea" "$HOST_RUN/inputs"

# The fixed recordings, paths relative to the run folder (the same on both sides). The full
# set holds every format ecgd reads (WFDB, CSV, NumPy, DICOM, HL7 aECG, GE MUSE, GE
# CardioSoft, Philips, EDF), resampled ones (PTB 1000 Hz), and windows QC rejects.
if [[ $SUBSET == ci ]]; then
  # Two windows: NumPy, accepted (the model runs); WFDB, rejected by QC (flatline, lead
  # off, electrode motion: the QC path without the model).
  RECORDS=(inputs/101.npz shared/data/cinc2021/JS20004.hea)
else
  RECORDS=(shared/data/cinc2021/HR06004.hea shared/data/cinc2021/JS20004.hea
           shared/data/cinc2021/JS20007.hea shared/data/ludb/data/1.hea
           shared/data/ptbdb/s0010_re.hea inputs/101.npz inputs/101.csv
           shared/data/dicom/example-DICOM1.dcm shared/data/dicom/waveform_ecg.dcm
           "shared/data/hl7-aecg/Example aECG.xml" shared/data/hl7-aecg/hl7aecg_example.xml
           shared/data/ge-muse-xml/BRAVEHEART/example1.xml
           shared/data/ge-muse-xml/EGM/muse-sinus.xml
           shared/data/ge-cardiosoft-xml/example-XML1.xml
           shared/data/philips-xml/129DYPRG.XML
           shared/data/philips-xml/3191723_ZZDEMOPTONLY_1-04_orig.xml
           shared/data/philips-xml/ad4d3d80-d165_1-04_orig.xml
           shared/data/philips-xml/repbeats_example.xml
           shared/data/edf/0000050.ECG.edf)
fi
REFUSED=shared/data/scp-ecg/demo.scp  # SCP-ECG: both sides must refuse it the same way
# The daemon round trip: the full check drops a 10-s recording while idle, then a 3-window
# one that is in hand at SIGTERM; --ci only the 10-s one, in hand at SIGTERM.
if [[ $SUBSET == full ]]; then
  IDLE_DROP=(shared/data/cinc2021/HR06004.mat shared/data/cinc2021/HR06004.hea)
  DRAIN_DROP=(shared/data/ptbdb/s0010_re.dat shared/data/ptbdb/s0010_re.xyz
              shared/data/ptbdb/s0010_re.hea)
  ECGD=(/opt/ecgd/venv/bin/ecgd)  # the entry point the Pi install made
else
  IDLE_DROP=()
  DRAIN_DROP=(shared/data/cinc2021/HR06004.mat shared/data/cinc2021/HR06004.hea)
  ECGD=(/opt/ecgd/venv/bin/python -m ecgd)  # pip --target writes no usable entry point
fi
# The scripts that run inside the root filesystem read these definitions.
declare -p SUBSET LABELS RECORDS REFUSED IDLE_DROP DRAIN_DROP ECGD ARM64_EXCLUDED_TESTS \
  ARM64_DESELECTED_TESTS >"$HOST_RUN/check-vars.sh"

x86_ecgd() { (cd "$HOST_RUN" && python -m ecgd "$@"); }  # the x86 venv's ecgd
# On the host the run folder's shared/data is a link to the recordings; for the arm64 side
# it is an empty directory that in_arm64 mounts them on.
rmdir "$HOST_RUN/shared/data" && ln -s "$DATA" "$HOST_RUN/shared/data"
x86_ecgd model build-reference --out x86/models --labels "$LABELS" --seed 0
x86_ecgd model verify x86/models/ecgfounder-reference.json shared/data/cinc2021/HR06004.hea
x86_ecgd analyze --model x86/models/ecgfounder-reference.json "${RECORDS[@]}" \
  >"$HOST_RUN/x86/fp32.jsonl"
x86_ecgd analyze --model x86/models/ecgfounder-reference.json \
  ${IDLE_DROP[@]+"${IDLE_DROP[-1]}"} "${DRAIN_DROP[-1]}" >"$HOST_RUN/x86/daemon-expected.jsonl"
if [[ $SUBSET == full ]]; then
  # Quantized once, here, and the same INT8 file runs on both sides: the comparison is of
  # the kernels, not of two calibrations.
  x86_ecgd model quantize x86/models/ecgfounder-reference.json \
    --calibration shared/data/cinc2021 --max-windows 64 --out int8
  x86_ecgd analyze --model int8/ecgfounder-reference-int8.json "${RECORDS[@]}" \
    >"$HOST_RUN/x86/int8.jsonl"
  # --model: without it analyze stops at the missing default model, before the file.
  if x86_ecgd analyze --model x86/models/ecgfounder-reference.json "$REFUSED" \
      2>"$HOST_RUN/x86/refused.stderr"; then
    fail "x86: SCP-ECG was not refused"
  fi
fi
rm "$HOST_RUN/shared/data" && mkdir "$HOST_RUN/shared/data"

if [[ $SUBSET == full ]]; then
stage "arm64: the README's Pi install (venv + pip install of the checkout, arm64 wheels)"
in_arm64 <<'EOF'
cd /ecgd-check
# The venv is kept between runs while the releases and the package metadata stay the same
# (pip under emulation costs minutes); ecgd itself is reinstalled from the checkout always.
# --no-compile: Python compiles what is imported on first use; compiling all of scipy under
# emulation costs more than any run uses.
deps_key=$({ cat x86/constraints.txt; cat checkout/setup.cfg checkout/setup.py \
  checkout/pyproject.toml 2>/dev/null || true; } | sha256sum | cut -c1-16)
if [[ "$(cat /opt/ecgd/venv/.ecgd-deps-key 2>/dev/null)" == "$deps_key" ]]; then
  /opt/ecgd/venv/bin/pip install -q --no-compile --no-deps --force-reinstall ./checkout
else
  rm -rf /opt/ecgd/venv
  python3 -m venv /opt/ecgd/venv
  /opt/ecgd/venv/bin/pip install -q --no-compile -c x86/constraints.txt ./checkout
  # Not the appliance's: the round trip decrypts its reports there too, with the station's
  # pyrage (ecgd decrypt), so this venv also gets pyrage's arm64 wheel.
  /opt/ecgd/venv/bin/pip install -q --no-compile -c x86/constraints.txt pyrage
  echo "$deps_key" >/opt/ecgd/venv/.ecgd-deps-key
fi
EOF
else
stage "arm64: the same wheels, fetched and unpacked by this machine's pip (--target)"
# What `pip install CHECKOUT` resolves on a Pi, resolved here for the arm64 platform: the
# same releases as the x86 venv, binary wheels only. ecgd's and sdnotify's (a source
# package) wheels are pure Python, built here. pyrage (the station's, for `ecgd decrypt`
# in the round trip) comes too.
WHEELS=$HOST_RUN/wheels
ARM64_WHEEL_TARGET=(--only-binary=:all: --python-version "$ARM64_PYTHON" --implementation cp
  --abi "cp${ARM64_PYTHON/./}" --abi abi3 --abi none --platform manylinux2014_aarch64
  --platform manylinux_2_17_aarch64 --platform manylinux_2_28_aarch64)
python -m pip wheel -q --no-deps -c "$HOST_RUN/x86/constraints.txt" -w "$WHEELS" \
  "$HOST_RUN/checkout" sdnotify
python -m pip download -q -c "$HOST_RUN/x86/constraints.txt" -d "$WHEELS" \
  --find-links "$WHEELS" "${ARM64_WHEEL_TARGET[@]}" "$WHEELS"/ecgd-*.whl pyrage
rm -rf --one-file-system "$ROOTFS/opt/ecgd/venv"
in_arm64 <<<'python3 -m venv --without-pip /opt/ecgd/venv'
python -m pip install -q --no-index --no-compile --find-links "$WHEELS" \
  --target "$ROOTFS/opt/ecgd/venv/lib/python$ARM64_PYTHON/site-packages" \
  "${ARM64_WHEEL_TARGET[@]}" ecgd pyrage
fi
in_arm64 <<'EOF'
echo "arm64 machine: $(uname -m), $(python3 --version)"
/opt/ecgd/venv/bin/python -c 'import numpy, scipy, onnxruntime as ort; print("arm64 wheels:",
  "numpy", numpy.__version__, "scipy", scipy.__version__, "onnxruntime", ort.__version__,
  ort.get_available_providers())'
EOF

stage "arm64: reference model, ecgd model verify, ecgd analyze"
in_arm64 <<'EOF'
cd /ecgd-check && source check-vars.sh
"${ECGD[@]}" model build-reference --out arm64/models --labels "$LABELS" --seed 0
"${ECGD[@]}" model verify arm64/models/ecgfounder-reference.json \
  shared/data/cinc2021/HR06004.hea
"${ECGD[@]}" analyze --model arm64/models/ecgfounder-reference.json "${RECORDS[@]}" \
  >arm64/fp32.jsonl
if [[ $SUBSET == full ]]; then
  "${ECGD[@]}" model verify arm64/models/ecgfounder-reference.json inputs/101.npz
  "${ECGD[@]}" model verify int8/ecgfounder-reference-int8.json \
    shared/data/cinc2021/HR06004.hea
  "${ECGD[@]}" analyze --model int8/ecgfounder-reference-int8.json "${RECORDS[@]}" \
    >arm64/int8.jsonl
  if "${ECGD[@]}" analyze --model arm64/models/ecgfounder-reference.json "$REFUSED" \
      2>arm64/refused.stderr; then
    echo "arm64: SCP-ECG was not refused" >&2; exit 1
  fi
fi
EOF

stage "compare: x86-64 against arm64"
differences=0
model_x86=$(sha256sum <"$HOST_RUN/x86/models/ecgfounder-reference.onnx" | cut -d' ' -f1)
model_arm64=$(sha256sum <"$HOST_RUN/arm64/models/ecgfounder-reference.onnx" | cut -d' ' -f1)
if [[ $model_x86 == "$model_arm64" ]]; then
  echo "reference model: the same bytes on both (sha256 $model_x86)"
else
  echo "model DIFFERENCE: reference model sha256 x86 $model_x86, arm64 $model_arm64"
  differences=$((differences + 1))
fi
python "$REPO/tools/arm64_parity.py" compare "$HOST_RUN/x86/fp32.jsonl" \
  "$HOST_RUN/arm64/fp32.jsonl" --probability-tolerance 1e-4 --what FP32 \
  || differences=$((differences + 1))
if [[ $SUBSET == full ]]; then
  python "$REPO/tools/arm64_parity.py" compare "$HOST_RUN/x86/int8.jsonl" \
    "$HOST_RUN/arm64/int8.jsonl" --what INT8 \
    --agreement "$HOST_RUN/int8/ecgfounder-reference-int8.agreement.json" \
    || differences=$((differences + 1))
  if diff -u "$HOST_RUN/x86/refused.stderr" "$HOST_RUN/arm64/refused.stderr"; then
    echo "refused format, the same line on both: $(cat "$HOST_RUN/x86/refused.stderr")"
  else
    echo "refused DIFFERENCE: the SCP-ECG refusals differ (above)"
    differences=$((differences + 1))
  fi
fi

stage "arm64: the daemon end to end (READY=1, spool drops sealed, SIGTERM drain, decrypt)"
in_arm64 <<'EOF' || differences=$((differences + 1))
cd /ecgd-check && source check-vars.sh
/opt/ecgd/venv/bin/python -u checkout/tools/arm64_daemon_roundtrip.py \
  --ecgd "${ECGD[*]}" --manifest arm64/models/ecgfounder-reference.json \
  --expected x86/daemon-expected.jsonl ${IDLE_DROP[@]+--idle-drop "${IDLE_DROP[@]}"} \
  --drain-drop "${DRAIN_DROP[@]}"
EOF

if [[ $SUBSET == full ]]; then
  stage "arm64: the test suite without the excluded files and tests (ARM64_EXCLUDED_TESTS, ARM64_DESELECTED_TESTS)"
  in_arm64 <<'EOF' || differences=$((differences + 1))
cd /ecgd-check && source check-vars.sh
# The test extra as setup.cfg lists it (pytest alone left every module that imports wfdb,
# hypothesis or matplotlib failing at collection), without torch (x86's local CPU wheel)
# and Ray (600 MB): the tests that need them skip by themselves.
/opt/ecgd/venv/bin/python - <<'PY' >arm64/test-requirements.txt
import configparser
setup = configparser.ConfigParser()
setup.read("checkout/setup.cfg")
for line in setup["options.extras_require"]["test"].splitlines():
    requirement = line.split("#", 1)[0].strip()
    if requirement and not requirement.startswith(("torch", "ray")):
        print(requirement)
PY
/opt/ecgd/venv/bin/pip install -q --no-compile -c x86/constraints.txt \
  -r arm64/test-requirements.txt
cd checkout
/opt/ecgd/venv/bin/python -m pytest -q -p no:cacheprovider "${ARM64_EXCLUDED_TESTS[@]/#/--ignore=}" \
  "${ARM64_DESELECTED_TESTS[@]/#/--deselect=}"
EOF
fi

stage "done"
echo "costs of this check here (qemu emulation on this machine; not a measure of a Pi):"
for i in "${!STAGE_NAMES[@]}"; do
  printf '  %5d s  %s\n' "${STAGE_SECONDS[$i]}" "${STAGE_NAMES[$i]}"
done
echo "  total $SECONDS s"
if ((differences)); then
  echo "arm64_check [$SUBSET]: FAILED ($differences steps found differences or failed; above)"
  exit 1
fi
echo "arm64_check [$SUBSET]: passed: arm64 computes what x86-64 computes, within the tolerances"
exit 0
}

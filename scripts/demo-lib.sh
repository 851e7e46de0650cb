# Sourced by the demo scripts: the chainfs command of this checkout, a work
# directory under /var/tmp (removed at exit, the mount at $mnt unmounted
# first), and `step` headings. Usage: . scripts/demo-lib.sh NAME
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
chainfs() { bin/chainfs "$@"; }
work=$(mktemp -d "/var/tmp/chainfs-demo-$1.XXXXXX")
mnt="$work/mnt"
cleanup() {
  if grep -qs " $mnt " /proc/mounts; then chainfs umount "$mnt" || fusermount3 -uz "$mnt"; fi
  rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

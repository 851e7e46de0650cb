#!/usr/bin/env bash
# The main job on a built-in sample: make a replica, inspect it, stream it,
# mount it and read it with qemu-img, export it three ways, unmount.
. "$(dirname "$0")/demo-lib.sh" replica

step "A sample replica (qcow2 backing image, two snapshots, a head), as Longhorn lays it out"
dir=$(node scripts/make-sample.js "$work/longhorn")
find "$work/longhorn" -type f | sed "s|$work/||" | sort

step "chainfs inspect"
chainfs inspect "$dir"

step "chainfs cat | qemu-img info  (the flattened head, streamed)"
chainfs cat "$dir" > "$work/volume.raw"
qemu-img info "$work/volume.raw"
sha256sum "$work/volume.raw" | sed "s|$work/||"

step "chainfs mount: the head and every snapshot as flat read-only files"
mkdir -p "$mnt"
chainfs mount "$dir" "$mnt"
ls -lR "$mnt"
qemu-img info "$mnt/volume.img"
qemu-img compare -f raw -F raw "$mnt/volume.img" "$work/volume.raw"

step "chainfs export: sparse raw (with SHA-512), qcow2, Longhorn backing-image layout"
chainfs export "$dir" "$work/volume-export.raw" --checksum --quiet | sed "s|$work/||"
chainfs export "$dir" "$work/volume-export.qcow2" --format qcow2 --quiet
chainfs export "$dir" "$work/bi-golden-0c0ffee0" --layout longhorn --quiet >/dev/null
du -h --apparent-size "$work/volume-export.raw" | sed "s|$work/||; s|^|apparent  |"
du -h "$work/volume-export.raw" | sed "s|$work/||; s|^|allocated |"
qemu-img check "$work/volume-export.qcow2"
qemu-img compare "$mnt/volume.img" "$work/volume-export.qcow2"
qemu-img compare -f raw -F raw "$mnt/volume.img" "$work/bi-golden-0c0ffee0/backing"
echo "backing.cfg: $(cat "$work/bi-golden-0c0ffee0/backing.cfg")"

step "a snapshot, through the mount, equals the same snapshot streamed by chainfs cat"
cmp "$mnt/snapshots/before-upgrade.img" <(chainfs cat "$dir" --snapshot before-upgrade) && echo "snapshot before-upgrade: identical"

step "chainfs umount"
chainfs umount "$mnt"
grep -qs " $mnt " /proc/mounts && { echo "still mounted!"; exit 1; }
echo "unmounted"

# Each other kind of source has its own small demo: a sample of it, inspected,
# mounted, read with qemu-img.
for kind in node backupstore spdk; do
  case $kind in node) what="a whole node" ;; backupstore) what="a backup target" ;; spdk) what="a v2 disk (SPDK lvstore)" ;; esac
  step "chainfs on $what (scripts/demo-$kind.sh)"
  bash "scripts/demo-$kind.sh"
done
echo; echo "demo done"

#!/usr/bin/env bash
# Longhorn v2 disks: decompress the SPDK-written sample disks, inspect them,
# stream an lvol, mount both disks and read a replica view with qemu-img,
# export one, unmount; the disk images are checked unchanged at the end.
. "$(dirname "$0")/demo-lib.sh" spdk

step "Two v2 disks written by SPDK v25.05 (sparse copies, as dd conv=sparse makes them)"
fixtures=test/fixtures/spdk-v25.05
disks=()
for d in 01-single-replica-chain 02-backing-image; do
  gzip -dc "$fixtures/$d/$d.img.gz" | cp --sparse=always /dev/stdin "$work/$d.img"
  disks+=("$work/$d.img")
done
ls -ls "$work"/*.img | sed "s|$work/||"
before=$(sha256sum "${disks[@]}")

step "chainfs inspect (both disks: volumes -> replicas -> chains, backing image, free clusters)"
chainfs inspect "${disks[@]}" | sed "s|$work/||"

step "chainfs cat --volume: the replica Longhorn's salvage would pick, streamed"
vol=pvc-b71c09e4-2d3a-4f5b-8c6d-7e8f90a1b2c3
chainfs cat "${disks[@]}" --volume "$vol" | sha256sum
echo "manifest: $(grep -m1 '"sha256"' "$fixtures/02-backing-image/manifest.json")"

step "chainfs map --lvol: which lvol each MiB comes from"
chainfs map "${disks[1]}" --lvol "$vol-r-0d9e8f7a"

step "chainfs mount: every replica, snapshot, backing image and lvol as a flat read-only file"
mkdir -p "$mnt"
chainfs mount "${disks[@]}" "$mnt"
(cd "$mnt" && find . -type f | sort)
replica=$(find "$mnt/volumes/$vol/replicas" -name volume.img)
qemu-img info "$replica" | sed "s|$mnt/||"
cmp "$replica" "$mnt/volumes/$vol/volume.img" && echo "volumes/$vol/volume.img is that replica (the salvage pick)"

step "chainfs export --format qcow2 of a snapshot, compared with the mount"
chainfs export "${disks[@]}" --volume "$vol" --snapshot daily-1 "$work/daily-1.qcow2" --format qcow2 --quiet
qemu-img compare "$work/daily-1.qcow2" "$(dirname "$replica")/snapshots/daily-1.img"

step "chainfs umount; the disk images are unchanged"
chainfs umount "$mnt"
[ "$(sha256sum "${disks[@]}")" = "$before" ] && echo "disk images: unchanged"

#!/usr/bin/env bash
# Backups without restoring: a backup target written by Longhorn's own code
# (engine v1.7.0, lz4; test/fixtures/backupstore-v1.7.0), inspected, mounted,
# read with qemu-img, verified, damaged on a copy and verified again, then
# recovered past the bad block with --bad-blocks zero.
. "$(dirname "$0")/demo-lib.sh" backups

step "A backup target (what an NFS share or an S3 bucket holds): one volume, three backups"
mkdir -p "$work/target"
tar xzf test/fixtures/backupstore-v1.7.0/v170-lz4.tar.gz -C "$work/target"
find "$work/target" -name '*.cfg' | sed "s|$work/||" | sort
echo "$(find "$work/target" -name '*.blk' | wc -l) block files"

step "chainfs inspect TARGET"
chainfs inspect "$work/target"

step "chainfs mount TARGET MP: every backup as a flat read-only image"
mkdir -p "$mnt"
chainfs mount "$work/target" "$mnt"
find "$mnt" | sed "s|$work/||" | sort
qemu-img info "$mnt/volumes/vol-lz4/backups/backup-lz4-03.img"
sha256sum "$mnt/volumes/vol-lz4/backups/backup-lz4-03.img" | sed "s|$work/||"
echo "Longhorn's own restore of backup-lz4-03: $(node -e "const m=require('./test/fixtures/backupstore-v1.7.0/manifest.json');console.log(m.backups.find(b=>b.name==='backup-lz4-03').sha256)")"
chainfs umount "$mnt"

step "chainfs verify TARGET: every block exists, decompresses, matches its checksum"
chainfs verify "$work/target"

step "A damaged copy (one flipped byte in one block), verified again"
cp -a "$work/target" "$work/damaged"
blk=$(find "$work/damaged" -name '8eb7c817*.blk')
printf '\xff' | dd of="$blk" bs=1 seek=100 conv=notrunc status=none
set +e
chainfs verify "$work/damaged"
echo "verify exit code: $?"
chainfs cat "$work/damaged?backup=backup-lz4-03&volume=vol-lz4" > /dev/null
echo "cat exit code: $?"
set -e

step "chainfs export --bad-blocks zero: everything else recovered"
chainfs export "$work/damaged?backup=backup-lz4-03&volume=vol-lz4" "$work/recovered.raw" --bad-blocks zero --quiet | sed "s|$work/||"
qemu-img info "$work/recovered.raw" | head -3 | sed "s|$work/||"
echo "demo done"

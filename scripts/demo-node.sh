#!/usr/bin/env bash
# A whole node (issue #11): two Longhorn disks, two volumes with two
# replicas each that diverged, a backing image on the other disk. Which
# replica would Longhorn pick, and why; mount every replica; compare two;
# export the pick.
. "$(dirname "$0")/demo-lib.sh" node

step "Two data roots as a node leaves them (disk1: Longhorn v1.11 cfg, disk2: a v1.6 one-key cfg)"
# Written the way the engine writes them: sparse 4 KiB-block layers, Go-JSON metadata,
# revision.counter as 4096 bytes, head mtimes to the nanosecond (touch -d @S.N).
node - "$work" <<'EOF'
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const work = process.argv[2];
const MiB = 1 << 20;
const SIZE = 32 * MiB;
const created = '2026-11-29T22:00:00Z';
const bytes = (seed, n) => { const b = Buffer.alloc(n); let s = seed >>> 0; for (let i = 0; i < n; i++) { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; b[i] = s & 0xff; } return b; };
const meta = (name, parent, user) => `${JSON.stringify({ Name: name, Parent: parent, Removed: false, UserCreated: user, Created: created, Labels: null })}\n`;
const disks = [['disk1', '{"diskName":"default-disk-fd0","diskUUID":"5b1c0e8a-7d2f-4c3b-9a6e-1f2d3c4b5a60","diskDriver":"","state":"ready"}'],
  ['disk2', '{"diskUUID":"e4f0a9b2-3c5d-4e6f-8a7b-9c0d1e2f3a4b"}']];
for (const [d, cfg] of disks) {
  fs.mkdirSync(path.join(work, d, 'replicas'), { recursive: true });
  fs.writeFileSync(path.join(work, d, 'longhorn-disk.cfg'), cfg);
}
// A raw backing image on disk2 only.
const bi = path.join(work, 'disk2', 'backing-images', 'debian-base-3a7c1d2e');
fs.mkdirSync(bi, { recursive: true });
const bfd = fs.openSync(path.join(bi, 'backing'), 'w');
fs.ftruncateSync(bfd, 8 * MiB);
fs.writeSync(bfd, bytes(99, 2 * MiB), 0, 2 * MiB, 0);
fs.closeSync(bfd);
fs.writeFileSync(path.join(bi, 'backing.cfg'), '{"name":"debian-base","uuid":"3a7c1d2e","size":8388608,"expectedChecksum":"","currentChecksum":""}');
function replica(disk, dir, { counter, mtime, headWrites, backing }) {
  const p = path.join(work, disk, 'replicas', dir);
  fs.mkdirSync(p, { mode: 0o700 });
  const layer = (file, writes) => { const f = fs.openSync(path.join(p, file), 'w'); fs.ftruncateSync(f, SIZE); for (const [o, b] of writes) fs.writeSync(f, b, 0, b.length, o); fs.closeSync(f); };
  layer('volume-snap-nightly.img', [[0, bytes(1, MiB)], [8 * MiB, bytes(2, 256 * 1024)]]);
  layer('volume-head-001.img', headWrites);
  fs.writeFileSync(path.join(p, 'volume-snap-nightly.img.meta'), meta('volume-head-000.img', '', true));
  fs.writeFileSync(path.join(p, 'volume-head-001.img.meta'), meta('volume-head-001.img', 'volume-snap-nightly.img', false));
  fs.writeFileSync(path.join(p, 'volume.meta'), `${JSON.stringify({ Size: SIZE, Head: 'volume-head-001.img', Dirty: true, Rebuilding: false, Error: '', Parent: 'volume-snap-nightly.img', SectorSize: 512, BackingFilePath: backing ? '/host/var/lib/longhorn/backing-images/debian-base-3a7c1d2e/backing' : '' })}\n`);
  if (counter !== undefined) { const c = Buffer.alloc(4096); c.write(String(counter)); fs.writeFileSync(path.join(p, 'revision.counter'), c, { mode: 0o600 }); }
  execFileSync('touch', ['-m', '-d', `@${mtime}`, path.join(p, 'volume-head-001.img')]);
}
// pvc-web (created on v1.8: no revision.counter): salvage rule. Both heads within 5 s of the newest;
// the one on disk2 has more allocated head bytes (it got the last writes before the crash).
replica('disk1', 'pvc-web-1a2b3c4d', { mtime: '1764453600.250000000', headWrites: [[16 * MiB, bytes(3, 64 * 1024)]] });
replica('disk2', 'pvc-web-9c0d1e2f', { mtime: '1764453597.750000001', headWrites: [[16 * MiB, bytes(3, 64 * 1024)], [20 * MiB, bytes(4, 128 * 1024)]] });
// pvc-db (created on v1.5: revision.counter): the highest counter wins whatever the mtimes.
replica('disk1', 'pvc-db-5e6f7a8b', { counter: 1042, mtime: '1764453500', headWrites: [[MiB, bytes(5, 4096)]], backing: true });
replica('disk2', 'pvc-db-3a4b5c6d', { counter: 1039, mtime: '1764453600', headWrites: [[MiB, bytes(6, 8192)]], backing: true });
fs.mkdirSync(path.join(work, 'disk2', 'replicas', 'lost+found'));
fs.mkdirSync(path.join(work, 'disk1', 'tmp'));
fs.writeFileSync(path.join(work, 'disk1', 'tmp', 'export-5d1e2f3a.tmp'), Buffer.alloc(65536, 1));
EOF
find "$work/disk1" "$work/disk2" -printf '%y %P\n' | sed "s|^d |  dir  |; s|^f |  file |" | sort -k2 | head -40
roots=("$work/disk1" "$work/disk2")

step "chainfs inspect disk1 disk2: every replica, the one Longhorn would pick, and why"
chainfs inspect "${roots[@]}" | sed "s|$work/||g"

step "chainfs mount disk1 disk2 MP: the picks, every replica, the backing image, catalog.json"
mkdir -p "$mnt"
chainfs mount "${roots[@]}" "$mnt"
(cd "$mnt" && find . -mindepth 1 | sort)
qemu-img info "$mnt/volumes/pvc-web/volume.img"
jq -c '.volumes[] | {name, pick, rule}' "$mnt/catalog.json" 2>/dev/null || node -e 'for (const v of JSON.parse(require("fs").readFileSync(process.argv[1])).volumes) console.log(JSON.stringify({name: v.name, pick: v.pick, rule: v.rule}))' "$mnt/catalog.json"

step "chainfs compare: where the two replicas of pvc-web differ (exit 1: different)"
chainfs compare "${roots[@]}" --volume pvc-web --replica pvc-web-1a2b3c4d --replica pvc-web-9c0d1e2f | sed "s|$work/||g" || true
step "chainfs compare --snapshot nightly: the last common snapshot is the same on both (exit 0)"
chainfs compare "${roots[@]}" --volume pvc-web --replica pvc-web-1a2b3c4d --replica pvc-web-9c0d1e2f --snapshot nightly | sed "s|$work/||g"

step "chainfs export the pick (pvc-db's backing image is found on the other disk)"
chainfs export "${roots[@]}" "$work/pvc-db.raw" --volume pvc-db --quiet
cmp "$work/pvc-db.raw" "$mnt/volumes/pvc-db/volume.img" && echo "export of the pick = the mounted pick: identical"
sha256sum "$work/pvc-db.raw" | sed "s|$work/||"

step "chainfs umount"
chainfs umount "$mnt"
grep -qs " $mnt " /proc/mounts && { echo "still mounted!"; exit 1; }
echo "unmounted; demo done"

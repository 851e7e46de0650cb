#!/usr/bin/env node
// Writes a small sample Longhorn data root for the demo, laid out as the v1
// engine writes it: <root>/backing-images/<bi>-<uuid>/backing (qcow2, made
// by qemu-img), and <root>/replicas/<volume>-<id>/ with two snapshots and a
// head. Writes are whole 4 KiB blocks into sparse files, as the engine does;
// one overwrites older data with zeros (allocated zeros hide what is below).
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(process.argv[2] || 'sample');
const MiB = 1 << 20;
const SIZE = 64 * MiB;
const BLOCK = 4096;
const created = '2024-05-01T10:00:00Z';

function bytes(seed, n) { // xorshift32, one step per byte
  const b = Buffer.alloc(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; b[i] = s & 0xff; }
  return b;
}
// Go's json.Encoder: compact, struct field order, trailing newline.
const diskMeta = (name, parent, userCreated, labels) =>
  `${JSON.stringify({ Name: name, Parent: parent, Removed: false, UserCreated: userCreated, Created: created, Labels: labels })}\n`;

fs.rmSync(root, { recursive: true, force: true });
const biDir = path.join(root, 'backing-images', 'ubuntu-demo-3a7c1d2e');
const dir = path.join(root, 'replicas', 'pvc-demo-5f1e2d3c');
fs.mkdirSync(biDir, { recursive: true });
fs.mkdirSync(dir, { recursive: true, mode: 0o700 });

// Backing image: 48 MiB (shorter than the 64 MiB volume), qcow2 with compressed clusters.
const raw = path.join(root, 'backing.raw');
const fd = fs.openSync(raw, 'w');
fs.ftruncateSync(fd, 48 * MiB);
for (let i = 0; i < 48; i += 3) {
  const text = Buffer.from(`backing image block ${i} `.repeat(60000)).subarray(0, MiB);
  fs.writeSync(fd, text, 0, MiB, i * MiB);
}
fs.closeSync(fd);
execFileSync('qemu-img', ['convert', '-q', '-c', '-f', 'raw', '-O', 'qcow2', raw, path.join(biDir, 'backing')]);
fs.rmSync(raw);

function layer(file, writes) {
  const f = fs.openSync(path.join(dir, file), 'w');
  fs.ftruncateSync(f, SIZE);
  for (const [off, buf] of writes) {
    if (off % BLOCK || buf.length % BLOCK) throw new Error('whole blocks only');
    fs.writeSync(f, buf, 0, buf.length, off);
  }
  fs.closeSync(f);
}
layer('volume-snap-nightly-1.img', [[0, bytes(1, MiB)], [10 * MiB, bytes(2, 256 * 1024)]]);
layer('volume-snap-before-upgrade.img', [[4096, Buffer.alloc(8192)], [20 * MiB, bytes(3, 2 * MiB)]]);
layer('volume-head-002.img', [[0, bytes(4, 4096)], [60 * MiB, bytes(5, MiB)], [10 * MiB, Buffer.alloc(64 * 1024)]]);
fs.writeFileSync(path.join(dir, 'volume-snap-nightly-1.img.meta'), diskMeta('volume-head-000.img', '', true, { schedule: 'nightly' }));
fs.writeFileSync(path.join(dir, 'volume-snap-before-upgrade.img.meta'), diskMeta('volume-head-001.img', 'volume-snap-nightly-1.img', true, null));
fs.writeFileSync(path.join(dir, 'volume-head-002.img.meta'), diskMeta('volume-head-002.img', 'volume-snap-before-upgrade.img', false, null));
fs.writeFileSync(path.join(dir, 'volume.meta'), `${JSON.stringify({
  Size: SIZE, Head: 'volume-head-002.img', Dirty: false, Rebuilding: false, Error: '',
  Parent: 'volume-snap-before-upgrade.img', SectorSize: 512,
  BackingFilePath: `/host/var/lib/longhorn/backing-images/ubuntu-demo-3a7c1d2e/backing`,
})}\n`);
process.stdout.write(`${dir}\n`);

/**
 * A replica whose flattened volume is a real ext4 file system: made with
 * `mkfs.ext4 -d`, changed twice through a loop mount, and split by changed
 * 4 KiB blocks into a raw backing image (v1), a snapshot (v1 -> v2) and the
 * head (v2 -> v3). Returns what every file must contain in each version.
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { encodeDiskMeta, encodeVolumeMeta, writeMetaFile } from './replica-meta';

const B = 4096;
const SIZE = 64 << 20;

export interface Ext4Replica {
  dir: string;
  /** path inside the file system -> sha256, for the snapshot view (v2) and the head (v3). */
  snapshotFiles: Map<string, string>;
  headFiles: Map<string, string>;
  snapshot: string;
}

function rand(seed: number, n: number): Buffer {
  const b = Buffer.alloc(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    b[i] = s & 0xff;
  }
  return b;
}

/** path inside `root` -> SHA-256 of every file (lost+found skipped). */
export function hashTree(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.name === 'lost+found') continue;
      if (e.isDirectory()) walk(p);
      else out.set(path.relative(root, p), createHash('sha256').update(fs.readFileSync(p)).digest('hex'));
    }
  };
  walk(root);
  return out;
}

/** Loop-mounts `img` read-write, lets `change` edit it, records the files, unmounts. */
function edit(img: string, mnt: string, change: (root: string) => void): Map<string, string> {
  execFileSync('mount', ['-o', 'loop', img, mnt]);
  try {
    change(mnt);
    execFileSync('sync');
    return hashTree(mnt);
  } finally {
    execFileSync('umount', [mnt]);
  }
}

/** Writes the 4 KiB blocks where `next` differs from `prev` into a new sparse layer file. */
function diffLayer(prev: string, next: string, out: string): void {
  const a = fs.openSync(prev, 'r');
  const b = fs.openSync(next, 'r');
  const o = fs.openSync(out, 'w');
  fs.ftruncateSync(o, SIZE);
  const ba = Buffer.alloc(B);
  const bb = Buffer.alloc(B);
  for (let off = 0; off < SIZE; off += B) {
    fs.readSync(a, ba, 0, B, off);
    fs.readSync(b, bb, 0, B, off);
    if (!ba.equals(bb)) fs.writeSync(o, bb, 0, B, off); // allocated, even when the new block is all zeros
  }
  [a, b, o].forEach((fd) => fs.closeSync(fd));
}

export function buildExt4Replica(tmp: string): Ext4Replica {
  const work = fs.mkdtempSync(path.join(tmp, 'ext4-'));
  const src = path.join(work, 'src');
  const mnt = path.join(work, 'mnt');
  fs.mkdirSync(path.join(src, 'etc'), { recursive: true });
  fs.mkdirSync(mnt);
  fs.writeFileSync(path.join(src, 'etc', 'hostname'), 'node-a\n');
  fs.writeFileSync(path.join(src, 'big.bin'), rand(1, 3 << 20));
  fs.writeFileSync(path.join(src, 'small.txt'), 'version 1\n');
  const v1 = path.join(work, 'v1.raw');
  fs.writeFileSync(v1, '');
  fs.truncateSync(v1, SIZE);
  execFileSync('mkfs.ext4', ['-q', '-F', '-b', '4096', '-E', 'lazy_itable_init=0,lazy_journal_init=0', '-d', src, v1]);

  const v2 = path.join(work, 'v2.raw');
  fs.copyFileSync(v1, v2);
  const snapshotFiles = edit(v2, mnt, (r) => {
    fs.writeFileSync(path.join(r, 'small.txt'), 'version 2\n');
    fs.writeFileSync(path.join(r, 'data2.bin'), rand(2, 1 << 20));
    const fd = fs.openSync(path.join(r, 'big.bin'), 'r+');
    fs.writeSync(fd, Buffer.alloc(256 << 10), 0, 256 << 10, 1 << 20); // zeros over old data
    fs.closeSync(fd);
  });
  const v3 = path.join(work, 'v3.raw');
  fs.copyFileSync(v2, v3);
  const headFiles = edit(v3, mnt, (r) => {
    fs.writeFileSync(path.join(r, 'small.txt'), 'version 3, longer than before\n');
    fs.unlinkSync(path.join(r, 'data2.bin'));
    fs.mkdirSync(path.join(r, 'new'));
    fs.writeFileSync(path.join(r, 'new', 'file.bin'), rand(3, 700_000));
    fs.writeFileSync(path.join(r, 'etc', 'hostname'), 'node-b\n');
  });

  const root = path.join(work, 'longhorn');
  const bi = path.join(root, 'backing-images', 'bi-ext4-0badcafe');
  const dir = path.join(root, 'replicas', 'pvc-ext4-12345678');
  fs.mkdirSync(bi, { recursive: true });
  fs.mkdirSync(dir, { recursive: true });
  fs.copyFileSync(v1, path.join(bi, 'backing'));
  diffLayer(v1, v2, path.join(dir, 'volume-snap-before-upgrade.img'));
  diffLayer(v2, v3, path.join(dir, 'volume-head-001.img'));
  const created = '2024-05-01T10:00:00Z';
  writeMetaFile(path.join(dir, 'volume-snap-before-upgrade.img.meta'), encodeDiskMeta({
    Name: 'volume-head-000.img', Parent: '', Removed: false, UserCreated: true, Created: created, Labels: null,
  }));
  writeMetaFile(path.join(dir, 'volume-head-001.img.meta'), encodeDiskMeta({
    Name: 'volume-head-001.img', Parent: 'volume-snap-before-upgrade.img', Removed: false, UserCreated: false, Created: created, Labels: null,
  }));
  writeMetaFile(path.join(dir, 'volume.meta'), encodeVolumeMeta({
    Size: SIZE, Head: 'volume-head-001.img', Dirty: false, Rebuilding: false, Error: '',
    Parent: 'volume-snap-before-upgrade.img', SectorSize: 512, BackingFilePath: `/host/var/lib/longhorn/backing-images/bi-ext4-0badcafe/backing`,
  }));
  for (const f of [v1, v2, v3]) fs.rmSync(f);
  return { dir, snapshotFiles, headFiles, snapshot: 'before-upgrade' };
}

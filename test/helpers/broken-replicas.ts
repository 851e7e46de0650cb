/**
 * Broken replicas, built for real: a small valid replica (replica-builder)
 * broken in one way each, the way things break in the field (a half-copied
 * directory, a crashed node, a corrupt image, a wrong path in metadata),
 * plus what chainfs must say about it. The hardening tests run every case
 * against every command and check the same properties: exit 1, exactly one
 * line on stderr naming the offending file, no stack trace, done in a few
 * seconds, and the source tree unchanged.
 *
 * A case is data plus one `breakIt` function; adding one is a few lines.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHAINFS } from './cli';
import { type BuiltReplica, buildReplica, type Scenario } from './replica-builder';
import { fingerprintTree } from './tree';

const KiB = 1024;
const MiB = 1024 * KiB;

export type Command = 'inspect' | 'map' | 'cat' | 'mount' | 'export';
export const COMMANDS: readonly Command[] = ['inspect', 'map', 'cat', 'mount', 'export'];

/**
 * When the problem shows. `open`: every command fails before any output
 * (and mount leaves nothing behind). `read`: the metadata is sound, so
 * inspect (and mount) succeed; reading the bad bytes fails: cat and export
 * exit 1, a mounted reader gets EIO.
 */
export type Stage = 'open' | 'read';

export type Base = 'plain' | 'raw' | 'qcow2' | 'qcow2-compressed';

export interface BrokenCase {
  name: string;
  base: Base;
  stage: Stage;
  /** Read-stage only: the mapping itself is bad, so `map` fails too. */
  mapFails?: boolean;
  /** Run the CLI as `nobody` (permission cases: root reads everything). */
  asNobody?: boolean;
  /** Commands that take the case's arguments (default: all). */
  commands?: readonly Command[];
  /** What the one line must say, besides naming the file. */
  message: RegExp;
  /**
   * Breaks the freshly built replica. Returns the path the error line must
   * name, and optionally the DIR argument (default the replica directory)
   * and extra arguments.
   */
  breakIt(r: BuiltReplica, ctx: BreakContext): { file: string; dir?: string; args?: string[] };
}

export interface BreakContext {
  /** A scratch directory inside the fingerprinted tree's parent, for files that must live outside the replica. */
  outside: string;
}

/** A broken replica on disk, ready to run commands against. */
export interface BrokenReplica {
  case: BrokenCase;
  built: BuiltReplica;
  /** The DIR argument. */
  dir: string;
  args: string[];
  /** The path the error line must contain. */
  file: string;
  /** The tree to fingerprint before and after (the data root: replicas and backing images). */
  root: string;
}

// ---------------------------------------------------------------------------
// The valid replicas the cases start from: 1 MiB volumes, two snapshots
// (files volume-snap-s1.img <- volume-snap-s2.img <- volume-head-002.img).
// The chain never writes guest 64 KiB..256 KiB or 640 KiB..1 MiB, so reads
// there go down to the backing image: the qcow2 cases break cluster 10
// (640 KiB), which no readahead from offset 0 reaches.

export const BAD_CLUSTER = 10;
export const QCOW2_CLUSTER = 64 * KiB;

const chainOps: Scenario['ops'] = [
  { op: 'write', offset: 0, length: 64 * KiB, data: { kind: 'seed', seed: 11 } },
  { op: 'snapshot', name: 's1' },
  { op: 'write', offset: 256 * KiB, length: 8 * KiB, data: { kind: 'seed', seed: 12 } },
  { op: 'snapshot', name: 's2' },
  { op: 'write', offset: 512 * KiB, length: 4 * KiB + 100, data: { kind: 'seed', seed: 13 } },
];

const backingWrites = [
  { offset: 0, length: 200 * KiB, data: { kind: 'seed' as const, seed: 21 } },
  { offset: 600 * KiB, length: 200 * KiB, data: { kind: 'seed' as const, seed: 22 } },
];

/**
 * The qcow2 volumes are 8 MiB: the chain resolves 4 MiB regions (REGION_SIZE)
 * at a time and a corrupt mapping fails its whole region, so the second
 * region (data at 5 MiB) is what a mounted reader can still read.
 */
export const GOOD_OFFSET = 5 * MiB;
const bigChainOps: Scenario['ops'] = [...chainOps, { op: 'write', offset: GOOD_OFFSET, length: 8 * KiB, data: { kind: 'seed', seed: 14 } }];

export const BASES: Record<Base, Scenario> = {
  plain: { name: 'plain', size: 1 * MiB, ops: chainOps },
  raw: { name: 'raw', size: 1 * MiB, backing: { format: 'raw', size: 1 * MiB, writes: backingWrites }, ops: chainOps },
  qcow2: {
    name: 'qcow2', size: 8 * MiB, ops: bigChainOps,
    backing: { format: 'qcow2', size: 1 * MiB, writes: backingWrites, qcow2: { clusterSize: QCOW2_CLUSTER, compat: '1.1' } },
  },
  'qcow2-compressed': {
    name: 'qcow2-compressed', size: 8 * MiB, ops: bigChainOps,
    backing: {
      format: 'qcow2', size: 1 * MiB, qcow2: { clusterSize: QCOW2_CLUSTER, compress: true },
      // compressible, or qemu-img convert -c stores the clusters uncompressed
      writes: [backingWrites[0], { offset: 600 * KiB, length: 200 * KiB, data: { kind: 'byte', value: 0x5a } }],
    },
  },
};

export const HEAD = 'volume-head-002.img';
export const S1 = 'volume-snap-s1.img';
export const S2 = 'volume-snap-s2.img';

// ---------------------------------------------------------------------------
// Small tools for breaking files.

const at = (r: BuiltReplica, f: string) => path.join(r.dir, f);

function writeText(file: string, text: string): void {
  fs.rmSync(file, { force: true });
  fs.writeFileSync(file, text);
}

/** Rewrites fields of a JSON metadata file (volume.meta or a .img.meta). */
function editJson(file: string, edit: (o: Record<string, unknown>) => void): void {
  const o = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  edit(o);
  writeText(file, `${JSON.stringify(o)}\n`);
}

function replaceWith(file: string, make: (p: string) => void): void {
  fs.rmSync(file, { recursive: true, force: true });
  make(file);
}

const fifo = (p: string) => spawnSync('mkfifo', [p]);
/** A character device like /dev/null (1,3): opening it would not block, but it is not a layer. */
const chardev = (p: string) => spawnSync('mknod', [p, 'c', '1', '3']);

function patch(file: string, offset: number, bytes: Buffer): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, bytes, 0, bytes.length, offset);
  } finally {
    fs.closeSync(fd);
  }
}

const u32 = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(v >>> 0); return b; };
const u64 = (v: bigint) => { const b = Buffer.alloc(8); b.writeBigUInt64BE(v); return b; };

/** Where things are in a qcow2 file, read by hand (never through chainfs's reader). */
export interface Qcow2Layout {
  fileSize: number;
  clusterSize: number;
  l1Offset: number;
  l1Size: number;
  /** Host offset of the first L2 table (L1[0]). */
  l2Offset: number;
  /** The raw L2 entry of guest cluster `i`. */
  l2Entry(i: number): bigint;
}

export function qcow2Layout(file: string): Qcow2Layout {
  const b = fs.readFileSync(file);
  const clusterSize = 2 ** b.readUInt32BE(20);
  const l1Offset = Number(b.readBigUInt64BE(40));
  const l2Offset = Number(b.readBigUInt64BE(l1Offset) & 0x00fffffffffffe00n);
  return {
    fileSize: b.length, clusterSize, l1Offset, l1Size: b.readUInt32BE(36), l2Offset,
    l2Entry: (i) => b.readBigUInt64BE(l2Offset + 8 * i),
  };
}

const OFLAG_COPIED = 1n << 63n;
const OFLAG_COMPRESSED = 1n << 62n;
const HOST_MASK = 0x00fffffffffffe00n;

/** Host offset of the data of guest cluster `i` (a standard cluster). */
function dataCluster(q: Qcow2Layout, i: number): number {
  const e = q.l2Entry(i);
  if (e & OFLAG_COMPRESSED || (e & HOST_MASK) === 0n) throw new Error(`guest cluster ${i} is not a standard data cluster`);
  return Number(e & HOST_MASK);
}

function setL2(r: BuiltReplica, i: number, entry: bigint): string {
  const q = qcow2Layout(r.backingPath!);
  patch(r.backingPath!, q.l2Offset + 8 * i, u64(entry));
  return r.backingPath!;
}

/** A backing image replaced by `bytes` (a header of another format, ...), padded to `size`. */
function backingBytes(r: BuiltReplica, bytes: Buffer, size = 1 * MiB): string {
  const f = r.backingPath!;
  fs.rmSync(f);
  fs.writeFileSync(f, bytes);
  fs.truncateSync(f, size);
  return f;
}

/** Makes every directory from `base` down world-searchable and every file world-readable (for the nobody cases). */
export function openUp(dir: string): void {
  fs.chmodSync(dir, 0o755);
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) openUp(p);
    else if (e.isFile()) fs.chmodSync(p, 0o644);
  }
}

// ---------------------------------------------------------------------------
// The cases.

const volumeMeta = (r: BuiltReplica) => at(r, 'volume.meta');
const editVolumeMeta = (r: BuiltReplica, edit: (o: Record<string, unknown>) => void) => {
  editJson(volumeMeta(r), edit);
  return { file: volumeMeta(r) };
};

export const BROKEN_CASES: readonly BrokenCase[] = [
  // --- the directory itself
  {
    name: 'replica directory does not exist', base: 'plain', stage: 'open', message: /no such file or directory/,
    breakIt: (r) => ({ file: `${r.dir}-gone`, dir: `${r.dir}-gone` }),
  },
  {
    name: 'a file instead of a directory', base: 'plain', stage: 'open', message: /not a directory \(a regular file\)/,
    breakIt: (r) => ({ file: volumeMeta(r), dir: volumeMeta(r) }),
  },
  {
    name: 'replica directory unreadable (nobody)', base: 'plain', stage: 'open', asNobody: true, message: /permission denied/,
    breakIt: (r) => { fs.chmodSync(r.dir, 0o711); return { file: r.dir }; },
  },

  // --- volume.meta
  {
    name: 'volume.meta: invalid JSON (spread over lines)', base: 'plain', stage: 'open', message: /invalid JSON/,
    breakIt: (r) => { writeText(volumeMeta(r), '{"Size":1048576,\n"Head":\n"volume-head-002.img",,\n}\n'); return { file: volumeMeta(r) }; },
  },
  {
    name: 'volume.meta: cut in the middle (half-copied)', base: 'plain', stage: 'open', message: /invalid JSON/,
    breakIt: (r) => { const t = fs.readFileSync(volumeMeta(r), 'utf8'); writeText(volumeMeta(r), t.slice(0, 30)); return { file: volumeMeta(r) }; },
  },
  {
    name: 'volume.meta: NUL bytes (a crash before the data reached the disk)', base: 'plain', stage: 'open', message: /invalid JSON/,
    breakIt: (r) => { writeText(volumeMeta(r), '\0'.repeat(150)); return { file: volumeMeta(r) }; },
  },
  {
    name: 'volume.meta: Size is a string', base: 'plain', stage: 'open', message: /"Size" must be a number/,
    breakIt: (r) => editVolumeMeta(r, (o) => { o.Size = String(o.Size); }),
  },
  {
    name: 'volume.meta: Size is negative', base: 'plain', stage: 'open', message: /Size -1048576 is not a non-negative integer/,
    breakIt: (r) => editVolumeMeta(r, (o) => { o.Size = -1048576; }),
  },
  {
    name: 'volume.meta: Size is past 2^53 (JSON rounds it: too large, not "no integer")', base: 'plain', stage: 'open',
    message: /Size 100000000000000000000 is too large \(over 2\^53 bytes/,
    breakIt: (r) => editVolumeMeta(r, (o) => { o.Size = 1e20; }),
  },
  {
    name: 'volume.meta: Size is not a multiple of 512', base: 'plain', stage: 'open', message: /Size 1000 is not a multiple of 512/,
    breakIt: (r) => editVolumeMeta(r, (o) => { o.Size = 1000; }),
  },
  {
    name: 'volume.meta: Head does not exist', base: 'plain', stage: 'open', message: /volume-head-009\.img and its \.meta are missing/,
    breakIt: (r) => editVolumeMeta(r, (o) => { o.Head = 'volume-head-009.img'; }),
  },
  {
    name: 'volume.meta: Head climbs out with ../', base: 'plain', stage: 'open', message: /not a plain file name/,
    breakIt: (r) => editVolumeMeta(r, (o) => { o.Head = `../${path.basename(r.dir)}/${HEAD}`; }),
  },
  {
    name: 'volume.meta: Head is ..', base: 'plain', stage: 'open', message: /not a plain file name/,
    breakIt: (r) => editVolumeMeta(r, (o) => { o.Head = '..'; }),
  },
  {
    name: 'volume.meta: Head is an absolute path (to the real head)', base: 'plain', stage: 'open', message: /not a plain file name/,
    breakIt: (r) => editVolumeMeta(r, (o) => { o.Head = at(r, HEAD); }),
  },
  {
    name: 'volume.meta: Parent with / and ..', base: 'plain', stage: 'open', message: /Parent .* not a plain file name/,
    breakIt: (r) => editVolumeMeta(r, (o) => { o.Parent = `volume-snap-../../${S2}`; }),
  },
  {
    name: 'volume.meta: Rebuilding without --force', base: 'plain', stage: 'open', message: /Rebuilding.*--force/,
    breakIt: (r) => editVolumeMeta(r, (o) => { o.Rebuilding = true; }),
  },
  {
    name: 'volume.meta: a FIFO (never blocks)', base: 'plain', stage: 'open', message: /not a regular file \(a FIFO\)/,
    breakIt: (r) => { replaceWith(volumeMeta(r), fifo); return { file: volumeMeta(r) }; },
  },
  {
    name: 'volume.meta: a symbolic link', base: 'plain', stage: 'open', message: /symbolic link \(refused/,
    breakIt: (r, ctx) => {
      const target = path.join(ctx.outside, 'volume.meta');
      fs.copyFileSync(volumeMeta(r), target);
      replaceWith(volumeMeta(r), (p) => fs.symlinkSync(target, p));
      return { file: volumeMeta(r) };
    },
  },
  {
    name: 'volume.meta: absurdly large', base: 'plain', stage: 'open', message: /too large/,
    breakIt: (r) => { fs.appendFileSync(volumeMeta(r), ' '.repeat(2 * MiB)); return { file: volumeMeta(r) }; },
  },
  {
    name: 'volume.meta: unreadable (nobody)', base: 'plain', stage: 'open', asNobody: true, message: /permission denied/,
    breakIt: (r) => { fs.chmodSync(volumeMeta(r), 0o600); return { file: volumeMeta(r) }; },
  },
  {
    name: '--snapshot names no snapshot (lists the existing ones)', base: 'plain', stage: 'open',
    commands: ['map', 'cat', 'export'], message: /no snapshot named "nope"; snapshots: s1, s2/,
    breakIt: (r) => ({ file: r.dir, args: ['--snapshot', 'nope'] }),
  },

  // --- the disks' .img.meta
  {
    name: 'head .img.meta: invalid JSON', base: 'plain', stage: 'open', message: /invalid JSON/,
    breakIt: (r) => { writeText(at(r, `${HEAD}.meta`), '{"Name":"volume-head-002.img","Parent":'); return { file: at(r, `${HEAD}.meta`) }; },
  },
  {
    name: 'oldest snapshot .img.meta: invalid JSON', base: 'plain', stage: 'open', message: /invalid JSON/,
    breakIt: (r) => { writeText(at(r, `${S1}.meta`), 'not json at all\n'); return { file: at(r, `${S1}.meta`) }; },
  },
  {
    name: '.img.meta: Removed is a number', base: 'plain', stage: 'open', message: /"Removed" must be a boolean/,
    breakIt: (r) => { editJson(at(r, `${S2}.meta`), (o) => { o.Removed = 0; }); return { file: at(r, `${S2}.meta`) }; },
  },
  {
    name: '.img.meta missing for a chain member', base: 'plain', stage: 'open', message: /volume-snap-s1\.img\.meta is missing/,
    breakIt: (r) => { fs.rmSync(at(r, `${S1}.meta`)); return { file: at(r, `${S2}.meta`) }; },
  },
  {
    name: '.img.meta: Parent with /', base: 'plain', stage: 'open', message: /Parent .* not a plain file name/,
    breakIt: (r) => { editJson(at(r, `${S2}.meta`), (o) => { o.Parent = `sub/${S1}`; }); return { file: at(r, `${S2}.meta`) }; },
  },
  {
    name: '.img.meta: Parent is an absolute path', base: 'plain', stage: 'open', message: /Parent .* not a plain file name/,
    breakIt: (r) => { editJson(at(r, `${HEAD}.meta`), (o) => { o.Parent = at(r, S2); }); return { file: at(r, `${HEAD}.meta`) }; },
  },
  {
    name: '.img.meta: Parent names a snapshot that does not exist', base: 'plain', stage: 'open', message: /volume-snap-gone\.img and its \.meta are missing/,
    breakIt: (r) => { editJson(at(r, `${S1}.meta`), (o) => { o.Parent = 'volume-snap-gone.img'; }); return { file: at(r, `${S1}.meta`) }; },
  },
  {
    name: 'Parent cycle (s1 -> s2 -> s1)', base: 'plain', stage: 'open', message: /cycle/,
    breakIt: (r) => { editJson(at(r, `${S1}.meta`), (o) => { o.Parent = S2; }); return { file: at(r, `${S1}.meta`) }; },
  },
  {
    name: '.img.meta: a FIFO (never blocks)', base: 'plain', stage: 'open', message: /not a regular file \(a FIFO\)/,
    breakIt: (r) => { replaceWith(at(r, `${S2}.meta`), fifo); return { file: at(r, `${S2}.meta`) }; },
  },
  {
    name: '.img.meta: unreadable (nobody)', base: 'plain', stage: 'open', asNobody: true, message: /permission denied/,
    breakIt: (r) => { fs.chmodSync(at(r, `${S1}.meta`), 0o600); return { file: at(r, `${S1}.meta`) }; },
  },

  // --- the layer files
  {
    name: 'a chain member .img is missing', base: 'plain', stage: 'open', message: /disk file is missing/,
    breakIt: (r) => { fs.rmSync(at(r, S1)); return { file: at(r, S1) }; },
  },
  {
    name: 'the head .img is missing', base: 'plain', stage: 'open', message: /disk file is missing/,
    breakIt: (r) => { fs.rmSync(at(r, HEAD)); return { file: at(r, HEAD) }; },
  },
  {
    name: 'a layer is a symlink leaving the directory', base: 'plain', stage: 'open', message: /symbolic link, not a regular file \(refused\)/,
    breakIt: (r, ctx) => {
      const target = path.join(ctx.outside, 'elsewhere.img');
      fs.copyFileSync(at(r, S2), target);
      replaceWith(at(r, S2), (p) => fs.symlinkSync(target, p));
      return { file: at(r, S2) };
    },
  },
  {
    name: 'the head is a symlink to a file in the directory', base: 'plain', stage: 'open', message: /symbolic link, not a regular file \(refused\)/,
    breakIt: (r) => {
      fs.renameSync(at(r, HEAD), at(r, 'head-data'));
      fs.symlinkSync('head-data', at(r, HEAD));
      return { file: at(r, HEAD) };
    },
  },
  {
    name: 'a layer is a FIFO (never blocks)', base: 'plain', stage: 'open', message: /a FIFO, not a regular file \(refused\)/,
    breakIt: (r) => { replaceWith(at(r, S1), fifo); return { file: at(r, S1) }; },
  },
  {
    name: 'a layer is a character device', base: 'plain', stage: 'open', message: /a character device, not a regular file \(refused\)/,
    breakIt: (r) => { replaceWith(at(r, HEAD), chardev); return { file: at(r, HEAD) }; },
  },
  {
    name: 'the head .img is unreadable (nobody)', base: 'plain', stage: 'open', asNobody: true, message: /permission denied/,
    breakIt: (r) => { fs.chmodSync(at(r, HEAD), 0o600); return { file: at(r, HEAD) }; },
  },
  {
    name: 'a snapshot .img is unreadable (nobody)', base: 'plain', stage: 'open', asNobody: true, message: /permission denied/,
    breakIt: (r) => { fs.chmodSync(at(r, S1), 0o600); return { file: at(r, S1) }; },
  },

  // --- the backing image: where it is
  {
    name: 'backing image missing (lists the paths tried)', base: 'raw', stage: 'open',
    message: /backing image ".*" not found \(tried: .*backing.*\); pass --backing-file/,
    breakIt: (r) => { fs.rmSync(r.backingPath!); return { file: volumeMeta(r) }; },
  },
  {
    name: 'backing image is a FIFO', base: 'raw', stage: 'open', message: /not found \(tried: .*is a FIFO, not a regular file/,
    breakIt: (r) => { replaceWith(r.backingPath!, fifo); return { file: volumeMeta(r) }; },
  },
  {
    name: 'backing image unreadable (nobody)', base: 'raw', stage: 'open', asNobody: true, message: /permission denied/,
    breakIt: (r) => { fs.chmodSync(r.backingPath!, 0o600); return { file: r.backingPath! }; },
  },
  {
    name: "backing image's directory not searchable (nobody)", base: 'raw', stage: 'open', asNobody: true,
    message: /not found \(tried: .*permission denied/,
    breakIt: (r) => { fs.chmodSync(path.dirname(r.backingPath!), 0o700); return { file: volumeMeta(r) }; },
  },
  // --- the backing image: what it is
  {
    name: 'backing image is VMDK', base: 'raw', stage: 'open', message: /vmdk format; only raw and qcow2/,
    breakIt: (r) => ({ file: backingBytes(r, Buffer.from('KDMV\x01\0\0\0', 'latin1')) }),
  },
  {
    name: 'backing image is a LUKS container', base: 'raw', stage: 'open', message: /luks format/,
    breakIt: (r) => ({ file: backingBytes(r, Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe, 0, 2])) }),
  },
  {
    name: 'raw backing image size not a multiple of 512', base: 'raw', stage: 'open', message: /not a multiple of 512/,
    breakIt: (r) => { fs.truncateSync(r.backingPath!, 1 * MiB - 100); return { file: r.backingPath! }; },
  },
  // --- the backing image: qcow2 header and tables (found at open)
  {
    name: 'qcow2: version 4', base: 'qcow2', stage: 'open', message: /unsupported version 4/,
    breakIt: (r) => { patch(r.backingPath!, 4, u32(4)); return { file: r.backingPath! }; },
  },
  {
    name: 'qcow2: cluster_bits 0xffffffff', base: 'qcow2', stage: 'open', message: /cluster_bits 4294967295 is out of range/,
    breakIt: (r) => { patch(r.backingPath!, 20, u32(0xffffffff)); return { file: r.backingPath! }; },
  },
  {
    name: 'qcow2: cluster_bits 8', base: 'qcow2', stage: 'open', message: /cluster_bits 8 is out of range/,
    breakIt: (r) => { patch(r.backingPath!, 20, u32(8)); return { file: r.backingPath! }; },
  },
  {
    name: 'qcow2: encrypted (AES)', base: 'qcow2', stage: 'open', message: /encrypted \(crypt_method 1\)/,
    breakIt: (r) => { patch(r.backingPath!, 32, u32(1)); return { file: r.backingPath! }; },
  },
  {
    name: 'qcow2: a backing file of its own', base: 'qcow2', stage: 'open', message: /backing file of its own/,
    breakIt: (r) => { patch(r.backingPath!, 8, u64(0x200n)); patch(r.backingPath!, 16, u32(4)); return { file: r.backingPath! }; },
  },
  {
    name: 'qcow2: unknown incompatible feature bit', base: 'qcow2', stage: 'open', message: /unknown incompatible feature bits 0x8000/,
    breakIt: (r) => { patch(r.backingPath!, 72, u64(0x8000n)); return { file: r.backingPath! }; },
  },
  {
    name: 'qcow2: huge L1 size', base: 'qcow2', stage: 'open', message: /L1 table has 2147483647 entries, more than qemu's limit/,
    breakIt: (r) => { patch(r.backingPath!, 36, u32(0x7fffffff)); return { file: r.backingPath! }; },
  },
  {
    name: 'qcow2: L1 size within the limit but past the end of the file', base: 'qcow2', stage: 'open', message: /L1 table .* beyond the end of the file/,
    breakIt: (r) => { patch(r.backingPath!, 36, u32(4 * 1024 * 1024)); return { file: r.backingPath! }; },
  },
  {
    name: 'qcow2: L1 table beyond the end of the file', base: 'qcow2', stage: 'open', message: /L1 table at 0x[0-9a-f]+ .* beyond the end of the file/,
    breakIt: (r) => { patch(r.backingPath!, 40, u64(BigInt(64 * MiB))); return { file: r.backingPath! }; },
  },
  {
    name: 'qcow2: L1 table offset unaligned', base: 'qcow2', stage: 'open', message: /L1 table offset 0x[0-9a-f]+ is not cluster-aligned/,
    breakIt: (r) => { const q = qcow2Layout(r.backingPath!); patch(r.backingPath!, 40, u64(BigInt(q.l1Offset + 512))); return { file: r.backingPath! }; },
  },
  {
    name: 'qcow2: L2 table beyond the end of the file', base: 'qcow2', stage: 'open', message: /L2 table at 0x[0-9a-f]+ is beyond the end of the file/,
    breakIt: (r) => { const q = qcow2Layout(r.backingPath!); patch(r.backingPath!, q.l1Offset, u64(OFLAG_COPIED | BigInt(1024 * MiB))); return { file: r.backingPath! }; },
  },
  {
    name: 'qcow2: L2 table offset unaligned', base: 'qcow2', stage: 'open', message: /L2 table offset 0x[0-9a-f]+ is not cluster-aligned/,
    breakIt: (r) => { const q = qcow2Layout(r.backingPath!); patch(r.backingPath!, q.l1Offset, u64(OFLAG_COPIED | BigInt(q.l2Offset + 512))); return { file: r.backingPath! }; },
  },
  {
    name: 'qcow2: truncated inside its L2 table', base: 'qcow2', stage: 'open', message: /L2 table at 0x[0-9a-f]+ is beyond the end of the file/,
    breakIt: (r) => { const q = qcow2Layout(r.backingPath!); fs.truncateSync(r.backingPath!, q.l2Offset + q.clusterSize / 2); return { file: r.backingPath! }; },
  },
  {
    name: 'qcow2: truncated inside its header', base: 'qcow2', stage: 'open', message: /too short for a (version 3 )?header/,
    breakIt: (r) => { fs.truncateSync(r.backingPath!, 80); return { file: r.backingPath! }; },
  },
  // --- the backing image: qcow2 mappings and data (found at read)
  {
    name: 'qcow2: a data cluster beyond the end of the file', base: 'qcow2', stage: 'read', mapFails: true, message: /beyond the end of the file/,
    breakIt: (r) => ({ file: setL2(r, BAD_CLUSTER, OFLAG_COPIED | BigInt(512 * MiB)) }),
  },
  {
    name: 'qcow2: an unaligned data cluster', base: 'qcow2', stage: 'read', mapFails: true, message: /unaligned host offset/,
    breakIt: (r) => { const q = qcow2Layout(r.backingPath!); return { file: setL2(r, BAD_CLUSTER, OFLAG_COPIED | BigInt(dataCluster(q, BAD_CLUSTER) + 512)) }; },
  },
  {
    name: 'qcow2: truncated before its last data clusters', base: 'qcow2', stage: 'read', mapFails: true, message: /beyond the end of the file/,
    breakIt: (r) => { const q = qcow2Layout(r.backingPath!); fs.truncateSync(r.backingPath!, dataCluster(q, BAD_CLUSTER)); return { file: r.backingPath! }; },
  },
  {
    name: 'qcow2: compressed data that does not inflate', base: 'qcow2-compressed', stage: 'read', message: /does not decompress|decompresses to/,
    breakIt: (r) => {
      const q = qcow2Layout(r.backingPath!);
      const e = q.l2Entry(BAD_CLUSTER);
      if (!(e & OFLAG_COMPRESSED)) throw new Error('cluster 10 of the compressed base is not compressed');
      const host = Number(e & ((1n << 54n) - 1n)); // 64 KiB clusters: offset in bits 0..53
      patch(r.backingPath!, host, Buffer.alloc(64, 0xff));
      return { file: r.backingPath! };
    },
  },
];

// ---------------------------------------------------------------------------

/** Builds `c` under `tmp` (a fresh data root per case). */
export function buildBroken(c: BrokenCase, tmp: string): BrokenReplica {
  const built = buildReplica(BASES[c.base], tmp);
  const outside = path.join(path.dirname(built.root), 'outside');
  fs.mkdirSync(outside);
  if (c.asNobody) openUp(path.dirname(built.root));
  const r = c.breakIt(built, { outside });
  settle(path.dirname(built.root));
  return { case: c, built, dir: r.dir ?? built.dir, args: r.args ?? [], file: r.file, root: path.dirname(built.root) };
}

/**
 * fsyncs every regular file under `dir`, so that its st_blocks is final
 * before a fingerprint: ext4 counts an extent-tree block only once delayed
 * allocation is written back, which would look like a change.
 */
export function settle(dir: string): void {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) settle(p);
    else if (e.isFile()) {
      const fd = fs.openSync(p, 'r');
      try {
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Running the real CLI against a broken replica.

export interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
  ms: number;
}

/** `setpriv` prefix that runs a command as nobody:nogroup with no supplementary groups. */
export const AS_NOBODY = ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups'];

/**
 * Runs `chainfs ARGS` asynchronously (so several run at once), killed
 * after `timeoutMs`: a hang shows as signal SIGKILL.
 */
export function runCli(args: string[], opts: { asNobody?: boolean; timeoutMs?: number; cwd?: string } = {}): Promise<Run> {
  const argv = [...(opts.asNobody ? AS_NOBODY : []), CHAINFS, ...args];
  const started = Date.now();
  return new Promise((resolve) => {
    const p = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], timeout: opts.timeoutMs ?? 15_000, killSignal: 'SIGKILL', cwd: opts.cwd });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    p.stdout.on('data', (d: Buffer) => out.push(d));
    p.stderr.on('data', (d: Buffer) => err.push(d));
    p.on('close', (code, signal) => resolve({
      code, signal, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8'), ms: Date.now() - started,
    }));
  });
}

/** The problems with a failed run (empty when it failed exactly as it should). */
export function failureProblems(r: Run, want: { file: string; message: RegExp; code?: number; maxMs?: number }): string[] {
  const problems: string[] = [];
  if (r.signal) problems.push(`killed by ${r.signal} after ${r.ms} ms (a hang?)`);
  if (r.code !== (want.code ?? 1)) problems.push(`exit code ${r.code}, expected ${want.code ?? 1}`);
  if (r.ms > (want.maxMs ?? 8000)) problems.push(`took ${r.ms} ms`);
  const lines = r.stderr.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  if (lines.length !== 1) problems.push(`${lines.length} lines on stderr, expected 1`);
  if (/^\s+at /m.test(r.stderr) || /internal error/.test(r.stderr)) problems.push('a stack trace / internal error');
  const line = lines[0] ?? '';
  if (!line.startsWith('chainfs: ')) problems.push('the line does not start with "chainfs: "');
  if (!line.includes(want.file)) problems.push(`the line does not name ${want.file}`);
  if (!want.message.test(line)) problems.push(`the line does not match ${want.message}`);
  return problems.length ? [...problems, `stderr: ${JSON.stringify(r.stderr)}`] : [];
}

// ---------------------------------------------------------------------------
// The suite: every case against every command.

/** Pids of processes whose command line mentions `needle` (a daemon left behind for a mount point). */
export function processesMentioning(needle: string): number[] {
  const out: number[] = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    try {
      if (fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').includes(needle)) out.push(Number(p));
    } catch {
      // gone
    }
  }
  return out;
}

export function isMountPoint(mp: string): boolean {
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === mp);
}

/**
 * A read of a mounted file: the bytes, or the error code. O_DIRECT (FUSE
 * takes it, unaligned too) so that the daemon answers, not the page cache.
 */
export function readAt(file: string, offset: number, length: number): Buffer | string {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_DIRECT);
    const b = Buffer.alloc(length);
    const n = fs.readSync(fd, b, 0, length, offset);
    return b.subarray(0, n);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? String(e);
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/**
 * What a broken case leaves readable, by hand from the chain s1 <- s2 <- head
 * (the engine opens a view by its own chain only, issue #10): a broken head
 * leaves s1 and s2, a broken s2 leaves s1, a broken s1 or backing image
 * leaves nothing. `inspect` reads metadata only and reports the damage;
 * it fails only where the directory or volume.meta cannot be read.
 */
export interface Damage {
  /** inspect succeeds and its report names the problem. */
  inspectOk: boolean;
  /** Snapshot views that are still served exactly (by cat --snapshot and the mount). */
  survivors: string[];
}

const HEAD_BROKEN = ['s1', 's2'];
const S2_BROKEN = ['s1'];
const DAMAGE: Record<string, Damage> = {
  'volume.meta: Head does not exist': { inspectOk: true, survivors: HEAD_BROKEN },
  'volume.meta: Rebuilding without --force': { inspectOk: true, survivors: [] },
  'head .img.meta: invalid JSON': { inspectOk: true, survivors: HEAD_BROKEN },
  '.img.meta: Parent is an absolute path': { inspectOk: true, survivors: HEAD_BROKEN },
  'the head .img is missing': { inspectOk: true, survivors: HEAD_BROKEN },
  'the head is a symlink to a file in the directory': { inspectOk: true, survivors: HEAD_BROKEN },
  'a layer is a character device': { inspectOk: true, survivors: HEAD_BROKEN },
  'the head .img is unreadable (nobody)': { inspectOk: true, survivors: HEAD_BROKEN },
  '.img.meta: Removed is a number': { inspectOk: true, survivors: S2_BROKEN },
  '.img.meta: Parent with /': { inspectOk: true, survivors: S2_BROKEN },
  '.img.meta: a FIFO (never blocks)': { inspectOk: true, survivors: S2_BROKEN },
  'a layer is a symlink leaving the directory': { inspectOk: true, survivors: S2_BROKEN },
};
const S1_OR_BACKING_BROKEN = [
  'oldest snapshot .img.meta: invalid JSON', '.img.meta missing for a chain member',
  '.img.meta: Parent names a snapshot that does not exist', 'Parent cycle (s1 -> s2 -> s1)', '.img.meta: unreadable (nobody)',
  'a chain member .img is missing', 'a layer is a FIFO (never blocks)', 'a snapshot .img is unreadable (nobody)',
];

/** The damage of an open-stage case: the directory and volume.meta cases are fatal, the rest as listed. */
export function damageOf(c: BrokenCase): Damage {
  if (DAMAGE[c.name]) return DAMAGE[c.name];
  if (S1_OR_BACKING_BROKEN.includes(c.name) || (c.base !== 'plain' && c.stage === 'open')) return { inspectOk: true, survivors: [] };
  return { inspectOk: false, survivors: [] };
}

interface Prepared {
  b: BrokenReplica;
  before: ReturnType<typeof fingerprintTree>;
  runs: Map<Command, Run>;
  /** cat --snapshot of each survivor. */
  survivorRuns: Map<string, Run>;
  mp: string;
  log: string;
  outDir: string;
}

type Fingerprint = ReturnType<typeof fingerprintTree>;

/** What differs between two fingerprints of a tree, one line per path (empty when nothing changed). */
export function treeChanges(before: Fingerprint, after: Fingerprint): string[] {
  const out: string[] = [];
  const show = (f: unknown) => JSON.stringify(f, (_k, v) => (typeof v === 'bigint' ? String(v) : v));
  for (const [p, f] of before) {
    const g = after.get(p);
    if (!g) out.push(`${p}: removed`);
    else if (show(f) !== show(g)) out.push(`${p}: ${show(f)} -> ${show(g)}`);
  }
  for (const p of after.keys()) if (!before.has(p)) out.push(`${p}: created`);
  return out;
}

/** Runs `fn` over `items`, `limit` at a time. */
async function pool<T>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/**
 * Declares, for each case, one test per command plus one for the source
 * tree. The commands are separate processes, so they are all started up
 * front, several cases at a time (node's start-up is most of their cost),
 * and the tests then check what each one did.
 */
export function describeBrokenCases(cases: readonly BrokenCase[]): void {
  let tmp: string;
  const prepared: Prepared[] = [];

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-hardening-'));
    fs.chmodSync(tmp, 0o755); // the nobody cases must reach their files
    // 3 cases at a time: each starts 5 to 7 CLI processes at once, and their guard is 8 s on 2 cores.
    await pool(cases, 3, async (c, i) => { prepared[i] = await prepare(c, i, tmp); });
  });
  afterAll(() => {
    for (const p of prepared) if (p && isMountPoint(p.mp)) spawnSync(CHAINFS, ['umount', p.mp]);
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  describe.each(cases.map((c, i) => [c.name, c, i] as const))('%s', (_name, c, i) => {
    const commands = c.commands ?? COMMANDS;
    const want = () => ({ file: prepared[i].b.file, message: c.message });
    const readOk = (cmd: Command) => c.stage === 'read' && (cmd === 'inspect' || cmd === 'mount' || (cmd === 'map' && !c.mapFails));
    const damage = damageOf(c);
    const reportsIt = c.stage === 'open' && damage.inspectOk;

    for (const cmd of commands.filter((x) => x !== 'mount')) {
      it(`${cmd}: ${readOk(cmd) ? 'succeeds' : cmd === 'inspect' && reportsIt ? 'succeeds and reports the damage' : 'one line naming the file, exit 1'}`, () => {
        const { runs, outDir } = prepared[i];
        const r = runs.get(cmd)!;
        if (readOk(cmd)) {
          expect(r.code, r.stderr).toBe(0);
          expect(r.stderr).toBe('');
          return;
        }
        if (cmd === 'inspect' && reportsIt) {
          expect(r.code, r.stderr).toBe(0);
          expect(r.stderr).toBe('');
          expect(r.stdout.toString()).toMatch(c.message);
          return;
        }
        expect(failureProblems(r, want())).toEqual([]);
        // Nothing that looks like a result: no output before an open-time error, no file left by export.
        if (c.stage === 'open') expect(r.stdout.length).toBe(0);
        if (cmd === 'export') expect(fs.readdirSync(outDir)).toEqual([]);
      });
    }

    for (const snap of c.stage === 'open' ? damage.survivors : []) {
      it(`cat --snapshot ${snap}: served exactly (its chain does not need the broken file)`, () => {
        const r = prepared[i].survivorRuns.get(snap)!;
        expect(r.code, r.stderr).toBe(0);
        expect(r.stdout.equals(prepared[i].b.built.model.view(`volume-snap-${snap}.img`))).toBe(true);
      });
    }

    // (as nobody there is no FUSE at all: the survivors are checked through cat above)
    if (commands.includes('mount') && c.stage === 'open' && damage.survivors.length > 0 && !c.asNobody) {
      it(`mount: serves the surviving snapshots (${damage.survivors.join(', ')}) exactly, and the report says what is broken`, async () => {
        const { runs, mp, b } = prepared[i];
        const r = runs.get('mount')!;
        expect(r.code, r.stderr).toBe(0);
        try {
          expect(fs.readdirSync(path.join(mp, 'snapshots')).sort()).toEqual(damage.survivors.map((s) => `${s}.img`));
          for (const s of damage.survivors) {
            expect(fs.readFileSync(path.join(mp, 'snapshots', `${s}.img`)).equals(b.built.model.view(`volume-snap-${s}.img`))).toBe(true);
          }
          const report = JSON.parse(fs.readFileSync(path.join(mp, 'chain.json'), 'utf8'));
          const problems: string[] = [report.headProblem, ...report.snapshots.map((s: { problem?: string }) => s.problem)];
          expect(problems.filter((p) => p && c.message.test(p)).length, JSON.stringify(problems)).toBeGreaterThan(0);
          expect(r.stderr).toMatch(/warning: .* is not served: /);
        } finally {
          const u = await runCli(['umount', mp]);
          expect(u.code, u.stderr).toBe(0);
        }
        expect(isMountPoint(mp)).toBe(false);
      });
    }

    if (commands.includes('mount') && c.stage === 'open' && damage.survivors.length === 0) {
      it('mount: one line naming the file, exit 1, no mount and no daemon left', () => {
        const { runs, mp } = prepared[i];
        expect(failureProblems(runs.get('mount')!, want())).toEqual([]);
        expect(isMountPoint(mp)).toBe(false);
        expect(processesMentioning(mp)).toEqual([]);
      });
    }

    if (commands.includes('mount') && c.stage === 'read') {
      it('mount: succeeds; reads of the bad bytes fail with EIO, the rest is served, the log says why', async () => {
        const { runs, mp, log, b } = prepared[i];
        const r = runs.get('mount')!;
        expect(r.code, r.stderr).toBe(0);
        try {
          const img = path.join(mp, 'volume.img');
          const head = b.built.model.view(b.built.model.head);
          expect(readAt(img, BAD_CLUSTER * QCOW2_CLUSTER, 4096)).toBe('EIO');
          // The daemon is alive and still serves: chain.json, and the bytes of another region.
          expect(JSON.parse(fs.readFileSync(path.join(mp, 'chain.json'), 'utf8')).head).toBe(HEAD);
          expect(readAt(img, GOOD_OFFSET, 8192)).toEqual(head.subarray(GOOD_OFFSET, GOOD_OFFSET + 8192));
          expect(readAt(img, BAD_CLUSTER * QCOW2_CLUSTER, 4096)).toBe('EIO');
          const text = fs.readFileSync(log, 'utf8');
          expect(text).toMatch(/ error: /);
          expect(text).toContain(b.file);
        } finally {
          const u = await runCli(['umount', mp]);
          expect(u.code, u.stderr).toBe(0);
        }
        expect(isMountPoint(mp)).toBe(false);
        expect(processesMentioning(mp)).toEqual([]);
      });
    }

    it('the replica tree is unchanged (contents, sizes, mtimes)', () => {
      expect(treeChanges(prepared[i].before, fingerprintTree(prepared[i].b.root))).toEqual([]);
    });
  });
}

/** Builds case `c` and runs every command against it at once. */
async function prepare(c: BrokenCase, i: number, tmp: string): Promise<Prepared> {
  const b = buildBroken(c, tmp);
  const before = fingerprintTree(b.root);
  const mp = path.join(tmp, `mnt-${i}`);
  const log = path.join(tmp, `mnt-${i}.log`);
  const outDir = path.join(tmp, `out-${i}`);
  fs.mkdirSync(mp);
  fs.mkdirSync(outDir);
  fs.chmodSync(outDir, 0o777);
  const args: Record<Command, string[]> = {
    inspect: ['inspect', b.dir],
    map: ['map', b.dir],
    cat: ['cat', b.dir],
    export: ['export', b.dir, path.join(outDir, 'out.img'), '--quiet'],
    mount: ['mount', b.dir, mp, '--log', log],
  };
  const runs = new Map<Command, Run>();
  const survivorRuns = new Map<string, Run>();
  await Promise.all([
    ...(c.commands ?? COMMANDS).map(async (cmd) => {
      runs.set(cmd, await runCli([...args[cmd], ...b.args], { asNobody: c.asNobody }));
    }),
    ...(c.stage === 'open' ? damageOf(c).survivors : []).map(async (snap) => {
      survivorRuns.set(snap, await runCli(['cat', b.dir, '--snapshot', snap], { asNobody: c.asNobody }));
    }),
  ]);
  return { b, before, runs, survivorRuns, mp, log, outDir };
}

/**
 * The backup targets of issue #12's rows, written by the tests' target
 * builder (test/helpers/backupstore-builder.ts, which follows
 * ../shared/longhorn-backupstore.md independently of chainfs's reader) and
 * cached under <root>/backup-<size>-<seed>/:
 *
 * - `lz4/` and `gzip/`: a local-directory target holding one backup of a
 *   volume of --size bytes; 60% of its 2 MiB blocks hold data (chosen by the
 *   seed), each about 2:1 compressible: its 4 KiB pages alternate between
 *   random bytes (AES-128-CTR) and zeros or a repeated 16-byte word;
 * - `expected.raw`: the image Longhorn's restore writes for it (the blocks
 *   over zeros), written here from the same plain blocks;
 * - `t1/`: a 1 TiB volume whose backup cfg lists 500,000 blocks, all of
 *   them copies of 64 distinct blocks (a block file is named by checksum, so
 *   they are 64 files: what matters is the cfg);
 * - `s3rver/`: s3rver's data directory, the lz4 target uploaded under
 *   `lz4/` and the 1 TiB one under `t1/` through the SDK.
 *
 * Blocks are generated when the builder asks for them (a Map whose values
 * are made on `get`), so the volume never sits in memory.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BLOCK, type Compression, TargetBuilder, blockPath, volumeDir } from '../test/helpers/backupstore-builder';
import { check, remove } from './proc';
import { Prng, extentBytes } from './random';

/** Bump when the generated files would differ for the same size and seed. */
const GENERATOR = 1;
export const VOLUME = 'pvc-bench0000-0000-4000-8000-000000000001';
export const BACKUP = 'backup-bench0001';
export const T1_VOLUME = 'pvc-bench1tib-0000-4000-8000-000000000002';
export const T1_BACKUP = 'backup-bench1tib';
export const T1_SIZE = 1024 ** 4;
export const T1_BLOCKS = 500_000;
const T1_DISTINCT = 64;
export const BUCKET = 'lh-backups';
const DATA_SHARE = 0.6;
/** extentBytes stream of the backup blocks (the v1 workload uses 0..3). */
const STREAM = 100;

export interface BackupWorkload {
  dir: string;
  size: number;
  seed: number;
  /** Offsets of the 2 MiB blocks holding data, ascending. */
  offsets: number[];
  /** Target directories (each holds backupstore/). */
  targets: Record<'lz4' | 'gzip', string>;
  /** "OFFSET FILE" per referenced block of each target, one a line (the bound scripts' input). */
  blockLists: Record<'lz4' | 'gzip', string>;
  /** The restored image, from the plain blocks. */
  expected: string;
  /** The 1 TiB target and its block offsets (ascending). */
  t1: string;
  t1Offsets: number[];
  /** s3rver's data directory, filled (lz4/ and t1/ in BUCKET). */
  s3rverData: string;
}

/** The plain bytes of the block at slot `slot`: 4 KiB pages alternate random / (zeros or a repeated word). */
export function blockBytes(seed: number, slot: number): Buffer {
  const b = extentBytes(seed, STREAM, slot, BLOCK);
  const word = Buffer.alloc(16);
  word.writeUInt32LE(slot, 0);
  word.write('chainfs-bench', 4, 'latin1');
  for (let page = 1; page < BLOCK / 4096; page += 2) {
    if (page % 4 === 1) b.fill(0, page * 4096, (page + 1) * 4096);
    else b.fill(word, page * 4096, (page + 1) * 4096);
  }
  return b;
}

/**
 * A block map whose values are made when asked for (`get`, iteration),
 * for TargetBuilder.backup: `make(offset)` gives the plain bytes.
 */
class GeneratedBlocks extends Map<number, Buffer> {
  constructor(offsets: number[], private readonly make: (offset: number) => Buffer) {
    super();
    const none = Buffer.alloc(0);
    for (const o of offsets) super.set(o, none);
  }

  override get(offset: number): Buffer | undefined {
    return super.has(offset) ? this.make(offset) : undefined;
  }

  override *entries(): MapIterator<[number, Buffer]> {
    for (const o of this.keys()) yield [o, this.make(o)];
  }

  override [Symbol.iterator](): MapIterator<[number, Buffer]> {
    return this.entries();
  }

  override *values(): MapIterator<Buffer> {
    for (const o of this.keys()) yield this.make(o);
  }
}

function plan(size: number, seed: number): number[] {
  const rng = new Prng(seed, 'backup-blocks');
  const out: number[] = [];
  for (let slot = 0; slot < size / BLOCK; slot++) if (rng.float() < DATA_SHARE) out.push(slot * BLOCK);
  return out;
}

function t1Plan(seed: number): number[] {
  // 500,000 of the 524,288 slots: skip a random 24,288.
  const slots = T1_SIZE / BLOCK;
  const rng = new Prng(seed, 'backup-1t');
  const skip = new Set<number>();
  while (skip.size < slots - T1_BLOCKS) skip.add(rng.below(slots));
  const out: number[] = [];
  for (let s = 0; s < slots; s++) if (!skip.has(s)) out.push(s * BLOCK);
  return out;
}

/** The plain bytes of the 1 TiB backup's block at `offset` (one of 64 distinct blocks). */
export function t1BlockBytes(seed: number, offset: number): Buffer {
  return blockBytes(seed + 1_000_000, (offset / BLOCK) % T1_DISTINCT);
}

function paths(root: string, label: string, size: number, seed: number): BackupWorkload {
  const dir = path.join(root, `backup-${label}-${seed}`);
  return {
    dir, size, seed,
    offsets: plan(size, seed),
    targets: { lz4: path.join(dir, 'lz4'), gzip: path.join(dir, 'gzip') },
    blockLists: { lz4: path.join(dir, 'blocks-lz4.txt'), gzip: path.join(dir, 'blocks-gzip.txt') },
    expected: path.join(dir, 'expected.raw'),
    t1: path.join(dir, 't1'),
    t1Offsets: t1Plan(seed),
    s3rverData: path.join(dir, 's3rver'),
  };
}

const stamp = (part: string, w: BackupWorkload) =>
  `${JSON.stringify({ generator: GENERATOR, part, size: w.size, seed: w.seed, blocks: w.offsets.length })}\n`;

function done(w: BackupWorkload, part: string): boolean {
  try {
    return fs.readFileSync(path.join(w.dir, `stamp-${part}.json`), 'utf8') === stamp(part, w);
  } catch {
    return false;
  }
}

function markDone(w: BackupWorkload, part: string): void {
  fs.writeFileSync(path.join(w.dir, `stamp-${part}.json`), stamp(part, w));
}

const yieldToSignals = () => new Promise<void>((r) => setImmediate(r));

/** One target of the volume's single backup in `method`; also writes its block list. */
async function writeTarget(w: BackupWorkload, method: 'lz4' | 'gzip'): Promise<void> {
  const dir = w.targets[method];
  remove(dir);
  const b = new TargetBuilder(dir);
  b.volume(VOLUME, { size: w.size, compression: method as Compression });
  let made = 0;
  const blocks = new GeneratedBlocks(w.offsets, (o) => { made++; return blockBytes(w.seed, o / BLOCK); });
  b.backup(VOLUME, BACKUP, { blocks, snapshot: 'snap-bench' });
  if (made !== w.offsets.length) throw new Error(`the builder read ${made} blocks of ${w.offsets.length}`);
  await yieldToSignals();
  writeBlockList(w, method);
}

/** "OFFSET FILE" per block the backup cfg lists (read back from the cfg the builder wrote). */
function writeBlockList(w: BackupWorkload, method: 'lz4' | 'gzip'): void {
  const target = w.targets[method];
  const cfg = JSON.parse(fs.readFileSync(path.join(target, volumeDir(VOLUME), 'backups', `backup_${BACKUP}.cfg`), 'utf8')) as
    { Blocks: { Offset: number; BlockChecksum: string }[] };
  const pool = path.join(target, volumeDir(VOLUME), 'blocks');
  const lines = cfg.Blocks.map((b) => `${b.Offset} ${blockPath(pool, b.BlockChecksum)}`);
  if (lines.length !== w.offsets.length) throw new Error(`the ${method} cfg lists ${lines.length} blocks, expected ${w.offsets.length}`);
  fs.writeFileSync(w.blockLists[method], `${lines.join('\n')}\n`);
}

async function writeExpected(w: BackupWorkload): Promise<void> {
  const fd = fs.openSync(w.expected, 'w');
  try {
    fs.ftruncateSync(fd, w.size);
    for (const [i, o] of w.offsets.entries()) {
      fs.writeSync(fd, blockBytes(w.seed, o / BLOCK), 0, BLOCK, o);
      if (i % 64 === 63) await yieldToSignals();
    }
  } finally {
    fs.closeSync(fd);
  }
}

function writeT1(w: BackupWorkload): void {
  remove(w.t1);
  const b = new TargetBuilder(w.t1);
  b.volume(T1_VOLUME, { size: T1_SIZE, compression: 'lz4' });
  const distinct = new Map<number, Buffer>();
  const blocks = new Map<number, Buffer>();
  for (const o of w.t1Offsets) {
    const k = (o / BLOCK) % T1_DISTINCT;
    if (!distinct.has(k)) distinct.set(k, t1BlockBytes(w.seed, o));
    blocks.set(o, distinct.get(k)!); // one Buffer per distinct block: the builder hashes it once
  }
  b.backup(T1_VOLUME, T1_BACKUP, { blocks, snapshot: 'snap-1t' });
}

/**
 * The backup workload of this size and seed, generating what is missing
 * (each part has its own stamp); `log` reports progress. s3rver's data is
 * filled by `upload` (given the running server's endpoint) when missing.
 */
export async function ensureBackupWorkload(root: string, label: string, size: number, seed: number,
  log: (msg: string) => void): Promise<BackupWorkload> {
  const w = paths(root, label, size, seed);
  fs.mkdirSync(w.dir, { recursive: true });
  const t0 = Date.now();
  const step = async (part: string, what: string, fn: () => Promise<void> | void) => {
    if (done(w, part)) return;
    log(`generating ${what} in ${w.dir}`);
    fs.rmSync(path.join(w.dir, `stamp-${part}.json`), { force: true });
    await fn();
    markDone(w, part);
    log(`  done (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  };
  await step('lz4', `the ${label} lz4 backup target`, () => writeTarget(w, 'lz4'));
  await step('gzip', `the ${label} gzip backup target`, () => writeTarget(w, 'gzip'));
  await step('expected', 'the expected image', () => writeExpected(w));
  await step('t1', 'the 1 TiB backup (500,000 blocks)', () => writeT1(w));
  await check(['sync']);
  return w;
}

/** Whether s3rver's data directory already holds both uploads. */
export function uploaded(w: BackupWorkload): boolean {
  return done(w, 's3');
}

/** Uploads the lz4 target (under lz4/) and the 1 TiB one (under t1/) to a fresh s3rver data directory. */
export async function upload(w: BackupWorkload, endpoint: string, uploadDir: (endpoint: string, bucket: string, dir: string, prefix: string) => Promise<number>): Promise<void> {
  await uploadDir(endpoint, BUCKET, w.targets.lz4, 'lz4/');
  await uploadDir(endpoint, BUCKET, w.t1, 't1/');
  markDone(w, 's3');
}

/** Forgets the upload (its data directory is about to be recreated). */
export function dropUpload(w: BackupWorkload): void {
  fs.rmSync(path.join(w.dir, 'stamp-s3.json'), { force: true });
  remove(w.s3rverData);
}

/**
 * Writes Longhorn backup targets on disk per the format
 * (../shared/longhorn-backupstore.md), independently of chainfs's reader:
 * volume.cfg with Go's double-encoded string fields, backup cfgs with the
 * complete merged block list, blocks named by hex(sha512(plain))[0:64] under
 * AA/BB, compressed as Longhorn does (gzip; lz4 frames with content
 * checksum, as pierrec/lz4 writes; none), backing-image cfgs and their
 * shared pool. The expected image of each backup is computed alongside, as
 * Longhorn's restore would write it (blocks over zeros, volume.cfg Size) and
 * as the effective volume (over the backing image).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { compressFrameSync } from 'lz4-napi';

export type Compression = 'gzip' | 'lz4' | 'none';
export const MiB = 1 << 20;
export const BLOCK = 2 * MiB;

export function checksum(data: Buffer | string): string {
  return createHash('sha512').update(data).digest('hex').slice(0, 64);
}

/** Deterministic bytes (xorshift), half compressible: every other 4 KiB is a repeated pattern. */
export function pattern(seed: number, length: number): Buffer {
  const b = Buffer.alloc(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i += 4) {
    if ((i >> 12) % 2 === 1) {
      b.writeUInt32LE(seed >>> 0, i);
      continue;
    }
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    b.writeUInt32LE(x, i);
  }
  return b;
}

export function compress(data: Buffer, method: Compression): Buffer {
  if (method === 'gzip') return zlib.gzipSync(data);
  if (method === 'lz4') return compressFrameSync(data, { contentChecksum: true });
  return data;
}

export function volumeDir(volume: string): string {
  const c = checksum(volume);
  return path.join('backupstore', 'volumes', c.slice(0, 2), c.slice(2, 4), volume);
}

export function blockPath(pool: string, sum: string): string {
  return path.join(pool, sum.slice(0, 2), sum.slice(2, 4), `${sum}.blk`);
}

/** Go's `json:",string"` on a string field: the value JSON-encoded, then encoded again. */
const dbl = (s: string) => JSON.stringify(s);

function write(file: string, data: Buffer | string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, data);
}

export interface VolumeSpec {
  size: number;
  /** Undefined writes a ≤v1.4 volume.cfg (no CompressionMethod: gzip). */
  compression?: Compression;
  backingImage?: { name: string; checksum: string };
}

export interface BackupSpec {
  /** The complete block map (offset → plain data), merged as Longhorn writes it. */
  blocks: Map<number, Buffer>;
  snapshot?: string;
  inProgress?: boolean;
  /** Override the block's stored compression (a block left in another format). */
  storedAs?: Map<number, Compression>;
  parameters?: Record<string, string>;
  /** Write a ≤v1.4 cfg (no CompressionMethod). */
  legacy?: boolean;
}

export class TargetBuilder {
  readonly root: string;
  private readonly volumes = new Map<string, VolumeSpec & { last?: string; created: string; backups: number }>();
  private clock = Date.UTC(2026, 10, 30, 8, 0, 0);
  private readonly sums = new WeakMap<Buffer, string>();

  constructor(root: string) {
    this.root = root;
    fs.mkdirSync(path.join(root, 'backupstore'), { recursive: true });
  }

  private tick(): string {
    this.clock += 60_000;
    return new Date(this.clock).toISOString().replace(/\.\d{3}Z$/, 'Z');
  }

  /** Writes (or rewrites: an expansion) a volume's volume.cfg. */
  volume(name: string, spec: VolumeSpec): void {
    const prev = this.volumes.get(name);
    const v = { ...spec, last: prev?.last, created: prev?.created ?? this.tick(), backups: prev?.backups ?? 0 };
    this.volumes.set(name, v);
    this.writeVolumeCfg(name);
  }

  private writeVolumeCfg(name: string): void {
    const v = this.volumes.get(name)!;
    const cfg: Record<string, unknown> = {
      Name: name, Size: String(v.size),
      Labels: { KubernetesStatus: JSON.stringify({ pvName: `pv-${name}`, namespace: 'default', pvcName: `data-${name}` }) },
      CreatedTime: v.created, LastBackupName: v.last ?? '', LastBackupAt: v.last ? new Date(this.clock).toISOString().replace(/\.\d{3}Z$/, 'Z') : '',
      BlockCount: String(v.backups), BackingImageName: dbl(v.backingImage?.name ?? ''), BackingImageChecksum: dbl(v.backingImage?.checksum ?? ''),
    };
    if (v.compression) Object.assign(cfg, { CompressionMethod: dbl(v.compression), StorageClassName: dbl('longhorn'), DataEngine: dbl('v1') });
    write(path.join(this.root, volumeDir(name), 'volume.cfg'), JSON.stringify(cfg));
  }

  /** Writes one block into a pool (if absent); returns its checksum. */
  block(pool: string, data: Buffer, method: Compression): string {
    let sum = this.sums.get(data); // one buffer at many offsets: hash it once
    if (!sum) this.sums.set(data, (sum = checksum(data)));
    const file = path.join(this.root, blockPath(pool, sum));
    if (!fs.existsSync(file)) write(file, compress(data, method));
    return sum;
  }

  /** A backup of `volume`: its blocks (stored once by checksum) and its cfg. */
  backup(volume: string, name: string, spec: BackupSpec): void {
    const v = this.volumes.get(volume)!;
    const method = v.compression ?? 'gzip';
    const pool = path.join(volumeDir(volume), 'blocks');
    const dir = path.join(this.root, volumeDir(volume), 'backups');
    const cfgFile = path.join(dir, `backup_${name}.cfg`);
    if (spec.inProgress) {
      // What CreateDeltaBlockBackup writes first (deltablock.go): the blocks may follow, the final cfg never did.
      write(cfgFile, JSON.stringify({ Name: name, VolumeName: volume, SnapshotName: '', SnapshotCreatedAt: '', CreatedTime: '', Size: '', Labels: null, IsIncremental: false, CompressionMethod: method, ProcessingBlocks: {}, SingleFile: { FilePath: '' } }));
      for (const [, data] of spec.blocks) this.block(pool, data, method);
      return;
    }
    const offsets = [...spec.blocks.keys()].sort((a, b) => a - b);
    const blocks = offsets.map((off) => ({ Offset: off, BlockChecksum: this.block(pool, spec.blocks.get(off)!, spec.storedAs?.get(off) ?? method) }));
    const created = this.tick();
    const cfg: Record<string, unknown> = {
      Name: name, VolumeName: volume, SnapshotName: spec.snapshot ?? `snap-${name}`, SnapshotCreatedAt: created, CreatedTime: created,
      Size: String(blocks.length * BLOCK), Labels: null, IsIncremental: v.backups > 0,
    };
    if (spec.parameters) cfg.Parameters = spec.parameters;
    if (!spec.legacy) Object.assign(cfg, { CompressionMethod: method, NewlyUploadedDataSize: '0', ReUploadedDataSize: '0', ProcessingBlocks: null });
    if (blocks.length) cfg.Blocks = blocks;
    cfg.SingleFile = { FilePath: '' };
    write(cfgFile, JSON.stringify(cfg));
    v.last = name;
    v.backups += blocks.length;
    this.writeVolumeCfg(volume);
  }

  /** A backing-image backup: cfg and blocks in the one shared pool. Returns the image's SHA-512. */
  backingImage(name: string, data: Buffer, method: Compression): string {
    const pool = path.join('backupstore', 'backing-images', 'blocks');
    const blocks: { Offset: number; BlockChecksum: string }[] = [];
    for (let off = 0; off < data.length; off += BLOCK) {
      const piece = data.subarray(off, Math.min(off + BLOCK, data.length));
      if (piece.every((x) => x === 0)) continue;
      blocks.push({ Offset: off, BlockChecksum: this.block(pool, piece, method) });
    }
    const sha = createHash('sha512').update(data).digest('hex');
    const t = this.tick();
    write(path.join(this.root, 'backupstore', 'backing-images', 'backing-images', name, 'backing-image.cfg'), JSON.stringify({
      Name: name, Size: String(data.length), Labels: null, Checksum: sha, Blocks: blocks, ProcessingBlocks: { Blocks: {} },
      CompressionMethod: method, CreatedTime: t, CompleteTime: t, BlockCount: String(blocks.length),
    }));
    return sha;
  }

  /** The restored image Longhorn writes: the backup's blocks over zeros, at volume.cfg's current Size. */
  static restore(size: number, blocks: Map<number, Buffer>, under?: Buffer): Buffer {
    const img = Buffer.alloc(size);
    if (under) under.copy(img, 0, 0, Math.min(under.length, size));
    for (const [off, data] of blocks) if (off < size) data.copy(img, off, 0, Math.min(data.length, size - off));
    return img;
  }
}

/** What the sample target holds and how each view must read. */
export interface SampleTarget {
  dir: string;
  /** Expected image per view path (the default, effective view). */
  expected: Map<string, Buffer>;
  /** Expected with --no-backing, where it differs. */
  expectedNoBacking: Map<string, Buffer>;
  inProgress: string[];
  /** Unreferenced .blk files (a deleted backup's leftovers, an in-progress backup's uploads). */
  orphans: number;
  backingImage: { name: string; data: Buffer };
}

/**
 * The sample target: three small volumes covering the format's cases.
 * - vol-gzip (≤v1.4 cfgs: no CompressionMethod = gzip): a full backup, an
 *   incremental one (a changed block, a new block, a written zero block), an
 *   in-progress cfg with an uploaded block, and a deleted backup whose block
 *   stayed (garbage).
 * - vol-lz4 (v1.7 cfgs): a backup at 8 MiB, then the volume grew to 16 MiB
 *   (an expansion: the old backup reads 16 MiB, zeros above 8), two offsets
 *   sharing one .blk, and one block left in gzip (Longhorn falls back).
 * - vol-none: compression none over the backing image bi-base (lz4, 5 MiB:
 *   its last block is short), blocks inside and past the image's end.
 */
export function buildSampleTarget(dir: string): SampleTarget {
  const b = new TargetBuilder(dir);
  const expected = new Map<string, Buffer>();
  const expectedNoBacking = new Map<string, Buffer>();
  const p = (v: string, n: string) => `volumes/${v}/backups/${n}.img`;

  // vol-gzip
  b.volume('vol-gzip', { size: 16 * MiB });
  const g1 = new Map([[0, pattern(1, BLOCK)], [2 * BLOCK, pattern(2, BLOCK)], [3 * BLOCK, pattern(3, BLOCK)]]);
  b.backup('vol-gzip', 'g-full', { blocks: g1, legacy: true });
  // A deleted backup's block that GC never removed.
  b.block(path.join(volumeDir('vol-gzip'), 'blocks'), pattern(99, BLOCK), 'gzip');
  const g2 = new Map(g1);
  g2.set(2 * BLOCK, pattern(20, BLOCK));
  g2.set(5 * BLOCK, Buffer.alloc(BLOCK)); // written, all zero: backed up as the zero-block checksum
  g2.set(7 * BLOCK, pattern(7, BLOCK));
  b.backup('vol-gzip', 'g-incr', { blocks: g2, legacy: true });
  b.backup('vol-gzip', 'g-running', { blocks: new Map([[0, pattern(42, BLOCK)]]), inProgress: true });
  expected.set(p('vol-gzip', 'g-full'), TargetBuilder.restore(16 * MiB, g1));
  expected.set(p('vol-gzip', 'g-incr'), TargetBuilder.restore(16 * MiB, g2));

  // vol-lz4: expansion, shared block, a block left in gzip
  b.volume('vol-lz4', { size: 8 * MiB, compression: 'lz4' });
  const shared = pattern(5, BLOCK);
  const l1 = new Map([[0, shared], [2 * BLOCK, shared], [BLOCK, pattern(6, BLOCK)]]);
  b.backup('vol-lz4', 'l-before-expand', { blocks: l1, storedAs: new Map([[BLOCK, 'gzip' as Compression]]), parameters: { 'backup-mode': 'incremental' } });
  b.volume('vol-lz4', { size: 16 * MiB, compression: 'lz4' });
  const l2 = new Map(l1);
  l2.set(6 * BLOCK, pattern(8, BLOCK));
  b.backup('vol-lz4', 'l-after-expand', { blocks: l2, parameters: { 'backup-mode': 'full', 'backup-block-size': '2Mi' } });
  expected.set(p('vol-lz4', 'l-before-expand'), TargetBuilder.restore(16 * MiB, l1));
  expected.set(p('vol-lz4', 'l-after-expand'), TargetBuilder.restore(16 * MiB, l2));

  // vol-none over a backing image
  const biData = Buffer.concat([pattern(11, BLOCK), Buffer.alloc(BLOCK), pattern(12, MiB)]); // 5 MiB, a hole, a short last block
  const biSha = b.backingImage('bi-base', biData, 'lz4');
  b.volume('vol-none', { size: 8 * MiB, compression: 'none', backingImage: { name: 'bi-base', checksum: biSha } });
  const n1 = new Map([[0, pattern(13, BLOCK)], [3 * BLOCK, pattern(14, BLOCK)]]);
  b.backup('vol-none', 'n-1', { blocks: n1 });
  expected.set(p('vol-none', 'n-1'), TargetBuilder.restore(8 * MiB, n1, biData));
  expectedNoBacking.set(p('vol-none', 'n-1'), TargetBuilder.restore(8 * MiB, n1));
  expected.set('backing-images/bi-base.img', biData);

  return {
    dir, expected, expectedNoBacking,
    inProgress: ['vol-gzip/g-running'],
    orphans: 2, // pattern(99) of the deleted backup; pattern(42) uploaded by the in-progress one
    backingImage: { name: 'bi-base', data: biData },
  };
}

export interface Damage {
  /** `volume/backup` → the bad blocks verify must report. */
  bad: Map<string, { offset: number; problem: string }[]>;
}

/**
 * Damages a sample target as the field does: a gzip block with a flipped
 * byte (CRC error, longhorn #7069), a missing .blk (#9765), and a block of a
 * `none` volume stored lz4 (intact, but Longhorn's restore would not read it).
 * Returns what verify must report.
 */
export function damageSampleTarget(dir: string): Damage {
  const pool = (v: string) => path.join(dir, volumeDir(v), 'blocks');
  const f1 = blockPath(pool('vol-gzip'), checksum(pattern(3, BLOCK)));
  const raw = fs.readFileSync(f1);
  raw[Math.floor(raw.length / 2)] ^= 0x40;
  fs.writeFileSync(f1, raw);
  fs.rmSync(blockPath(pool('vol-lz4'), checksum(pattern(8, BLOCK))));
  fs.writeFileSync(blockPath(pool('vol-none'), checksum(pattern(14, BLOCK))), compress(pattern(14, BLOCK), 'lz4'));
  const corrupt = { offset: 3 * BLOCK, problem: 'corrupt' };
  return {
    bad: new Map([
      ['vol-gzip/g-full', [corrupt]], ['vol-gzip/g-incr', [corrupt]],
      ['vol-lz4/l-after-expand', [{ offset: 6 * BLOCK, problem: 'missing' }]],
      ['vol-none/n-1', [{ offset: 3 * BLOCK, problem: 'wrong-compression' }]],
    ]),
  };
}

/** Every file under `dir` with its size, mode, mtime and sha256: a target must be the same after chainfs read it. */
export function fingerprint(dir: string): string {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const f = path.join(d, e.name);
      const st = fs.lstatSync(f);
      if (e.isDirectory()) {
        out.push(`${path.relative(dir, f)}/ ${st.mode.toString(8)} ${st.mtimeMs}`);
        walk(f);
      } else out.push(`${path.relative(dir, f)} ${st.size} ${st.mode.toString(8)} ${st.mtimeMs} ${createHash('sha256').update(fs.readFileSync(f)).digest('hex')}`);
    }
  };
  walk(dir);
  return out.join('\n');
}

/**
 * Qcow2Layer against qemu itself: images written by qemu-img/qemu-io, read
 * through the layer, compared byte for byte with `qemu-img convert -O raw`
 * and run for run with `qemu-img map`. Then broken images, made by patching
 * bytes of valid ones, must fail with a ChainfsError that says what is wrong.
 */
import { describe, it, expect, afterEach } from 'vitest';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';
import { Qcow2Layer, isQcow2 } from '../src/layer/qcow2';
import { ChainfsError, LayerReadError } from '../src/errors';
import type { RunKind } from '../src/layer/layer';
import { qemuImg, qemuIo, qemuMap } from './helpers/qemu';

const KiB = 1024;
const MiB = 1024 * KiB;

// ---------------------------------------------------------------------------
// Fixtures and oracles

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-'));
  dirs.push(d);
  return d;
}

/** Deterministic PRNG (mulberry32) so a failure can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function openImage(file: string): Qcow2Layer {
  const fd = fs.openSync(file, 'r');
  try {
    return Qcow2Layer.open(fd, file, path.basename(file));
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

function withImage<T>(file: string, fn: (layer: Qcow2Layer) => T): T {
  const layer = openImage(file);
  try {
    return fn(layer);
  } finally {
    layer.close();
  }
}

function createImage(file: string, size: number, clusterSize: number, version: 2 | 3): void {
  const compat = version === 2 ? '0.10' : '1.1';
  qemuImg(['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${clusterSize},compat=${compat}`, file, String(size)]);
}

/** The oracle: qemu's own flat view of the image. */
function toRaw(file: string): string {
  const raw = `${file}.raw`;
  qemuImg(['convert', '-f', 'qcow2', '-O', 'raw', file, raw]);
  return raw;
}

/** pread from a raw file, zeros past its end. */
function readRaw(fd: number, len: number, pos: number): Buffer {
  const b = Buffer.alloc(len);
  let got = 0;
  while (got < len) {
    const n = fs.readSync(fd, b, got, len - got, pos + got);
    if (n === 0) break;
    got += n;
  }
  return b;
}

function firstDifference(a: Buffer, b: Buffer): number {
  if (a.equals(b)) return -1;
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return Math.min(a.length, b.length);
}

/** Reads the whole image in `piece`-sized reads and compares with the raw file; returns the first bad offset or -1. */
function compareSequential(layer: Qcow2Layer, rawFd: number, piece: number, from = 0, to = layer.size): number {
  const buf = Buffer.alloc(piece);
  for (let pos = from; pos < to; pos += piece) {
    const n = Math.min(piece, to - pos);
    buf.fill(0xee, 0, n); // the layer must overwrite every byte
    layer.read(buf, 0, n, pos);
    const d = firstDifference(buf.subarray(0, n), readRaw(rawFd, n, pos));
    if (d >= 0) return pos + d;
  }
  return -1;
}

/** Random unaligned reads (some running past the virtual size) into a random spot of a bigger buffer. */
function compareRandom(layer: Qcow2Layer, rawFd: number, count: number, seed: number): void {
  const rnd = prng(seed);
  for (let i = 0; i < count; i++) {
    const len = 1 + Math.floor(rnd() * 300 * KiB);
    const pos = Math.floor(rnd() * (layer.size + 64 * KiB));
    const bufOffset = Math.floor(rnd() * 1000);
    const buf = Buffer.alloc(bufOffset + len + 7, 0xee);
    layer.read(buf, bufOffset, len, pos);
    const want = pos >= layer.size ? Buffer.alloc(len) : readRaw(rawFd, len, pos);
    const d = firstDifference(buf.subarray(bufOffset, bufOffset + len), want);
    expect(d, `read(len=${len}, pos=${pos}) differs at +${d}`).toBe(-1);
    expect(buf[bufOffset - 1] ?? 0xee).toBe(0xee); // nothing written outside the asked range
    expect(buf[bufOffset + len]).toBe(0xee);
  }
}

/**
 * mapDirect, read the way the mount's C path reads it (pread at offset+delta,
 * zeros at or past fileEnd, read() where fd is -1), equals qemu's bytes.
 */
function compareDirect(layer: Qcow2Layer, rawFd: number, count: number, seed: number): void {
  const rnd = prng(seed);
  for (let i = 0; i < count; i++) {
    const len = 1 + Math.floor(rnd() * 300 * KiB);
    const pos = Math.floor(rnd() * (layer.size + 64 * KiB));
    const buf = Buffer.alloc(len, 0xee);
    let covered = pos;
    layer.mapDirect(pos, len, (off, n, fd, delta, fileEnd) => {
      expect(off, 'pieces are consecutive').toBe(covered);
      covered += n;
      const at = off - pos;
      if (fd < 0) {
        layer.read(buf, at, n, off);
        return;
      }
      const inFile = Math.max(0, Math.min(n, fileEnd - (off + delta)));
      expect(fs.readSync(fd, buf, at, inFile, off + delta)).toBe(inFile);
      buf.fill(0, at + inFile, at + n);
    });
    expect(covered).toBe(pos + len);
    const want = pos >= layer.size ? Buffer.alloc(len) : readRaw(rawFd, len, pos);
    const d = firstDifference(buf, want);
    expect(d, `mapDirect(len=${len}, pos=${pos}) differs at +${d}`).toBe(-1);
  }
}

interface Run {
  start: number;
  end: number;
  kind: RunKind;
}

function mergeRuns(runs: Run[]): Run[] {
  const out: Run[] = [];
  for (const r of runs) {
    const prev = out[out.length - 1];
    if (prev && prev.kind === r.kind && prev.end === r.start) prev.end = r.end;
    else out.push({ ...r });
  }
  return out;
}

/** qemu's view of allocation: "zero":true or "data":false reads as zeros. */
function qemuRuns(file: string): Run[] {
  return mergeRuns(qemuMap(file).map((e) => ({
    start: e.start,
    end: e.start + e.length,
    kind: e.zero || !e.data ? ('zero' as const) : ('data' as const),
  })));
}

/** The layer's runs over the whole image, walking blockStatus answers. */
function layerRuns(layer: Qcow2Layer): Run[] {
  const runs: Run[] = [];
  for (let pos = 0; pos < layer.size;) {
    const s = layer.blockStatus(pos, layer.size - pos);
    expect(s.length).toBeGreaterThanOrEqual(1);
    expect(s.kind).not.toBe('absent');
    runs.push({ start: pos, end: Math.min(pos + s.length, layer.size), kind: s.kind });
    pos += s.length;
  }
  return mergeRuns(runs);
}

function kindAt(runs: Run[], offset: number): RunKind {
  const r = runs.find((x) => x.start <= offset && offset < x.end);
  if (!r) throw new Error(`no run at ${offset}`);
  return r.kind;
}

/** blockStatus at random unaligned offsets: the kind is right and the run does not cross a change of kind. */
function checkRandomStatus(layer: Qcow2Layer, expected: Run[], count: number, seed: number): void {
  const rnd = prng(seed);
  for (let i = 0; i < count; i++) {
    const offset = Math.floor(rnd() * layer.size);
    const s = layer.blockStatus(offset, 1 + Math.floor(rnd() * 256 * KiB));
    expect(s.kind, `blockStatus(${offset})`).toBe(kindAt(expected, offset));
    const end = Math.min(offset + s.length, layer.size);
    const r = expected.find((x) => x.start <= offset && offset < x.end)!;
    expect(end, `blockStatus(${offset}) runs past its run`).toBeLessThanOrEqual(r.end);
  }
}

/** Every check against qemu: whole reads in odd pieces, random reads, block status. */
function checkAgainstQemu(file: string, seed: number): void {
  const raw = toRaw(file);
  const rawFd = fs.openSync(raw, 'r');
  try {
    withImage(file, (layer) => {
      expect(layer.size).toBe(fs.statSync(raw).size);
      expect(compareSequential(layer, rawFd, MiB + 4097)).toBe(-1);
      // Small odd pieces over the start and the tail, where the writes are.
      expect(compareSequential(layer, rawFd, 12345, 0, Math.min(layer.size, 8 * MiB))).toBe(-1);
      expect(compareSequential(layer, rawFd, 3000 + 17, Math.max(0, layer.size - MiB))).toBe(-1);
      compareRandom(layer, rawFd, 150, seed);
      compareDirect(layer, rawFd, 100, seed + 2);
      const expected = qemuRuns(file);
      expect(layerRuns(layer)).toEqual(expected);
      checkRandomStatus(layer, expected, 300, seed + 1);
      // Past the virtual size: zeros, never absent.
      expect(layer.blockStatus(layer.size, 10)).toEqual({ kind: 'zero', length: 10 });
      expect(layer.blockStatus(layer.size + 12345, 0).length).toBeGreaterThanOrEqual(1);
      const tail = Buffer.alloc(5000, 0xee);
      layer.read(tail, 0, tail.length, layer.size - 1000);
      expect(tail.subarray(1000).equals(Buffer.alloc(4000))).toBe(true);
    });
  } finally {
    fs.closeSync(rawFd);
  }
}

// ---------------------------------------------------------------------------
// Reading what qemu wrote

interface Case {
  version: 2 | 3;
  clusterSize: number;
  size: number;
}

/** Sizes span several L2 tables where that is cheap; most are not a multiple of the cluster size. */
const CASES: Case[] = [
  { version: 3, clusterSize: 512, size: MiB + 1536 },          // L2 covers 32 KiB: ~33 tables
  { version: 3, clusterSize: 4096, size: 5 * MiB + 1536 },     // L2 covers 2 MiB: 3 tables
  { version: 3, clusterSize: 64 * KiB, size: 600 * MiB + 1536 }, // L2 covers 512 MiB: 2 tables
  { version: 3, clusterSize: 2 * MiB, size: 24 * MiB + 1536 },
  { version: 2, clusterSize: 512, size: MiB + 1536 },
  { version: 2, clusterSize: 4096, size: 5 * MiB + 1536 },
  { version: 2, clusterSize: 64 * KiB, size: 600 * MiB + 1536 },
  { version: 2, clusterSize: 2 * MiB, size: 24 * MiB + 1536 },
];

/**
 * Unaligned data, zeros over data, zero clusters with and without a host
 * cluster, data in a later L2 table, data up to the end of L2 table 0 with
 * table 1 unallocated (where both fit), and the partial last cluster.
 */
function writeScenario(file: string, { clusterSize: cs, size }: Case): void {
  const coverage = cs * (cs / 8); // guest bytes per L2 table
  const far = 2 * coverage + 5 * cs < size - 4 * cs ? 2 * coverage + 5 * cs : 10 * cs;
  const cmds = [
    'write -P 0x11 1000 5000',
    `write -P 0x22 ${cs - 100} 300`,
    `write -P 0x33 ${3 * cs + 13} ${3 * cs + 1001}`,
    `write -z ${4 * cs} ${cs}`,                 // a whole cluster of data becomes a zero cluster
    `write -z -u ${5 * cs} ${cs}`,              // ... and one that also drops its host cluster
    `write -z ${3 * cs + 600} 700`,             // zeros inside a data cluster
    `write -z ${8 * cs} ${2 * cs}`,             // zero clusters where nothing was
    `write -P 0x44 ${far + 777} ${2 * cs + 3}`,
    `write -P 0x55 ${size - cs - 700} ${cs + 700}`, // up to the partial last cluster
    `write -P 0x66 ${far + cs} 512`,            // over part of 0x44
  ];
  if (coverage < size - cs) cmds.push(`write -P 0x77 ${coverage - 2 * cs} ${2 * cs}`);
  qemuIo(file, 'qcow2', cmds);
}

describe('Qcow2Layer reads images written by qemu-io', () => {
  for (const c of CASES) {
    it(`v${c.version}, ${c.clusterSize} B clusters, ${c.size} B`, () => {
      const file = path.join(tempDir(), 'img.qcow2');
      createImage(file, c.size, c.clusterSize, c.version);
      writeScenario(file, c);
      withImage(file, (layer) => {
        expect(layer.version).toBe(c.version);
        expect(layer.clusterSize).toBe(c.clusterSize);
        expect(layer.size).toBe(c.size);
        expect(layer.warnings).toEqual([]);
        expect(layer.allocatedBytes).toBeGreaterThan(0);
      });
      if (c.version === 3) {
        // The scenario must really have produced zero clusters, or half the test is vacuous.
        expect(qemuMap(file).some((e) => e.present && e.zero)).toBe(true);
      }
      checkAgainstQemu(file, c.clusterSize + c.version);
    });
  }

  it('an empty image is all zeros, one run', () => {
    const file = path.join(tempDir(), 'empty.qcow2');
    createImage(file, 3 * MiB, 64 * KiB, 3);
    withImage(file, (layer) => {
      expect(layer.blockStatus(0, 4096)).toEqual({ kind: 'zero', length: 3 * MiB });
      const b = Buffer.alloc(100 * KiB, 0xee);
      layer.read(b, 0, b.length, 12345);
      expect(b.equals(Buffer.alloc(b.length))).toBe(true);
    });
  });

  it('a zero-sized image', () => {
    const file = path.join(tempDir(), 'zero.qcow2');
    createImage(file, 0, 64 * KiB, 3);
    withImage(file, (layer) => {
      expect(layer.size).toBe(0);
      expect(layer.blockStatus(0, 4096)).toEqual({ kind: 'zero', length: 4096 });
      const b = Buffer.alloc(10, 1);
      layer.read(b, 0, 10, 0);
      expect(b.equals(Buffer.alloc(10))).toBe(true);
    });
  });

  it('isQcow2 tells qcow2 from raw and from a short file', () => {
    const dir = tempDir();
    const q = path.join(dir, 'a.qcow2');
    createImage(q, MiB, 64 * KiB, 3);
    const raw = path.join(dir, 'a.raw');
    fs.writeFileSync(raw, Buffer.alloc(4096, 0x51));
    const short = path.join(dir, 'short');
    fs.writeFileSync(short, Buffer.from([0x51, 0x46, 0x49]));
    for (const [f, want] of [[q, true], [raw, false], [short, false]] as const) {
      const fd = fs.openSync(f, 'r');
      try {
        expect(isQcow2(fd), f).toBe(want);
      } finally {
        fs.closeSync(fd);
      }
    }
  });
});

// ---------------------------------------------------------------------------
// Compressed images (qemu-img convert -c)

/**
 * Per cluster: compressible random text (16 letters: compresses to about
 * half), incompressible random bytes (qemu stores those uncompressed), or
 * zeros (left unallocated). Purely random content would not be compressed.
 */
function mixedContent(size: number, clusterSize: number, seed: number): Buffer {
  const rnd = prng(seed);
  const b = Buffer.alloc(size);
  for (let c = 0; c * clusterSize < size; c++) {
    const start = c * clusterSize;
    const end = Math.min(start + clusterSize, size);
    if (c % 7 === 3) continue; // zeros
    const incompressible = c % 5 === 1;
    for (let i = start; i < end; i++) {
      const r = Math.floor(rnd() * 256);
      b[i] = incompressible ? r : 0x61 + (r & 15);
    }
  }
  return b;
}

function compressedImage(dir: string, c: Case, seed: number): { file: string; src: string } {
  const src = path.join(dir, 'src.raw');
  fs.writeFileSync(src, mixedContent(c.size, c.clusterSize, seed));
  const file = path.join(dir, 'c.qcow2');
  const compat = c.version === 2 ? '0.10' : '1.1';
  qemuImg(['convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', `cluster_size=${c.clusterSize},compat=${compat}`, src, file]);
  return { file, src };
}

function compressedClusterCount(file: string): number {
  const check = JSON.parse(qemuImg(['check', '--output=json', file])) as { 'compressed-clusters'?: number };
  return check['compressed-clusters'] ?? 0;
}

const COMPRESSED_CASES: Case[] = [
  { version: 3, clusterSize: 512, size: 300 * KiB + 1536 },
  { version: 3, clusterSize: 4096, size: 3 * MiB + 1536 },    // crosses an L2 table
  { version: 3, clusterSize: 64 * KiB, size: 3 * MiB + 1536 },
  { version: 3, clusterSize: 2 * MiB, size: 13 * MiB + 1536 },
  { version: 2, clusterSize: 64 * KiB, size: 3 * MiB + 1536 },
];

describe('Qcow2Layer reads compressed images', () => {
  for (const c of COMPRESSED_CASES) {
    it(`v${c.version}, ${c.clusterSize} B clusters`, () => {
      const { file, src } = compressedImage(tempDir(), c, c.clusterSize);
      expect(compressedClusterCount(file)).toBeGreaterThan(0);
      checkAgainstQemu(file, c.clusterSize);
      // And against the source itself, in the 4 KiB..128 KiB pieces a sequential reader uses.
      const srcFd = fs.openSync(src, 'r');
      try {
        withImage(file, (layer) => {
          expect(compareSequential(layer, srcFd, 4096)).toBe(-1);
          expect(compareSequential(layer, srcFd, 128 * KiB)).toBe(-1);
        });
      } finally {
        fs.closeSync(srcFd);
      }
    });
  }

  it('tolerates the last compressed cluster ending before its last sector (file cut short)', () => {
    const c: Case = { version: 3, clusterSize: 64 * KiB, size: MiB };
    const { file, src } = compressedImage(tempDir(), c, 7);
    const last = compressedEntries(file).reduce((a, b) => (b.host > a.host ? b : a));
    // Cut the file right after the last non-zero byte of that cluster's data,
    // so its descriptor's sectors run past the end of the file.
    const bytes = fs.readFileSync(file);
    let end = bytes.length;
    while (end > last.host && bytes[end - 1] === 0) end--;
    expect(end).toBeGreaterThan(last.host);
    expect(last.host + last.bytes).toBeGreaterThan(end);
    fs.truncateSync(file, end);
    const srcFd = fs.openSync(src, 'r');
    try {
      withImage(file, (layer) => expect(compareSequential(layer, srcFd, 64 * KiB)).toBe(-1));
    } finally {
      fs.closeSync(srcFd);
    }
  });
});

// ---------------------------------------------------------------------------
// Broken images: a test-side reader of the first L2 table, and byte patches

interface L2Slot {
  /** Byte offset of the entry in the file. */
  at: number;
  entry: bigint;
}

/** The entries of the L2 table under L1[0] (images here are smaller than one L2 table's reach). */
function firstL2Table(file: string): { l1Offset: number; l2Offset: number; slots: L2Slot[] } {
  const b = fs.readFileSync(file);
  const cs = 2 ** b.readUInt32BE(20);
  const l1Offset = Number(b.readBigUInt64BE(40));
  const l2Offset = Number(b.readBigUInt64BE(l1Offset) & 0x00fffffffffffe00n);
  const slots: L2Slot[] = [];
  for (let i = 0; i < cs / 8; i++) slots.push({ at: l2Offset + i * 8, entry: b.readBigUInt64BE(l2Offset + i * 8) });
  return { l1Offset, l2Offset, slots };
}

/** Compressed clusters of L1[0]: guest index, data offset, bytes the descriptor spans. */
function compressedEntries(file: string): { index: number; at: number; host: number; bytes: number }[] {
  const clusterBits = fs.readFileSync(file).readUInt32BE(20);
  const x = BigInt(62 - (clusterBits - 8));
  return firstL2Table(file).slots.flatMap((s, index) => {
    if (!(s.entry & (1n << 62n))) return [];
    const host = Number(s.entry & ((1n << x) - 1n));
    const sectors = Number((s.entry >> x) & ((1n << (62n - x)) - 1n)) + 1;
    return [{ index, at: s.at, host, bytes: sectors * 512 - (host % 512) }];
  });
}

function patch(file: string, at: number, bytes: Buffer): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, bytes, 0, bytes.length, at);
  } finally {
    fs.closeSync(fd);
  }
}

const u32 = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(v); return b; };
const u64 = (v: bigint) => { const b = Buffer.alloc(8); b.writeBigUInt64BE(v); return b; };

/** A valid v3 image, 64 KiB clusters, 4 MiB, data in clusters 0, 2 and 3. */
function baseImage(version: 2 | 3 = 3): string {
  const file = path.join(tempDir(), 'base.qcow2');
  createImage(file, 4 * MiB, 64 * KiB, version);
  qemuIo(file, 'qcow2', ['write -P 0xab 0 64k', 'write -P 0xcd 128k 128k']);
  return file;
}

function thrown(fn: () => unknown): ChainfsError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ChainfsError);
    return e as ChainfsError;
  }
  throw new Error('expected an error, got none');
}

function expectOpenError(file: string, message: RegExp): void {
  const e = thrown(() => openImage(file).close());
  expect(e.message).toMatch(message);
  expect(e.message).toContain(file);
  expect(e.message).not.toContain('\n');
}

/** Opens fine, then read and blockStatus over guest `offset` fail with LayerReadError. */
function expectReadError(file: string, offset: number, message: RegExp): void {
  withImage(file, (layer) => {
    const r = thrown(() => layer.read(Buffer.alloc(4096), 0, 4096, offset));
    expect(r).toBeInstanceOf(LayerReadError);
    expect(r.message).toMatch(message);
    expect(r.code).toBe('EIO');
  });
}

describe('Qcow2Layer refuses broken images at open', () => {
  const headerPatches: [string, number, Buffer, RegExp][] = [
    ['bad magic', 0, u32(0x514649fa), /bad magic/],
    ['version 4', 4, u32(4), /unsupported version 4/],
    ['version 1', 4, u32(1), /unsupported version 1/],
    ['cluster_bits 30', 20, u32(30), /cluster_bits 30 is out of range/],
    ['cluster_bits 8', 20, u32(8), /cluster_bits 8 is out of range/],
    ['L1 table beyond EOF', 40, u64(0x40000000n), /L1 table at 0x40000000 .*beyond the end of the file/],
    ['L1 offset unaligned', 40, u64(0x30200n), /L1 table offset 0x30200 is not cluster-aligned/],
    ['L1 offset past 2^53', 40, u64(1n << 60n), /L1 table offset .* too large/],
    ['huge l1_size', 36, u32(0xffffffff), /L1 table has 4294967295 entries, more than qemu's limit/],
    ['l1_size 0', 36, u32(0), /L1 table has 0 entries, too few for the virtual size/],
    ['size not a multiple of 512', 24, u64(4n * 1024n * 1024n + 100n), /virtual size 4194404 is not a multiple of 512/],
    ['size 2^62', 24, u64(1n << 62n), /virtual size .* too large/],
    ['size beyond what l1_size covers', 24, u64(1n << 40n), /too few for the virtual size/],
    ['encryption', 32, u32(1), /encrypted \(crypt_method 1\)/],
    ['LUKS encryption', 32, u32(2), /encrypted \(crypt_method 2\)/],
    ['a backing file', 8, u64(0x200n), /backing file of its own/],
    ['external data file', 72, u64(1n << 2n), /external data file/],
    ['compression type bit', 72, u64(1n << 3n), /compression type other than deflate/],
    ['zstd compression_type byte', 104, Buffer.from([1]), /compression type other than deflate \(compression_type 1\)/],
    ['extended L2 entries', 72, u64(1n << 4n), /extended L2 entries/],
    ['unknown incompatible bit', 72, u64(1n << 9n), /unknown incompatible feature bits 0x200/],
    ['header_length 8', 100, u32(8), /header_length 8/],
    ['header_length beyond the cluster', 100, u32(1 << 20), /header_length 1048576 exceeds/],
  ];
  for (const [what, at, bytes, message] of headerPatches) {
    it(what, () => {
      const file = baseImage();
      patch(file, at, bytes);
      expectOpenError(file, message);
    });
  }

  it('a file too short for a header', () => {
    const file = baseImage();
    fs.truncateSync(file, 50);
    expectOpenError(file, /too short for a header \(50 bytes\)/);
  });

  it('a file cut inside the L1 table', () => {
    const file = baseImage();
    const { l1Offset } = firstL2Table(file);
    fs.truncateSync(file, l1Offset + 4);
    expectOpenError(file, /L1 table at .* beyond the end of the file/);
  });

  it('an L2 table offset beyond EOF', () => {
    const file = baseImage();
    const { l1Offset } = firstL2Table(file);
    patch(file, l1Offset, u64((1n << 63n) | 0x10000000n));
    expectOpenError(file, /L1 entry 0 .*L2 table at 0x10000000 is beyond the end of the file/);
  });

  it('an unaligned L2 table offset', () => {
    const file = baseImage();
    const { l1Offset, l2Offset } = firstL2Table(file);
    patch(file, l1Offset, u64(BigInt(l2Offset + 512)));
    expectOpenError(file, /L2 table offset .* is not cluster-aligned/);
  });

  it('reserved bits in an L1 entry', () => {
    const file = baseImage();
    const { l1Offset, l2Offset } = firstL2Table(file);
    patch(file, l1Offset, u64(BigInt(l2Offset) | (1n << 57n)));
    expectOpenError(file, /L1 entry 0 .*reserved bits set/);
  });
});

describe('Qcow2Layer opens suspect images with a warning', () => {
  for (const [bit, message] of [[0n, /dirty bit set/], [1n, /corrupt bit set/]] as const) {
    it(`incompatible bit ${bit}`, () => {
      const file = baseImage();
      const raw = toRaw(file);
      patch(file, 72, u64(1n << bit));
      withImage(file, (layer) => {
        expect(layer.warnings).toHaveLength(1);
        expect(layer.warnings[0]).toMatch(message);
        const b = Buffer.alloc(layer.size);
        layer.read(b, 0, b.length, 0);
        expect(b.equals(fs.readFileSync(raw))).toBe(true);
      });
    });
  }
});

describe('Qcow2Layer reports corrupt mappings when reading', () => {
  function patchEntry(file: string, index: number, fn: (e: bigint) => bigint): void {
    const slot = firstL2Table(file).slots[index]!;
    patch(file, slot.at, u64(fn(slot.entry)));
  }

  it('reserved bits in an L2 entry', () => {
    const file = baseImage();
    patchEntry(file, 2, (e) => e | (1n << 58n));
    expectReadError(file, 128 * KiB + 5, /L2 entry .* for guest offset 0x20000 has reserved bits set/);
    withImage(file, (layer) => {
      // The zero run from cluster 1 must look at cluster 2 to end; the data run of cluster 0 ends before it.
      expect(() => layer.blockStatus(64 * KiB, 4096)).toThrow(LayerReadError);
      expect(layer.blockStatus(0, 4 * MiB)).toEqual({ kind: 'data', length: 64 * KiB });
    });
  });

  it('a data cluster beyond EOF', () => {
    const file = baseImage();
    patchEntry(file, 3, (e) => (e & ~0x00fffffffffffe00n) | 0x40000000n);
    expectReadError(file, 3 * 64 * KiB, /points at 0x40000000, beyond the end of the file/);
  });

  it('an unaligned data cluster', () => {
    const file = baseImage();
    patchEntry(file, 0, (e) => e + 512n);
    expectReadError(file, 0, /unaligned host offset/);
  });

  it('a zero flag in a version 2 image', () => {
    const file = baseImage(2);
    patchEntry(file, 0, (e) => e | 1n);
    expectReadError(file, 100, /zero cluster in a version 2 image/);
  });

  it('a file cut before its data clusters', () => {
    const file = baseImage();
    const dataStart = Number(firstL2Table(file).slots[0]!.entry & 0x00fffffffffffe00n);
    fs.truncateSync(file, dataStart);
    expectReadError(file, 0, /beyond the end of the file/);
  });

  it('a data cluster cut by EOF reads zeros past it, as qemu does', () => {
    const file = baseImage();
    const slots = firstL2Table(file).slots;
    const lastData = Math.max(...slots.map((s) => Number(s.entry & 0x00fffffffffffe00n)));
    fs.truncateSync(file, lastData + 1000);
    const raw = toRaw(file);
    withImage(file, (layer) => {
      const b = Buffer.alloc(layer.size);
      layer.read(b, 0, b.length, 0);
      expect(firstDifference(b, fs.readFileSync(raw))).toBe(-1);
    });
  });

  describe('compressed clusters', () => {
    const c: Case = { version: 3, clusterSize: 64 * KiB, size: MiB };
    const firstCompressed = (file: string) => compressedEntries(file)[0]!;

    it('garbage instead of deflate data', () => {
      const { file } = compressedImage(tempDir(), c, 3);
      const e = firstCompressed(file);
      patch(file, e.host, Buffer.alloc(64, 0xff));
      expectReadError(file, e.index * c.clusterSize + 77, /compressed cluster .* does not decompress/);
    });

    it('a valid deflate stream that is too short', () => {
      const { file } = compressedImage(tempDir(), c, 3);
      const e = firstCompressed(file);
      const short = zlib.deflateRawSync(Buffer.alloc(100, 1));
      patch(file, e.host, short);
      expectReadError(file, e.index * c.clusterSize, /decompresses to 100 bytes, not 65536/);
    });

    it('a compressed offset using the top bit of its field (64 KiB clusters: bit 53)', () => {
      const { file } = compressedImage(tempDir(), c, 3);
      const e = firstCompressed(file);
      patch(file, e.at, u64(BigInt(e.host) | (1n << 62n) | (1n << 53n)));
      expectReadError(file, e.index * c.clusterSize, /L2 entry 0x[0-9a-f]{16} .* has compressed data at 0x200000000[0-9a-f]{5}, beyond the end of the file/);
    });

    it('a compressed offset above 2^56 (512 B clusters: a 61-bit field)', () => {
      const small: Case = { version: 3, clusterSize: 512, size: 64 * KiB };
      const { file } = compressedImage(tempDir(), small, 3);
      const e = firstCompressed(file);
      patch(file, e.at, u64(BigInt(e.host) | (1n << 62n) | (1n << 57n)));
      expectReadError(file, e.index * small.clusterSize, /compressed offset beyond 2\^56/);
    });

    it('compressed data beyond EOF', () => {
      const { file } = compressedImage(tempDir(), c, 3);
      const e = firstCompressed(file);
      patch(file, e.at, u64(1n << 62n | 0x7000000n));
      expectReadError(file, e.index * c.clusterSize, /compressed data at 0x7000000, beyond the end of the file/);
    });
  });
});

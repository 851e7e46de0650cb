/**
 * Fuzzing the qcow2 reader (fast-check) with images qemu wrote, mutated
 * where it hurts (header fields, L1 and L2 entries, compressed data, the
 * file's length) and at random, and with random bytes behind a qcow2 magic.
 * Each input either opens or is refused with a ChainfsError; an image that
 * opens is then mapped and read, and may only fail with a ChainfsError
 * (LayerReadError). No run takes long, and memory stays bounded (the reader
 * holds at most its L1 table, 8 MiB of L2 tables and 4 inflated clusters).
 *
 * Where both chainfs and qemu read a mutated image without error, they must
 * return the same bytes (qemu-img convert is the oracle), on a sample.
 *
 * FUZZ_SEED picks the seed (default fixed), FUZZ_RUNS scales the runs.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChainfsError } from '../src/errors';
import type { Layer } from '../src/layer/layer';
import { openImage } from '../src/layer/open-image';
import { qemuImg, qemuIo } from './helpers/qemu';

const SEED = Number(process.env.FUZZ_SEED ?? 20241126);
const SCALE = Number(process.env.FUZZ_RUNS ?? 1);
const runs = (n: number) => ({ seed: SEED, numRuns: Math.max(1, Math.round(n * SCALE)) });
/** Test timeout that grows with FUZZ_RUNS. */
const TIMEOUT = 120_000 * Math.max(1, SCALE);
const KiB = 1024;
const MiB = 1024 * KiB;

interface Base {
  name: string;
  bytes: Buffer;
  /** Offsets worth hitting: header fields, L1 and L2 entries, the start of data. */
  hot: number[];
}

let tmp: string;
const bases: Base[] = [];

/** Hand-read layout of a qcow2 file (independent of the reader under test). */
function hotOffsets(b: Buffer): number[] {
  const header = [4, 8, 16, 20, 24, 28, 32, 36, 40, 44, 48, 56, 60, 64, 72, 80, 88, 96, 100, 104];
  const l1 = Number(b.readBigUInt64BE(40));
  const l1Size = b.readUInt32BE(36);
  const out = [...header];
  for (let i = 0; i < Math.min(l1Size, 4); i++) out.push(l1 + 8 * i);
  const l2 = Number(b.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
  if (l2 > 0 && l2 < b.length) {
    for (let i = 0; i < 64 && l2 + 8 * i < b.length; i++) out.push(l2 + 8 * i);
    const e = b.readBigUInt64BE(l2);
    const host = Number(e & 0x00fffffffffffe00n);
    if (host > 0 && host < b.length) out.push(host, host + 1, host + 511);
  }
  return out.filter((o) => o + 8 <= b.length);
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-fuzz-qcow2-'));
  const make = (name: string, opts: string, size: number, cmds: string[], compress = false) => {
    const file = path.join(tmp, `${name}.qcow2`);
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', opts, file, String(size)]);
    if (cmds.length) qemuIo(file, 'qcow2', cmds);
    let final = file;
    if (compress) {
      final = path.join(tmp, `${name}-c.qcow2`);
      qemuImg(['convert', '-q', '-c', '-f', 'qcow2', '-O', 'qcow2', '-o', opts, file, final]);
    }
    const bytes = fs.readFileSync(final);
    bases.push({ name, bytes, hot: hotOffsets(bytes) });
  };
  make('v3-64k', 'cluster_size=65536,compat=1.1', 2 * MiB, ['write -P 0xab 0 64k', 'write -P 0xcd 192k 100k', 'write -z 512k 64k', 'write -P 0x11 1m 4k', 'write -z 1m 64k']);
  make('v2-512', 'cluster_size=512,compat=0.10', 256 * KiB, ['write -P 0x5a 0 8k', 'write -P 0x33 100k 3k']);
  make('v3-4k-compressed', 'cluster_size=4096,compat=1.1', 512 * KiB, ['write -P 0x61 0 64k', 'write -P 0x62 128k 8k', 'write -P 0x63 300k 20k'], true);
  make('v3-2m', 'cluster_size=2097152,compat=1.1', 8 * MiB, ['write -P 0x77 0 4k', 'write -P 0x78 6m 4k']);
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Values that matter in qcow2 fields: zero, flags, the file's size, alignment, the top bits. */
function interesting64(fileSize: number): fc.Arbitrary<bigint> {
  return fc.oneof(
    fc.constantFrom(0n, 1n, 0x200n, 0x10000n, 1n << 62n, 1n << 63n, (1n << 63n) | 0x10000n, (1n << 63n) | 0x10200n,
      (1n << 62n) | 0x10000n, (1n << 62n) | (0x3fffn << 48n), 1n << 53n, 1n << 56n, (1n << 64n) - 1n,
      BigInt(fileSize), BigInt(fileSize) + 0x10000n, BigInt(fileSize) - 512n),
    fc.bigInt(0n, (1n << 64n) - 1n),
    fc.bigInt(0n, BigInt(fileSize) * 2n).map((v) => v & ~0x1ffn),
  );
}

interface Edit { at: number; bytes: Buffer }

function mutated(): fc.Arbitrary<{ base: number; edits: Edit[]; cut: number | null }> {
  return fc.nat(bases.length - 1).chain((i) => {
    const b = bases[i];
    const at = fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...b.hot) }, { weight: 1, arbitrary: fc.nat(b.bytes.length - 8) });
    const value = fc.oneof(
      interesting64(b.bytes.length).map((v) => { const x = Buffer.alloc(8); x.writeBigUInt64BE(v); return x; }),
      fc.integer({ min: 0, max: 0xffffffff }).map((v) => { const x = Buffer.alloc(4); x.writeUInt32BE(v); return x; }),
      fc.constantFrom(0, 1, 2, 3, 8, 9, 16, 21, 22, 63, 64, 0xff).map((v) => { const x = Buffer.alloc(4); x.writeUInt32BE(v); return x; }),
      fc.uint8Array({ minLength: 1, maxLength: 16 }).map((a) => Buffer.from(a)),
    );
    return fc.record({
      base: fc.constant(i),
      edits: fc.array(fc.record({ at, bytes: value }), { minLength: 1, maxLength: 4 }),
      cut: fc.option(fc.nat(b.bytes.length), { freq: 6 }),
    });
  });
}

function apply(m: { base: number; edits: Edit[]; cut: number | null }): Buffer {
  const b = Buffer.from(bases[m.base].bytes);
  for (const e of m.edits) e.bytes.copy(b, e.at, 0, Math.min(e.bytes.length, b.length - e.at));
  return m.cut === null ? b : b.subarray(0, m.cut);
}

/** Reads and maps an opened layer within bounds; only ChainfsError may come out. Returns the bytes of the first `want` bytes, or null on a read error. */
function exercise(layer: Layer, want: number): Buffer | null {
  let ok = true;
  const guard = (fn: () => void) => {
    try {
      fn();
    } catch (e) {
      if (!(e instanceof ChainfsError)) throw e;
      expect(e.message).not.toMatch(/[\n\r]/);
      ok = false;
    }
  };
  // Map: a bounded walk of blockStatus runs, each must make progress.
  guard(() => {
    let pos = 0;
    for (let i = 0; i < 2000 && pos < Math.min(layer.size, 64 * MiB); i++) {
      const st = layer.blockStatus(pos, 64 * MiB);
      expect(st.length).toBeGreaterThan(0);
      pos += st.length;
    }
  });
  const n = Math.min(layer.size, want);
  const out = Buffer.alloc(n);
  guard(() => layer.read(out, 0, n, 0));
  const result = ok ? out : null;
  // A few reads elsewhere, near the end and past it.
  for (const pos of [layer.size - 4096, layer.size + 100, Math.floor(layer.size / 3)]) {
    guard(() => layer.read(Buffer.alloc(4096), 0, 4096, Math.max(0, pos)));
  }
  return result;
}

function openOrRefuse(file: string): Layer | null {
  try {
    return openImage(file).layer;
  } catch (e) {
    if (!(e instanceof ChainfsError)) throw e;
    expect(e.message).toContain(file);
    expect(e.message).not.toMatch(/[\n\r]/);
    return null;
  }
}

describe('fuzz: qcow2 reader', () => {
  it('the unmutated images read as qemu reads them', () => {
    for (const b of bases) {
      const file = path.join(tmp, `${b.name}.check`);
      fs.writeFileSync(file, b.bytes);
      const layer = openOrRefuse(file)!;
      try {
        expect(exercise(layer, 16 * MiB)!.equals(qemuRaw(file)!)).toBe(true);
      } finally {
        layer.close();
      }
    }
  });

  it('mutated images: open or refuse, then map and read, with ChainfsErrors only, quickly, in bounded memory', () => {
    const file = path.join(tmp, 'mutated.qcow2');
    const baseline = memory();
    fc.assert(fc.property(mutated(), (m) => {
      fs.writeFileSync(file, apply(m));
      const t0 = performance.now();
      const layer = openOrRefuse(file);
      if (layer) {
        try {
          exercise(layer, 16 * MiB);
          expect(memory() - baseline, 'memory held while the image is open').toBeLessThan(160 * MiB);
        } finally {
          layer.close();
        }
      }
      expect(performance.now() - t0).toBeLessThan(3000);
    }), runs(600));
  }, TIMEOUT);

  it('random bytes behind a qcow2 magic', () => {
    const file = path.join(tmp, 'random.qcow2');
    const arb = fc.tuple(fc.constantFrom(2, 3), fc.uint8Array({ minLength: 0, maxLength: 4096 }), fc.nat(64 * KiB));
    fc.assert(fc.property(arb, ([version, rest, pad]) => {
      const head = Buffer.from([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, version]);
      fs.writeFileSync(file, Buffer.concat([head, Buffer.from(rest)]));
      fs.truncateSync(file, Math.max(8 + rest.length, pad));
      const layer = openOrRefuse(file);
      if (layer) {
        try {
          exercise(layer, 1 * MiB);
        } finally {
          layer.close();
        }
      }
    }), runs(400));
  }, TIMEOUT);

  it('where both read a mutated image without error, chainfs and qemu agree byte for byte (a sample)', () => {
    const file = path.join(tmp, 'differential.qcow2');
    let compared = 0;
    fc.assert(fc.property(mutated(), (m) => {
      fs.writeFileSync(file, apply(m));
      const layer = openOrRefuse(file);
      if (!layer) return;
      let ours: Buffer | null;
      try {
        if (layer.size > 16 * MiB) return;
        ours = exercise(layer, layer.size);
      } finally {
        layer.close();
      }
      if (!ours) return;
      const theirs = qemuRaw(file);
      if (!theirs) return; // qemu refuses what we accept: fine, we are only more lenient where it is harmless
      compared++;
      const d = firstDifference(ours, theirs);
      expect(d, `differs from qemu at byte ${d} (edits ${JSON.stringify(m.edits.map((e) => [e.at, e.bytes.toString('hex')]))}, cut ${m.cut})`).toBe(-1);
    }), runs(80));
    console.log(`differential: ${compared} images compared with qemu`);
    expect(compared).toBeGreaterThan(0);
  }, TIMEOUT);
});

/** qemu's flat view of `file`, or null if qemu refuses it (zeros past the end padded to the virtual size). */
function qemuRaw(file: string): Buffer | null {
  const raw = `${file}.raw`;
  fs.rmSync(raw, { force: true });
  const r = spawnSync('qemu-img', ['convert', '-U', '-f', 'qcow2', '-O', 'raw', file, raw], { encoding: 'utf8', timeout: 20_000 });
  if (r.status !== 0) return null;
  return fs.readFileSync(raw);
}

function firstDifference(a: Buffer, b: Buffer): number {
  if (a.equals(b)) return -1;
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return Math.min(a.length, b.length);
}

function memory(): number {
  const m = process.memoryUsage();
  return m.arrayBuffers + m.heapUsed;
}

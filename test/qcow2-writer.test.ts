/**
 * writeQcow2 against the real oracle: build a sparse raw image on disk, export
 * it, and let qemu-img check / info / compare / map judge the result.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ImageSource, ResolvedRun } from '../src/chain/source';
import type { Layer } from '../src/layer/layer';
import { ChainfsError } from '../src/errors';
import { writeQcow2, type Qcow2WriteOptions, type Qcow2WriteResult } from '../src/materialize/qcow2-writer';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const CLUSTER_SIZES = [512, 4096, 65536, 2 * MiB];

type Content = 'random' | 'zeros' | 'halfzero' | 'period5000' | 'text' | 'sparsebytes' | 'byte';
interface Extent { offset: number; length: number; content: Content }

let tmp: string;
let seed = 1;

/** Deterministic non-cryptographic bytes (xorshift32), so failures reproduce. */
function randomBytes(n: number): Buffer {
  const buf = Buffer.alloc(n);
  let x = seed++ * 2654435761 >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    buf[i] = x & 0xff;
  }
  return buf;
}

function contentOf(e: Extent): Buffer {
  switch (e.content) {
    case 'random': return randomBytes(e.length);
    case 'zeros': return Buffer.alloc(e.length);
    case 'byte': return Buffer.alloc(e.length, 0xab);
    case 'halfzero': {
      const b = Buffer.alloc(e.length);
      randomBytes(e.length - Math.floor(e.length / 2)).copy(b, Math.floor(e.length / 2));
      return b;
    }
    case 'period5000': {
      // Repeats only at distance 5000: compressible with a 32 KiB deflate window, not with qemu's 4 KiB one.
      const unit = randomBytes(5000);
      const b = Buffer.alloc(e.length);
      for (let i = 0; i < e.length; i += unit.length) unit.copy(b, i);
      return b;
    }
    case 'text': {
      let s = '';
      for (let i = 0; s.length < e.length; i++) s += `line ${i}: the quick brown fox jumps over the lazy dog\n`;
      return Buffer.from(s.slice(0, e.length));
    }
    case 'sparsebytes': {
      const b = Buffer.alloc(e.length);
      for (let i = 0; i < e.length; i += 3000) b[i] = 1 + (i % 250);
      return b;
    }
  }
}

const FAKE_LAYER: Layer = {
  name: 'raw', path: 'raw', size: 0, allocatedBytes: 0,
  blockStatus: () => ({ kind: 'data', length: 1 }),
  read: () => { throw new Error('not used'); },
  close: () => undefined,
};

/**
 * A raw sparse file plus the extents written into it, as an ImageSource:
 * every extent is a data run (all-zero extents too: "allocated zeros"),
 * everything else a hole. read() refuses to touch a hole.
 */
class RawImage implements ImageSource {
  readonly fd: number;
  /** Merged, sorted data runs. */
  private readonly data: { offset: number; end: number }[] = [];
  maxQuery = 0;

  constructor(readonly file: string, readonly size: number, readonly extents: Extent[]) {
    this.fd = fs.openSync(file, 'w+');
    fs.ftruncateSync(this.fd, size);
    for (const e of [...extents].sort((a, b) => a.offset - b.offset)) {
      fs.writeSync(this.fd, contentOf(e), 0, e.length, e.offset);
      const last = this.data[this.data.length - 1];
      if (last && last.end >= e.offset) last.end = Math.max(last.end, e.offset + e.length);
      else this.data.push({ offset: e.offset, end: e.offset + e.length });
    }
  }

  runs(offset: number, length: number): ResolvedRun[] {
    this.maxQuery = Math.max(this.maxQuery, length);
    const end = Math.min(offset + length, this.size);
    const out: ResolvedRun[] = [];
    let pos = offset;
    for (const d of this.data) {
      if (d.end <= pos) continue;
      if (d.offset >= end) break;
      if (d.offset > pos) out.push({ offset: pos, length: d.offset - pos, layer: null });
      const to = Math.min(d.end, end);
      out.push({ offset: pos = Math.max(pos, d.offset), length: to - pos, layer: FAKE_LAYER });
      pos = to;
    }
    if (pos < end) out.push({ offset: pos, length: end - pos, layer: null });
    return out;
  }

  read(buf: Buffer, bufOffset: number, length: number, position: number): void {
    if (!this.data.some((d) => d.offset <= position && position + length <= d.end)) {
      throw new Error(`read of [${position}, +${length}) is not inside one data run`);
    }
    expect(fs.readSync(this.fd, buf, bufOffset, length, position)).toBe(length);
  }

  /** The oracle: how many guest clusters hold a non-zero byte, their bytes, and the L2 tables they need. */
  nonZeroClusters(cs: number): { clusters: number; bytes: number; l2Tables: number } {
    const checked = new Set<number>();
    const l2 = new Set<number>();
    let clusters = 0;
    let bytes = 0;
    const buf = Buffer.alloc(cs);
    for (const d of this.data) {
      for (let c = Math.floor(d.offset / cs); c * cs < d.end; c++) {
        if (checked.has(c)) continue;
        checked.add(c);
        const n = Math.min(cs, this.size - c * cs);
        buf.fill(0);
        fs.readSync(this.fd, buf, 0, n, c * cs);
        if (!buf.some((b) => b !== 0)) continue;
        clusters++;
        bytes += n;
        l2.add(Math.floor(c / (cs / 8)));
      }
    }
    return { clusters, bytes, l2Tables: l2.size };
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

/**
 * A minimal reader of the file's own L1/L2 tables: each compressed cluster's
 * guest offset and the bytes its descriptor points at (offset, then up to the
 * end of its last 512-byte sector, as qemu reads them).
 */
function compressedClusters(file: string): { guest: number; data: Buffer }[] {
  const fd = fs.openSync(file, 'r');
  try {
    const h = Buffer.alloc(112);
    fs.readSync(fd, h, 0, h.length, 0);
    const bits = h.readUInt32BE(20);
    const cs = 2 ** bits;
    const l1 = Buffer.alloc(h.readUInt32BE(36) * 8);
    fs.readSync(fd, l1, 0, l1.length, Number(h.readBigUInt64BE(40)));
    const x = BigInt(70 - bits); // the descriptor's offset/sector-count split
    const l2 = Buffer.alloc(cs);
    const found: { guest: number; data: Buffer }[] = [];
    for (let i = 0; i < l1.length / 8; i++) {
      const l2Offset = Number(l1.readBigUInt64BE(i * 8) & 0x00fffffffffffe00n);
      if (l2Offset === 0) continue;
      fs.readSync(fd, l2, 0, cs, l2Offset);
      for (let j = 0; j < cs / 8; j++) {
        const e = l2.readBigUInt64BE(j * 8);
        if ((e & (1n << 62n)) === 0n) continue;
        expect(e >> 63n).toBe(0n); // never "refcount exactly one"
        const host = Number(e & ((1n << x) - 1n));
        const sectors = Number((e >> x) & ((1n << (62n - x)) - 1n)) + 1;
        const data = Buffer.alloc(sectors * 512 - (host % 512));
        fs.readSync(fd, data, 0, data.length, host);
        found.push({ guest: (i * (cs / 8) + j) * cs, data });
      }
    }
    return found;
  } finally {
    fs.closeSync(fd);
  }
}

function qemuImg(args: string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnSync('qemu-img', args, { encoding: 'utf8', maxBuffer: 512 * MiB });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

async function convert(src: ImageSource, out: string, opts: Qcow2WriteOptions): Promise<Qcow2WriteResult> {
  const fd = fs.openSync(out, 'w');
  try {
    return await writeQcow2(src, fd, opts);
  } finally {
    fs.closeSync(fd);
  }
}

/** Everything qemu-img can tell about `out` as an export of `img`. */
function verify(img: RawImage, out: string, result: Qcow2WriteResult, cs: number, compress: boolean): void {
  const st = fs.statSync(out);
  expect(st.size).toBe(result.fileSize);
  expect(st.size % cs).toBe(0);

  const check = qemuImg(['check', '--output=json', out]);
  expect(check.stderr).toBe('');
  expect(check.status).toBe(0);
  const c = JSON.parse(check.stdout);
  expect(c['check-errors']).toBe(0);
  expect(c.corruptions ?? 0).toBe(0);
  expect(c.leaks ?? 0).toBe(0);
  expect(c['image-end-offset']).toBe(result.fileSize); // no unused clusters at the end either
  expect(c['allocated-clusters'] ?? 0).toBe(result.dataClusters);
  if (!compress) expect(c['compressed-clusters'] ?? 0).toBe(0);
  else if (result.dataClusters > 0) expect(c['compressed-clusters']).toBeGreaterThan(0); // every image here has text

  const info = JSON.parse(qemuImg(['info', '--output=json', out]).stdout);
  expect(info.format).toBe('qcow2');
  expect(info['virtual-size']).toBe(img.size);
  expect(info['cluster-size']).toBe(cs);
  expect(info['backing-filename']).toBeUndefined();
  expect(info['format-specific'].data).toMatchObject({
    compat: '1.1', 'refcount-bits': 16, corrupt: false, 'lazy-refcounts': false, 'compression-type': 'zlib',
  });

  const cmp = qemuImg(['compare', '-f', 'raw', '-F', 'qcow2', img.file, out]);
  expect(cmp.stderr).toBe('');
  expect(cmp.stdout).toContain('Images are identical');
  expect(cmp.status).toBe(0);

  // Exactly the clusters with a non-zero byte are allocated; all-zero ones (holes or not) are not.
  const oracle = img.nonZeroClusters(cs);
  const map: { start: number; length: number; data: boolean; zero: boolean }[] =
    JSON.parse(qemuImg(['map', '--output=json', out]).stdout);
  const mapped = map.filter((m) => m.data).reduce((n, m) => n + m.length, 0);
  expect(mapped).toBe(oracle.bytes);
  expect(result.dataClusters).toBe(oracle.clusters);

  // The file is the data plus its metadata, nothing more.
  const l1Clusters = Math.ceil((Math.ceil(img.size / ((cs / 8) * cs)) * 8) / cs);
  const paddings = compress ? oracle.l2Tables + 1 : 0; // compressed runs end padded to a cluster
  const base = (1 + l1Clusters + oracle.l2Tables + paddings + oracle.clusters) * cs;
  const refBlocks = Math.ceil(base / cs / (cs / 2)) + 2;
  const refOverhead = (refBlocks * (compress ? 2 : 1) + Math.ceil((refBlocks * 8) / cs)) * cs;
  expect(result.fileSize).toBeLessThanOrEqual(base + refOverhead);
  if (!compress) expect(result.fileSize).toBeGreaterThanOrEqual(base);
}

const images = new Map<string, RawImage>();
const plainSizes = new Map<string, number>();

function mixedExtents(size: number): Extent[] {
  return [
    { offset: 12345, length: 70000, content: 'random' },
    { offset: MiB - 100, length: 300, content: 'random' },
    { offset: 5 * MiB, length: 3 * MiB, content: 'zeros' }, // allocated, but zeros: must not be stored
    { offset: 7 * MiB + 100, length: 2 * MiB, content: 'random' }, // crosses the writer's 8 MiB batch edge
    { offset: 10 * MiB, length: MiB, content: 'halfzero' },
    { offset: 12 * MiB + 7, length: 4 * MiB, content: 'period5000' },
    { offset: 17 * MiB, length: 3 * MiB + 333, content: 'text' },
    { offset: 21 * MiB + 4096, length: 2 * MiB, content: 'sparsebytes' },
    { offset: 33 * MiB + 7, length: 1, content: 'byte' },
    { offset: 40 * MiB, length: MiB, content: 'zeros' }, // adjacent to the next: one merged run
    { offset: 41 * MiB, length: MiB, content: 'random' },
    ...Array.from({ length: 16 }, (_, i): Extent => (
      { offset: 50 * MiB + i * 65536 + ((i * 4608) % 65536), length: 512, content: 'random' })),
    { offset: size - 20480, length: 20480, content: 'random' }, // ends at the (cluster-unaligned) end
  ];
}

function sparseExtents(size: number): Extent[] {
  return [
    { offset: 0, length: MiB, content: 'random' },
    { offset: 3 * GiB + 12345, length: 2 * MiB, content: 'random' },
    { offset: 4 * GiB - 256, length: 512, content: 'random' }, // guest offsets across 2^32
    { offset: 5 * GiB, length: 64 * KiB, content: 'zeros' },
    { offset: 6 * GiB + MiB, length: MiB, content: 'text' },
    { offset: size - 4096, length: 4096, content: 'random' },
  ];
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-qcow2w-'));
  const mixedSize = 64 * MiB + 4096 + 512; // a multiple of 512, not of 4 KiB or any larger cluster
  images.set('mixed', new RawImage(path.join(tmp, 'mixed.raw'), mixedSize, mixedExtents(mixedSize)));
  images.set('sparse', new RawImage(path.join(tmp, 'sparse.raw'), 8 * GiB, sparseExtents(8 * GiB)));
});

afterAll(() => {
  for (const img of images.values()) img.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('writeQcow2: qemu-img agrees', () => {
  for (const name of ['mixed', 'sparse']) {
    for (const cs of CLUSTER_SIZES) {
      for (const compress of [false, true]) {
        it(`${name}, ${cs}-byte clusters${compress ? ', compressed' : ''}`, async () => {
          const img = images.get(name)!;
          const out = path.join(tmp, `${name}-${cs}-${compress}.qcow2`);
          const result = await convert(img, out, { clusterSize: cs, compress });
          verify(img, out, result, cs, compress);
          expect(img.maxQuery).toBeLessThanOrEqual(256 * MiB);
          if (!compress) plainSizes.set(`${name}-${cs}`, result.fileSize);
          else expect(result.fileSize).toBeLessThan(plainSizes.get(`${name}-${cs}`)!);
          fs.rmSync(out);
        });
      }
    }
  }
});

describe('writeQcow2: layout', () => {
  it('writes a v3 header: no backing file, no feature bits (not dirty), 16-bit refcounts, zlib', async () => {
    const img = images.get('mixed')!;
    const out = path.join(tmp, 'header.qcow2');
    await convert(img, out, {});
    const h = Buffer.alloc(120);
    const fd = fs.openSync(out, 'r');
    fs.readSync(fd, h, 0, 120, 0);
    fs.closeSync(fd);
    expect(h.readUInt32BE(0)).toBe(0x514649fb);
    expect(h.readUInt32BE(4)).toBe(3);
    expect(h.readBigUInt64BE(8)).toBe(0n); // backing_file_offset
    expect(h.readUInt32BE(20)).toBe(16); // default 64 KiB clusters
    expect(h.readBigUInt64BE(24)).toBe(BigInt(img.size));
    expect(h.readUInt32BE(32)).toBe(0); // crypt_method
    expect(h.readUInt32BE(60)).toBe(0); // nb_snapshots
    expect(h.readBigUInt64BE(72)).toBe(0n); // incompatible features, dirty bit included
    expect(h.readBigUInt64BE(80)).toBe(0n);
    expect(h.readBigUInt64BE(88)).toBe(0n);
    expect(h.readUInt32BE(96)).toBe(4); // refcount_order
    expect(h.readUInt32BE(100)).toBe(112); // header_length
    expect(h[104]).toBe(0); // compression_type: zlib
    expect(h.readBigUInt64BE(112)).toBe(0n); // end of header extensions
    fs.rmSync(out);
  });

  it('packs several compressed clusters into one host cluster (refcounts > 1) and qemu-img check agrees', async () => {
    const size = 16 * MiB;
    const img = new RawImage(path.join(tmp, 'text.raw'), size, [{ offset: 0, length: size, content: 'text' }]);
    try {
      for (const cs of [512, 65536, 2 * MiB]) {
        const out = path.join(tmp, `text-${cs}.qcow2`);
        const result = await convert(img, out, { clusterSize: cs, compress: true });
        verify(img, out, result, cs, true);
        expect(result.dataClusters).toBe(size / cs);
        // Fewer host clusters in the whole file (metadata included) than compressed clusters:
        // some host clusters hold several, so their refcounts are above one.
        expect(result.fileSize / cs).toBeLessThan(result.dataClusters);
        if (cs === 65536) expect(result.fileSize).toBeLessThan(size / 8);
        // qemu-img 7.2's map does not flag compressed clusters; check counts them.
        expect(JSON.parse(qemuImg(['check', '--output=json', out]).stdout)['compressed-clusters']).toBe(size / cs);
        fs.rmSync(out);
      }
    } finally {
      img.close();
    }
  });

  it('compresses with a 4 KiB deflate window, as qemu does, so chunked inflaters can read it', async () => {
    // qemu-img inflates a whole cluster in one call, which tolerates any window; a reader that
    // inflates with windowBits 12 in pieces (as Node's zlib does) does not.
    const img = images.get('mixed')!;
    for (const cs of [65536, 2 * MiB]) {
      const out = path.join(tmp, `window-${cs}.qcow2`);
      await convert(img, out, { clusterSize: cs, compress: true });
      const clusters = compressedClusters(out);
      expect(clusters.length).toBeGreaterThan(0);
      const want = Buffer.alloc(cs);
      for (const { guest, data } of clusters) {
        want.fill(0);
        fs.readSync(img.fd, want, 0, Math.min(cs, img.size - guest), guest);
        expect(zlib.inflateRawSync(data, { windowBits: 12 }).subarray(0, cs).equals(want)).toBe(true);
      }
      fs.rmSync(out);
    }
  });

  it('allocates no data clusters for an image of holes and allocated zeros', async () => {
    const img = new RawImage(path.join(tmp, 'zeros.raw'), GiB, [
      { offset: 0, length: 4 * MiB, content: 'zeros' },
      { offset: 700 * MiB + 512, length: 9 * MiB, content: 'zeros' },
    ]);
    try {
      for (const cs of [512, 65536]) {
        const out = path.join(tmp, `zeros-${cs}.qcow2`);
        const result = await convert(img, out, { clusterSize: cs, compress: cs === 512 });
        verify(img, out, result, cs, cs === 512);
        expect(result.dataClusters).toBe(0);
        fs.rmSync(out);
      }
    } finally {
      img.close();
    }
  });

  it('writes a zero-size image', async () => {
    const img = new RawImage(path.join(tmp, 'empty.raw'), 0, []);
    try {
      const out = path.join(tmp, 'empty.qcow2');
      verify(img, out, await convert(img, out, {}), 65536, false);
      fs.rmSync(out);
    } finally {
      img.close();
    }
  });

  it('addresses host offsets past 4 GiB', async () => {
    // 4.5 GiB of data, generated on the fly (no raw copy): MiB k is filled with byte (k % 255) + 1.
    const size = 4 * GiB + 512 * MiB;
    const pattern = (mib: number): number => (mib % 255) + 1;
    const src: ImageSource = {
      size,
      runs: (offset, length) => [{ offset, length: Math.min(length, size - offset), layer: FAKE_LAYER }],
      read: (buf, bufOffset, length, position) => {
        for (let p = position; p < position + length;) {
          const next = Math.min(position + length, (Math.floor(p / MiB) + 1) * MiB);
          buf.fill(pattern(Math.floor(p / MiB)), bufOffset + p - position, bufOffset + next - position);
          p = next;
        }
      },
    };
    const out = path.join(tmp, 'big.qcow2');
    try {
      const result = await convert(src, out, { clusterSize: 65536 });
      expect(result.dataClusters).toBe(size / 65536);
      const check = qemuImg(['check', '--output=json', out]);
      expect(check.status).toBe(0);
      expect(JSON.parse(check.stdout)['image-end-offset']).toBe(result.fileSize);
      const reads = [0, 1, 4095, 4096 + 17, 4607].map((k) => `read -P ${pattern(k)} ${k * MiB} ${MiB}`);
      const io = spawnSync('qemu-io', ['-f', 'qcow2', ...reads.flatMap((r) => ['-c', r]), out], { encoding: 'utf8' });
      expect(io.stdout).not.toMatch(/Pattern verification failed|error/i);
      expect(io.stdout.match(/^read /gm)?.length).toBe(reads.length);
      const map: { start: number; offset?: number }[] = JSON.parse(qemuImg(['map', '--output=json', out]).stdout);
      expect(Math.max(...map.map((m) => m.offset ?? 0))).toBeGreaterThan(4 * GiB);
    } finally {
      fs.rmSync(out, { force: true });
    }
  });
});

describe('writeQcow2: bounded memory and batching', () => {
  for (const cs of [512, 65536]) {
    it(`keeps RSS growth under 64 MiB for a 100 GiB sparse image (${cs}-byte clusters)`, async () => {
      const size = 100 * GiB;
      const img = new RawImage(path.join(tmp, 'huge.raw'), size, [
        { offset: 0, length: 3 * MiB, content: 'random' },
        { offset: 50 * GiB + 4096, length: 2 * MiB, content: 'text' },
        { offset: size - MiB, length: MiB, content: 'random' },
      ]);
      const out = path.join(tmp, `huge-${cs}.qcow2`);
      try {
        const before = process.memoryUsage().rss;
        let peak = before;
        const result = await convert(img, out, {
          clusterSize: cs,
          compress: true,
          onProgress: () => { peak = Math.max(peak, process.memoryUsage().rss); },
        });
        peak = Math.max(peak, process.memoryUsage().rss);
        expect(peak - before).toBeLessThan(64 * MiB);
        verify(img, out, result, cs, true);
      } finally {
        img.close();
        fs.rmSync(out, { force: true });
        fs.rmSync(img.file, { force: true });
      }
    });
  }

  it('reports progress in order, at most once per 8 MiB batch, ending at the virtual size', async () => {
    const img = images.get('mixed')!;
    const out = path.join(tmp, 'progress.qcow2');
    const seen: number[] = [];
    await convert(img, out, { onProgress: (n) => seen.push(n) });
    expect(seen[seen.length - 1]).toBe(img.size);
    for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThan(seen[i - 1]);
    expect(seen.length).toBeLessThanOrEqual(Math.ceil(img.size / (8 * MiB)) + 1);
    fs.rmSync(out);
  });
});

describe('writeQcow2: errors', () => {
  it('rejects cluster sizes qemu cannot open', () => {
    const img = images.get('mixed')!;
    for (const clusterSize of [256, 1000, 4 * MiB]) {
      expect(() => writeQcow2(img, -1, { clusterSize })).toThrow(ChainfsError);
    }
  });

  it('rejects a virtual size that is not a multiple of 512', () => {
    const src: ImageSource = { size: 1000, runs: () => [], read: () => undefined };
    expect(() => writeQcow2(src, -1)).toThrow(/multiple of 512/);
  });

  it("rejects an L1 table over qemu's 32 MiB limit", () => {
    const src: ImageSource = { size: 200 * GiB, runs: (o, l) => [{ offset: o, length: l, layer: null }], read: () => undefined };
    expect(() => writeQcow2(src, -1, { clusterSize: 512 })).toThrow(/larger cluster size/);
  });

  it('propagates write errors (ENOSPC from /dev/full)', async () => {
    const fd = fs.openSync('/dev/full', 'w');
    try {
      let err: NodeJS.ErrnoException | undefined;
      try {
        await writeQcow2(images.get('mixed')!, fd);
      } catch (e) {
        err = e as NodeJS.ErrnoException;
      }
      expect(err?.code).toBe('ENOSPC');
    } finally {
      fs.closeSync(fd);
    }
  });
});

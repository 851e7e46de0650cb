/**
 * Property test: chain resolution against a tiny reference model of the
 * engine's rule, on real sparse files. Random layers of random 4 KiB blocks
 * (some holding zeros: allocated zeros must hide older data), layers shorter
 * than the view (expansion), an optional raw backing image shorter or longer
 * than the view; random reads, unaligned, with a tiny resolution cache.
 */
import fc from 'fast-check';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Chain } from '../src/chain/chain';
import { LayerReadError } from '../src/errors';
import type { Layer } from '../src/layer/layer';
import { RawImageLayer } from '../src/layer/raw-image';
import { SparseFileLayer } from '../src/layer/sparse-file';

const B = 4096;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-model-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface LayerSpec { sizeBlocks: number; blocks: { index: number; fill: number }[] }
interface ChainSpec { viewBlocks: number; layers: LayerSpec[]; backing: { sizeBlocks: number; fill: number; holes: number[] } | null }

const layerArb = (maxBlocks: number) => fc.record({
  sizeBlocks: fc.integer({ min: 1, max: maxBlocks }),
  blocks: fc.array(fc.record({ index: fc.integer({ min: 0, max: maxBlocks - 1 }), fill: fc.integer({ min: 0, max: 255 }) }), { maxLength: 12 }),
});
const chainArb = fc.integer({ min: 2, max: 24 }).chain((viewBlocks) => fc.record({
  viewBlocks: fc.constant(viewBlocks),
  layers: fc.array(layerArb(viewBlocks), { minLength: 1, maxLength: 6 }),
  backing: fc.option(fc.record({
    sizeBlocks: fc.integer({ min: 1, max: viewBlocks + 4 }), fill: fc.integer({ min: 1, max: 255 }),
    holes: fc.array(fc.integer({ min: 0, max: viewBlocks + 3 }), { maxLength: 4 }),
  })),
}));

/** The engine's rule, block by block: the newest layer holding the block wins. */
function model(spec: ChainSpec): { bytes: Buffer; owner: (number | null)[] } {
  const bytes = Buffer.alloc(spec.viewBlocks * B);
  const owner: (number | null)[] = [];
  for (let b = 0; b < spec.viewBlocks; b++) {
    let found: number | null = null;
    for (let i = 0; i < spec.layers.length && found === null; i++) {
      const l = spec.layers[i];
      const w = [...l.blocks].reverse().find((x) => x.index === b && x.index < l.sizeBlocks);
      if (w) { found = i; bytes.fill(w.fill, b * B, (b + 1) * B); }
    }
    if (found === null && spec.backing && b < spec.backing.sizeBlocks && !spec.backing.holes.includes(b)) {
      found = spec.layers.length;
      bytes.fill(spec.backing.fill, b * B, (b + 1) * B);
    }
    owner.push(found);
  }
  return { bytes, owner };
}

let n = 0;
function build(spec: ChainSpec): Layer[] {
  const dir = fs.mkdtempSync(path.join(tmp, `c${n++}-`));
  const layers: Layer[] = spec.layers.map((l, i) => {
    const p = path.join(dir, `volume-snap-${i}.img`);
    const fd = fs.openSync(p, 'w+');
    fs.ftruncateSync(fd, l.sizeBlocks * B);
    for (const w of l.blocks) if (w.index < l.sizeBlocks) fs.writeSync(fd, Buffer.alloc(B, w.fill), 0, B, w.index * B);
    return new SparseFileLayer(fd, p, path.basename(p), fs.fstatSync(fd));
  });
  if (spec.backing) {
    const p = path.join(dir, 'backing');
    const fd = fs.openSync(p, 'w+');
    fs.ftruncateSync(fd, spec.backing.sizeBlocks * B);
    for (let b = 0; b < spec.backing.sizeBlocks; b++) {
      if (!spec.backing.holes.includes(b)) fs.writeSync(fd, Buffer.alloc(B, spec.backing.fill), 0, B, b * B);
    }
    layers.push(new RawImageLayer(fd, p, 'backing', fs.fstatSync(fd)));
  }
  return layers;
}

describe('chain resolution vs the reference model', () => {
  it('full reads, random reads and run owners agree', () => {
    fc.assert(fc.property(chainArb, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 3 * B })), { maxLength: 20 }), (spec, reads) => {
      const layers = build(spec);
      try {
        const size = spec.viewBlocks * B;
        const { bytes, owner } = model(spec);
        const chain = new Chain(layers, size, { cacheBytes: 1 });
        const all = Buffer.alloc(size, 0xaa);
        chain.read(all, 0, size, 0);
        expect(all.equals(bytes)).toBe(true);
        for (const [p, l] of reads) {
          const pos = p % size;
          const len = Math.min(l, size - pos);
          const b = Buffer.alloc(len, 0x55);
          chain.read(b, 0, len, pos);
          expect(b.equals(bytes.subarray(pos, pos + len))).toBe(true);
        }
        for (const r of chain.runs(0, size)) {
          for (let blk = r.offset / B; blk < (r.offset + r.length) / B; blk++) {
            // null: no layer has the block (a backing image's holes say "zero" too).
            expect(r.layer === null ? null : layers.indexOf(r.layer)).toBe(owner[blk]);
          }
        }
      } finally {
        for (const l of layers) l.close();
      }
    }), { numRuns: 150 });
  });
});

describe('a layer whose mapping is corrupt in one block', () => {
  it('fails only the reads that touch that block', () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'broken-'));
    const p = path.join(dir, 'volume-snap-a.img');
    const fd = fs.openSync(p, 'w+');
    fs.ftruncateSync(fd, 16 * B);
    fs.writeSync(fd, Buffer.alloc(16 * B, 7), 0, 16 * B, 0);
    const good = new SparseFileLayer(fd, p, 'volume-snap-a.img', fs.fstatSync(fd));
    // A layer above that cannot map block 5 (as a qcow2 with a bad L2 entry would).
    const bad: Layer = {
      name: 'bad', path: '/bad', size: 16 * B, allocatedBytes: 0,
      blockStatus: (off) => {
        if (Math.floor(off / B) === 5) throw new LayerReadError('/bad', 'corrupt entry');
        return { kind: 'absent', length: off < 5 * B ? 5 * B - off : B - (off % B) };
      },
      read: () => { throw new Error('never read'); },
      close: () => undefined,
    };
    const chain = new Chain([bad, good], 16 * B);
    const b = Buffer.alloc(5 * B);
    chain.read(b, 0, 5 * B, 0);
    expect(b.equals(Buffer.alloc(5 * B, 7))).toBe(true);
    chain.read(b, 0, 4 * B, 6 * B);
    expect(b.subarray(0, 4 * B).equals(Buffer.alloc(4 * B, 7))).toBe(true);
    expect(() => chain.read(b, 0, 2 * B, 4 * B)).toThrow(/corrupt entry/);
    good.close();
  });
});

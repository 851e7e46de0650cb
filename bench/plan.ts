/**
 * Where the workload's extents go: a pure function of (size, seed), so the
 * Longhorn replica and the qcow2 chain are written from the same plan and
 * a cached workload can be trusted when its stamp names the same inputs.
 */
import { Prng } from './random';

export const BLOCK = 4096;
export const MiB = 1 << 20;

export interface Extent {
  offset: number;
  length: number;
  /** Allocated zeros (a Longhorn layer writes zero bytes; qcow2 gets a zero write). */
  zero: boolean;
  /** Which bytes: extentBytes(seed, stream, index, length). */
  index: number;
}

export interface LayerPlan {
  /** Layer file in the replica directory. */
  file: string;
  /** Name of the matching qcow2 file. */
  qcow2: string;
  /** Data stream of extentBytes(); distinct per layer. */
  stream: number;
  /** Sorted by offset, never overlapping. */
  extents: Extent[];
}

export interface WorkloadPlan {
  size: number;
  seed: number;
  /** The raw backing image: 1 MiB extents, about 60% of the volume. */
  backing: LayerPlan;
  /** Oldest first: two snapshots, then the head. */
  layers: LayerPlan[];
}

/** How much of the volume each part fills, and the shape of the layer extents. */
export const SHAPE = {
  backingFill: 0.6,
  layerFill: 0.1,
  minExtent: 64 * 1024,
  maxExtent: 4 * MiB,
  zeroShare: 0.15,
};

export function planWorkload(size: number, seed: number): WorkloadPlan {
  if (size % MiB !== 0 || size < 64 * MiB) throw new Error(`workload size ${size} must be a multiple of 1 MiB and at least 64 MiB`);
  const names = [
    ['volume-snap-s1.img', 's1.qcow2'],
    ['volume-snap-s2.img', 's2.qcow2'],
    ['volume-head-002.img', 'top.qcow2'],
  ];
  return {
    size,
    seed,
    backing: { file: 'backing', qcow2: 'base.qcow2', stream: 0, extents: backingExtents(size, new Prng(seed, 'backing')) },
    layers: names.map(([file, qcow2], i) => ({
      file, qcow2, stream: i + 1,
      extents: scatteredExtents(size, size * SHAPE.layerFill, SHAPE.minExtent, SHAPE.maxExtent, SHAPE.zeroShare,
        new Prng(seed, file)),
    })),
  };
}

function backingExtents(size: number, rng: Prng): Extent[] {
  const out: Extent[] = [];
  for (let slot = 0; slot < size / MiB; slot++) {
    if (rng.float() < SHAPE.backingFill) out.push({ offset: slot * MiB, length: MiB, zero: false, index: slot });
  }
  return out;
}

/**
 * Non-overlapping 4 KiB-aligned extents at random places until `target`
 * bytes are covered (or `count` extents placed); lengths log-uniform in
 * [min, max] (many small, a few large), a share of them allocated zeros.
 */
export function scatteredExtents(size: number, target: number, min: number, max: number, zeroShare: number,
  rng: Prng, count = Infinity): Extent[] {
  const taken: Extent[] = [];
  let covered = 0;
  let index = 0;
  for (let tries = 0; covered < target && taken.length < count && tries < 100_000; tries++) {
    const blocks = Math.round(Math.exp(Math.log(min / BLOCK) + rng.float() * Math.log(max / min)));
    const length = Math.min(blocks * BLOCK, size);
    const offset = rng.below((size - length) / BLOCK + 1) * BLOCK;
    const zero = rng.float() < zeroShare;
    if (overlaps(taken, offset, length)) continue;
    insertSorted(taken, { offset, length, zero, index: index++ });
    covered += length;
  }
  return taken;
}

/** The first extent whose end is past `offset` (binary search). */
function firstEndingAfter(sorted: Extent[], offset: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid].offset + sorted[mid].length <= offset) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export function overlaps(sorted: Extent[], offset: number, length: number): boolean {
  const i = firstEndingAfter(sorted, offset);
  return i < sorted.length && sorted[i].offset < offset + length;
}

function insertSorted(sorted: Extent[], e: Extent): void {
  sorted.splice(firstEndingAfter(sorted, e.offset), 0, e);
}

export function bytesOf(extents: Extent[], zero?: boolean): number {
  return extents.reduce((a, e) => a + (zero === undefined || e.zero === zero ? e.length : 0), 0);
}

/**
 * What may have changed between two views of one chain, from allocation
 * alone: when view A's layers are the bottom of view B's (A a snapshot below
 * B), every byte B can differ from A in lies in an extent of one of the
 * layers above A, or past the smaller of the two sizes. Nothing is read but
 * the layers' block status (SEEK_DATA/SEEK_HOLE, qcow2 tables, cluster
 * maps), so a 2 TiB chain answers in the time its extents take to list.
 *
 * A range named here may still hold the same bytes (a block rewritten with
 * what it held); `exactDiff` reads those ranges and keeps the 4 KiB blocks
 * that really differ.
 */
import { BLOCK_SIZE, alignDown, alignUp, type Layer } from '../layer/layer';
import type { Chain } from './chain';

/** A range where B may differ from A, 4 KiB-aligned (the end may be the larger size). */
export interface ChangedRange {
  /** Byte offset. */
  start: number;
  /** Bytes. */
  length: number;
  /** What changed it: the name of the newest layer above A that holds it, or `size` for the area past the smaller view. */
  reason: string;
}

/** Virtual bytes asked of a layer at a time: bounded work per call whatever the volume size. */
const STEP = 1 << 30;

/**
 * The layers of `b` above `a` when `a`'s layers are exactly the bottom of
 * `b`'s (the same Layer objects: one chain), else undefined.
 */
export function layersAbove(a: Chain, b: Chain): Layer[] | undefined {
  const n = a.layers.length;
  const m = b.layers.length;
  if (n > m) return undefined;
  for (let i = 1; i <= n; i++) if (a.layers[n - i] !== b.layers[m - i]) return undefined;
  return b.layers.slice(0, m - n);
}

/**
 * The ranges where `b` may differ from `a`, given `above` = layersAbove(a, b):
 * the union of the extents (data or zero) of those layers within b's size,
 * plus [min size, max size). Sorted, merged per reason, 4 KiB-aligned.
 * Throws LayerReadError when a layer's map cannot be read.
 */
export function chainDiff(a: Chain, b: Chain, above: Layer[]): ChangedRange[] {
  const out: ChangedRange[] = [];
  const push = (start: number, end: number, reason: string) => {
    const last = out[out.length - 1];
    if (last && last.reason === reason && last.start + last.length === start) last.length += end - start;
    else out.push({ start, length: end - start, reason });
  };
  const common = Math.min(a.size, b.size);
  for (let win = 0; win < common; win += STEP) {
    const end = Math.min(win + STEP, common);
    for (const run of ownerRuns(above, win, end)) push(run.start, run.end, run.layer.name);
  }
  if (a.size !== b.size) push(alignDown(common), Math.max(a.size, b.size), 'size');
  // Ranges at block granularity: merged again where two reasons abut within a block.
  return out.map((r) => {
    const s = alignDown(r.start);
    const e = Math.min(alignUp(r.start + r.length, BLOCK_SIZE), Math.max(a.size, b.size));
    return { start: s, length: e - s, reason: r.reason };
  });
}

/** Runs of [start, end) held by one of `layers` (the newest that holds it), in order. */
function ownerRuns(layers: Layer[], start: number, end: number): { start: number; end: number; layer: Layer }[] {
  const out: { start: number; end: number; layer: Layer }[] = [];
  const walk = (i: number, s: number, e: number) => {
    if (i === layers.length) return;
    let pos = s;
    while (pos < e) {
      const st = layers[i].blockStatus(pos, e - pos);
      const n = Math.min(Math.max(st.length, 1), e - pos);
      if (st.kind === 'absent') walk(i + 1, pos, pos + n);
      else {
        const last = out[out.length - 1];
        if (last && last.layer === layers[i] && last.end === pos) last.end = pos + n;
        else out.push({ start: pos, end: pos + n, layer: layers[i] });
      }
      pos += n;
    }
  };
  walk(0, start, end);
  return out;
}

/** Bytes read per side at a time by `exactDiff`. */
const CHUNK = 1 << 20;

/**
 * Keeps of `ranges` the 4 KiB blocks whose bytes really differ between `a`
 * and `b` (past the smaller size, everything differs). Reads each range
 * once from each side, 1 MiB at a time.
 */
export async function exactDiff(a: Chain, b: Chain, ranges: ChangedRange[]): Promise<ChangedRange[]> {
  const out: ChangedRange[] = [];
  const push = (start: number, end: number, reason: string) => {
    const last = out[out.length - 1];
    if (last && last.reason === reason && last.start + last.length === start) last.length += end - start;
    else out.push({ start, length: end - start, reason });
  };
  const bufA = Buffer.allocUnsafe(CHUNK);
  const bufB = Buffer.allocUnsafe(CHUNK);
  const common = Math.min(a.size, b.size);
  for (const r of ranges) {
    const end = r.start + r.length;
    let pos = r.start;
    for (; pos < Math.min(end, common); pos += CHUNK) {
      const n = Math.min(CHUNK, Math.min(end, common) - pos);
      await Promise.all([a.readAsync(bufA, 0, n, pos), b.readAsync(bufB, 0, n, pos)]);
      for (let o = 0; o < n; o += BLOCK_SIZE) {
        const k = Math.min(BLOCK_SIZE, n - o);
        if (bufA.compare(bufB, o, o + k, o, o + k) !== 0) push(pos + o, pos + o + k, r.reason);
      }
    }
    if (end > common) push(Math.max(r.start, common), end, r.reason);
  }
  return out;
}

/**
 * The ranges where `b` may differ from `a`: from allocation when they are
 * one chain (`oneChain`), else from a byte comparison (reason `compare`).
 * `exact` reads the ranges of one chain and keeps the blocks that differ.
 */
export async function changedRanges(a: Chain, b: Chain, exact = false): Promise<{ ranges: ChangedRange[]; oneChain: boolean }> {
  const above = layersAbove(a, b);
  if (above) {
    const ranges = chainDiff(a, b, above);
    return { ranges: exact ? await exactDiff(a, b, ranges) : ranges, oneChain: true };
  }
  const { compareImages } = await import('./compare');
  const r = await compareImages(a, b);
  return { ranges: r.differences.map((d) => ({ ...d, reason: 'compare' })), oneChain: false };
}

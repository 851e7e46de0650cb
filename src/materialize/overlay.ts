/**
 * A view restricted to the ranges that changed since an older view (`chainfs
 * diff`): what an overlay export stores. Inside the ranges, widened to whole
 * clusters, every byte counts, zeros included (they must hide the backing
 * file's bytes); outside them nothing is stored and the backing file shows.
 */
import type { ImageSource, ResolvedRun } from '../chain/source';
import type { BlockStatus, Layer } from '../layer/layer';

/** Stands for "zeros that must be stored" in the runs of a restricted view. */
class StoredZeros implements Layer {
  readonly name = 'zeros';
  readonly path = '';
  readonly size = Number.MAX_SAFE_INTEGER;
  readonly allocatedBytes = 0;

  blockStatus(_offset: number, length: number): BlockStatus {
    return { kind: 'zero', length };
  }

  read(buf: Buffer, bufOffset: number, length: number): void {
    buf.fill(0, bufOffset, bufOffset + length);
  }

  close(): void {
    // owns nothing
  }
}

const STORED_ZEROS = new StoredZeros();

/** An image that can also be read asynchronously (a Chain). */
export interface AsyncImage extends ImageSource {
  readAsync(buf: Buffer, bufOffset: number, length: number, position: number): Promise<void>;
}

/** A range of virtual bytes. */
export interface ByteRange {
  start: number;
  length: number;
}

/**
 * `src` seen only through `ranges` (sorted, possibly overlapping), each
 * widened to `unit`-aligned bounds: there, runs are the source's with zero
 * runs as stored zeros; elsewhere, zero runs (nothing to store). Reads are
 * the source's.
 */
export function restrictTo(src: AsyncImage, ranges: readonly ByteRange[], unit: number): AsyncImage {
  const spans: ByteRange[] = [];
  for (const r of ranges) {
    const s = r.start - (r.start % unit);
    const e = Math.min(Math.ceil((r.start + r.length) / unit) * unit, src.size);
    const last = spans[spans.length - 1];
    if (last && s <= last.start + last.length) last.length = Math.max(last.length, e - last.start);
    else if (e > s) spans.push({ start: s, length: e - s });
  }
  const first = (pos: number): number => {
    let lo = 0;
    let hi = spans.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (spans[mid].start + spans[mid].length <= pos) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  return {
    size: src.size,
    read: (buf, bufOffset, length, position) => src.read(buf, bufOffset, length, position),
    readAsync: (buf, bufOffset, length, position) => src.readAsync(buf, bufOffset, length, position),
    runs: (offset, length) => {
      const end = Math.min(offset + length, src.size);
      const out: ResolvedRun[] = [];
      const gap = (s: number, e: number) => { if (e > s) out.push({ offset: s, length: e - s, layer: null }); };
      let pos = offset;
      for (let i = first(offset); i < spans.length && spans[i].start < end; i++) {
        const s = Math.max(spans[i].start, pos);
        const e = Math.min(spans[i].start + spans[i].length, end);
        gap(pos, s);
        for (const r of src.runs(s, e - s)) out.push({ ...r, layer: r.layer ?? STORED_ZEROS });
        pos = e;
      }
      gap(pos, end);
      return out;
    },
  };
}

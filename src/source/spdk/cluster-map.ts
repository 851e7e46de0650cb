/**
 * A blob's cluster map (which device cluster holds each of its clusters),
 * stored as SPDK stores it: one array of 512 entries per extent page that
 * has any allocated cluster, nothing for the rest. Memory follows
 * allocation, not size: a 64 TiB thin lvol with 1 GiB written costs about
 * 2 KiB per written 512 MiB (a flat array would be 256 MiB per lvol, and
 * as much again per snapshot).
 */
import type { ClusterLookup } from '../../layer/lvol';

/** Clusters per chunk: SPDK_EXTENTS_PER_EP for 4 KiB pages (blobstore.h). */
export const CHUNK = 512;

export class ClusterMap implements ClusterLookup {
  /** Clusters of the blob (its size in clusters). */
  readonly length: number;
  private readonly chunks = new Map<number, Uint32Array>();
  private count = 0;

  constructor(length: number) {
    this.length = length;
  }

  /** Device cluster of cluster `i`, 0 when unallocated (or out of range). */
  get(i: number): number {
    return this.chunks.get(Math.floor(i / CHUNK))?.[i % CHUNK] ?? 0;
  }

  /** Sets cluster `i` (< length) to device cluster `c` (non-zero; a map is only ever filled). */
  set(i: number, c: number): void {
    const k = Math.floor(i / CHUNK);
    let chunk = this.chunks.get(k);
    if (!chunk) this.chunks.set(k, chunk = new Uint32Array(CHUNK));
    if (chunk[i % CHUNK] === 0) this.count++;
    chunk[i % CHUNK] = c;
  }

  /** Allocated clusters. */
  get allocated(): number {
    return this.count;
  }

  /** Each allocated cluster as [index, device cluster], in index order. */
  *entries(): Generator<[number, number]> {
    for (const k of [...this.chunks.keys()].sort((a, b) => a - b)) {
      const chunk = this.chunks.get(k)!;
      for (let j = 0; j < CHUNK; j++) if (chunk[j] !== 0) yield [k * CHUNK + j, chunk[j]];
    }
  }

  /** The whole map as a plain array (tests, small blobs). */
  toArray(): number[] {
    const out = new Array<number>(this.length).fill(0);
    for (const [i, c] of this.entries()) out[i] = c;
    return out;
  }
}

/**
 * An SPDK lvol (a blob of a Longhorn v2 disk) as a layer: whole clusters
 * (1 MiB for Longhorn) at the device offsets its cluster map gives.
 *
 * What a cluster is (SPDK lib/blob/blobstore.c, read path l.2978-2993 and
 * `blob_bs_dev.c`): allocated → `data` at `device cluster × cluster size`
 * (allocated zeros still hide the parent); unallocated → `absent` (the
 * Chain asks the parent lvol; at the bottom of a chain that is zeros, as a
 * thin lvol with no parent reads); at or past the lvol's own size → `zero`,
 * because a clone reads zeros where its parent is smaller
 * (`blob_bs_dev` `zero_trailing_bytes`), never the grandparent.
 *
 * Memory: the cluster map is the blob's (sparse, per extent page), shared,
 * not copied.
 */
import { LayerReadError } from '../errors';
import { native } from '../native';
import { preadUpTo } from './file-layer';
import * as fs from 'node:fs';
import type { BlockStatus, DirectPiece, Layer } from './layer';

/** An lvol's cluster map: the device cluster of each of its clusters, 0 = unallocated. */
export interface ClusterLookup {
  /** The lvol's size in clusters. */
  readonly length: number;
  /** Device cluster of cluster `i` (0: unallocated). */
  get(i: number): number;
  /** Allocated clusters. */
  readonly allocated: number;
}

export interface LvolLayout {
  /** Bytes per cluster. */
  clusterSize: number;
  clusters: ClusterLookup;
  /** The device's size in bytes (clusters past it cannot be read). */
  deviceSize: number;
  /** Why the device no longer looks as at open (an image file's size or mtime moved), or undefined. */
  changed?: () => string | undefined;
}

export class LvolLayer implements Layer {
  readonly name: string;
  readonly path: string;
  readonly size: number;
  readonly allocatedBytes: number;
  private readonly fd: number;
  private readonly cs: number;
  private readonly clusters: ClusterLookup;
  private readonly deviceSize: number;
  private readonly watch: (() => string | undefined) | undefined;

  /** `fd` is the device's (shared: the catalog closes it); `name` the lvol's. */
  constructor(fd: number, devicePath: string, name: string, layout: LvolLayout) {
    this.fd = fd;
    this.path = devicePath;
    this.name = name;
    this.cs = layout.clusterSize;
    this.clusters = layout.clusters;
    this.deviceSize = layout.deviceSize;
    this.watch = layout.changed;
    this.size = layout.clusters.length * layout.clusterSize;
    this.allocatedBytes = layout.clusters.allocated * layout.clusterSize;
  }

  /** Runs of whole clusters; a data run stops where allocation does, not at the asked length. */
  blockStatus(offset: number, length: number): BlockStatus {
    if (offset >= this.size) return { kind: 'zero', length: Math.max(length, 1) };
    const first = Math.floor(offset / this.cs);
    const allocated = this.clusters.get(first) !== 0;
    let c = first + 1;
    const want = Math.ceil((offset + Math.max(length, 1)) / this.cs);
    while (c < this.clusters.length && c < want && (this.clusters.get(c) !== 0) === allocated) c++;
    return { kind: allocated ? 'data' : 'absent', length: c * this.cs - offset };
  }

  read(buf: Buffer, bufOffset: number, length: number, position: number): void {
    this.pieces(buf, bufOffset, length, position, (at, n, dev) => {
      const got = preadUpTo(this.fd, buf, at, n, dev, (e, off) => this.ioError(e, off));
      if (got < n) throw this.pastEnd(dev + got);
      return true;
    });
  }

  readNoWait(buf: Buffer, bufOffset: number, length: number, position: number): boolean {
    return this.pieces(buf, bufOffset, length, position, (at, n, dev) => {
      let done = 0;
      while (done < n) {
        let r: number;
        try {
          r = native.preadNoWait(this.fd, buf, at + done, n - done, dev + done);
        } catch (e) {
          throw this.ioError(e, dev + done);
        }
        if (r < 0) return false;
        if (r === 0) throw this.pastEnd(dev + done);
        done += r;
      }
      return true;
    });
  }

  async readAsync(buf: Buffer, bufOffset: number, length: number, position: number): Promise<void> {
    const jobs: Promise<void>[] = [];
    this.pieces(buf, bufOffset, length, position, (at, n, dev) => {
      jobs.push(this.preadAsync(buf, at, n, dev));
      return true;
    });
    await Promise.all(jobs);
  }

  /** Allocated clusters map to the device (runs of device-contiguous clusters in one piece); the rest only `read` fills (zeros). */
  mapDirect(offset: number, length: number, each: DirectPiece): void {
    const end = offset + length;
    for (let pos = offset; pos < end;) {
      const c = Math.floor(pos / this.cs);
      if (c >= this.clusters.length) { each(pos, end - pos, -1, 0, 0); return; }
      const dc = this.clusters.get(c);
      let n = Math.min(end, (c + 1) * this.cs) - pos;
      if (dc === 0 || (dc + 1) * this.cs > this.deviceSize) { each(pos, n, -1, 0, 0); pos += n; continue; }
      const delta = (dc - c) * this.cs;
      for (let k = c + 1; pos + n < end && k < this.clusters.length && this.clusters.get(k) === dc + (k - c)
        && (dc + (k - c) + 1) * this.cs <= this.deviceSize; k++) {
        n = Math.min(end, (k + 1) * this.cs) - pos;
      }
      each(pos, n, this.fd, delta, this.deviceSize);
      pos += n;
    }
  }

  changed(): string | undefined {
    return this.watch?.();
  }

  close(): void {
    // The device's fd belongs to the catalog that opened it.
  }

  /**
   * Splits [position, position+length) into device pieces (allocated
   * clusters, device-contiguous ones merged) handed to `piece(bufAt, n,
   * deviceOffset)`; zero-fills the rest. Stops when `piece` says false.
   */
  private pieces(buf: Buffer, bufOffset: number, length: number, position: number,
    piece: (at: number, n: number, dev: number) => boolean): boolean {
    const end = position + length;
    for (let pos = position; pos < end;) {
      const c = Math.floor(pos / this.cs);
      const at = bufOffset + (pos - position);
      if (c >= this.clusters.length) { buf.fill(0, at, bufOffset + length); return true; }
      const dc = this.clusters.get(c);
      let n = Math.min(end, (c + 1) * this.cs) - pos;
      if (dc === 0) { buf.fill(0, at, at + n); pos += n; continue; }
      for (let k = c + 1; pos + n < end && k < this.clusters.length && this.clusters.get(k) === dc + (k - c); k++) {
        n = Math.min(end, (k + 1) * this.cs) - pos;
      }
      if (!piece(at, n, dc * this.cs + (pos - c * this.cs))) return false;
      pos += n;
    }
    return true;
  }

  private preadAsync(buf: Buffer, at: number, n: number, dev: number): Promise<void> {
    return new Promise((resolve, reject) => {
      let done = 0;
      const next = (err: NodeJS.ErrnoException | null, r: number) => {
        if (err) { reject(this.ioError(err, dev + done)); return; }
        if (r === 0) { reject(this.pastEnd(dev + done)); return; }
        done += r;
        if (done < n) fs.read(this.fd, buf, at + done, n - done, dev + done, next);
        else resolve();
      };
      fs.read(this.fd, buf, at, n, dev, next);
    });
  }

  private ioError(e: unknown, at: number): LayerReadError {
    return new LayerReadError(this.path, `lvol ${this.name}: read at device byte ${at} failed: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }

  private pastEnd(at: number): LayerReadError {
    return new LayerReadError(this.path, `lvol ${this.name}: its data at device byte ${at} lies past the end of the device (${this.deviceSize} bytes): truncated image?`);
  }
}

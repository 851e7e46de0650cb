/**
 * Kernel copies for the writers: where a view's bytes lie in files (chain
 * files, a raw backing image, an lvol's device: `Layer.mapDirect`), ranges
 * go from those files to the output on the libuv thread pool, never through
 * a buffer of ours: by copy_file_range (which falls back to a buffer on the
 * pool where the kernel cannot copy between the files), or, when the
 * writer has mapped the runs to look for zeros (mapAndScan: both writers do
 * where they can), by pwrite from that mapping, which spares a second trip
 * through the page cache. Either way each byte is copied once, page cache
 * to page cache. The caller goes on planning the next batch while the pool
 * writes; a bounded number of bytes is in flight. The writes into one
 * output take turns in the addon (a lock per output descriptor): several
 * at once only spin on the file's inode lock.
 */
import type { ResolvedRun } from '../chain/source';
import { ChainfsError, LayerReadError } from '../errors';
import { native, type Mapping } from '../native';

/** A piece of a data run whose bytes are in a file: virtual [offset, offset+length) at file offset + delta, zeros from fileEnd on. */
export interface DirectRun {
  offset: number;
  length: number;
  fd: number;
  delta: number;
  /** File offset from which the layer reads zeros (its size at open). */
  fileEnd: number;
  /** The layer's path, for messages. */
  path: string;
  /** The run's bytes in the file, mapped (mapAndScan); writes then come from here. */
  map?: Mapping;
}

/** Bytes of copies in flight before the writer waits for the oldest. */
const IN_FLIGHT = 64 << 20;

/**
 * The file pieces of `pieces` (data runs, in order), or null when some part
 * has no file behind it (a remote layer, a compressed cluster, a layer
 * without mapDirect): such a batch goes through memory.
 */
export function directPieces(pieces: readonly ResolvedRun[]): DirectRun[] | null {
  const out: DirectRun[] = [];
  for (const p of pieces) {
    const layer = p.layer;
    if (!layer || layer.asyncOnly || !layer.mapDirect) return null;
    let ok = true;
    layer.mapDirect(p.offset, p.length, (offset, length, fd, delta, fileEnd) => {
      if (fd < 0) ok = false;
      else out.push({ offset, length, fd, delta, fileEnd, path: layer.path });
    });
    if (!ok) return null;
  }
  return out;
}

/** Bytes of the run that lie in its file (past the file's end the layer reads zeros). */
export function bytesInFile(r: DirectRun): number {
  return Math.min(r.length, r.fileEnd - (r.offset + r.delta));
}

/** The runs clipped to virtual [from, to), unmapped. */
export function sliceRuns(runs: readonly DirectRun[], from: number, to: number): DirectRun[] {
  const out: DirectRun[] = [];
  for (const r of runs) {
    const a = Math.max(r.offset, from);
    const b = Math.min(r.offset + r.length, to);
    if (b > a) out.push({ ...r, offset: a, length: b - a, map: undefined });
  }
  return out;
}

/**
 * Maps every run's bytes (up to its file's end) and marks in `out` the
 * view's `granule`-aligned segments of [start, start+length) that hold a
 * non-zero byte: out[k] is the one at start + k * granule (cleared first;
 * `start` is granule-aligned). True when all are mapped; false (nothing
 * left mapped) where a file cannot be mapped: the caller reads through
 * memory or copies with copy_file_range instead. A read error (a file cut
 * short under its mapping) is thrown as a LayerReadError naming the file,
 * nothing left mapped.
 */
export function mapAndScan(runs: DirectRun[], start: number, length: number, granule: number, out: Uint8Array): boolean {
  if (!mapRuns(runs)) return false;
  out.fill(0, 0, Math.ceil(length / granule));
  try {
    for (const r of runs) {
      if (!r.map) continue;
      const k = Math.floor((r.offset - start) / granule);
      try {
        native.nonZeroMapped(r.map, 0, r.length, r.offset % granule, granule, out.subarray(k));
      } catch (e) {
        throw new LayerReadError(r.path, `read at offset ${r.offset + r.delta} failed: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
    }
  } catch (e) {
    releaseRuns(runs);
    throw e;
  }
  return true;
}

/** Maps every run's bytes (up to its file's end): true when all are mapped; false, nothing left mapped, where a file cannot be. */
function mapRuns(runs: DirectRun[]): boolean {
  for (const r of runs) {
    const inFile = bytesInFile(r);
    if (inFile <= 0) continue;
    try {
      r.map = native.mapRange(r.fd, r.offset + r.delta, inFile);
    } catch (e) {
      releaseRuns(runs);
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EIO') throw new LayerReadError(r.path, `read at offset ${r.offset + r.delta} failed: EIO`);
      return false;
    }
  }
  return true;
}

/** Unmaps the runs' mappings once their writes are done. */
export function releaseRuns(runs: DirectRun[]): void {
  for (const r of runs) {
    if (r.map) native.releaseMapping(r.map);
    r.map = undefined;
  }
}

/** Copies to one output file, a bounded number in flight; the first failure is thrown by settle() or drain(). */
export class DirectCopies {
  private readonly pending: Promise<void>[] = [];
  private inFlight = 0;
  private failure: unknown = null;

  constructor(private readonly outFd: number) {}

  /**
   * Copies virtual [from, to) of `runs` (sorted) to the output at `hostOffset`
   * (virtual `from` lands there). Parts past a file's end, and gaps between
   * runs, are not written: the output's holes read as the zeros they are.
   */
  copy(runs: readonly DirectRun[], from: number, to: number, hostOffset: number): void {
    for (const r of runs) {
      const a = Math.max(r.offset, from);
      const b = Math.min(r.offset + bytesInFile(r), to);
      if (b <= a) continue;
      const bytes = b - a;
      this.inFlight += bytes;
      const write = r.map
        ? native.writeMappedAsync(r.map, a - r.offset, bytes, this.outFd, hostOffset + (a - from))
        : native.copyFileRangeAsync(r.fd, a + r.delta, this.outFd, hostOffset + (a - from), bytes);
      const done = write.then(
        () => { this.inFlight -= bytes; },
        (e: unknown) => { this.inFlight -= bytes; this.failure ??= copyError(e, r.path, a + r.delta, bytes); },
      );
      this.pending.push(done);
    }
  }

  /** Waits while more than IN_FLIGHT bytes are being copied; throws a copy's failure. */
  async settle(): Promise<void> {
    while (this.inFlight > IN_FLIGHT && this.pending.length) await this.pending.shift();
    this.check();
  }

  /** Waits for every copy; throws the first failure. */
  async drain(): Promise<void> {
    while (this.pending.length) await this.pending.shift();
    this.check();
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }
}

/**
 * A failed copy: the output's own errors (no space, too big) as they are,
 * the rest (EIO of the source, most likely) as a one-line error naming the
 * layer file.
 */
function copyError(e: unknown, path: string, offset: number, bytes: number): unknown {
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code === 'ENOSPC' || code === 'EFBIG' || code === 'EDQUOT' || code === 'EBADF') return e;
  return new ChainfsError(path, `copying ${bytes} bytes at offset ${offset} failed: ${code ?? (e as Error).message}`, code ?? 'EIO');
}

/** How long a writer may run without letting the event loop turn (signals, the progress bar, copy completions). */
const TURN_MS = 20;

/** Yields to the event loop when the last turn is more than TURN_MS ago: writers call it between batches. */
export class LoopTurns {
  private last = Date.now();

  async maybe(): Promise<void> {
    if (Date.now() - this.last < TURN_MS) return;
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.last = Date.now();
  }
}

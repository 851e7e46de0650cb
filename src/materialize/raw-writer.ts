/**
 * Writes an ImageSource as a sparse raw image: the file is truncated to the
 * view's size (all hole), then only the data runs are read and written, so
 * whatever no layer holds stays a hole and is never read. All-zero 4 KiB
 * blocks of the data (a layer's allocated zeros) are left as holes too: the
 * content is what counts, not the source's allocation.
 *
 * Without a checksum, data runs whose bytes lie in files (chain files, a raw
 * backing image, an lvol's device: Layer.mapDirect) are mapped 8 MiB at a
 * time, scanned for zero blocks there, and written from the mapping on the
 * thread pool (direct-copy.ts): one kernel copy per byte, page cache to
 * page cache, never through a buffer of ours. Where a file cannot be mapped
 * the step goes by copy_file_range instead (zeros and all).
 * With a checksum the bytes are needed anyway: they are pread into the hash
 * worker's buffers and handed to it, while the kernel copies the same
 * ranges into the output (or, for layers not in files, the buffers are
 * written too).
 */
import * as fs from 'node:fs';
import type { ImageSource } from '../chain/source';
import { BLOCK_SIZE, type Layer } from '../layer/layer';
import { CHUNK, type Sha512Worker } from './checksum';
import { DirectCopies, LoopTurns, directPieces, mapAndScan, releaseRuns, sliceRuns, type DirectRun } from './direct-copy';
import { ReadAhead } from './read-ahead';
import { WriteBehind } from './write-behind';

/** Virtual bytes resolved per runs() query: a stretch of holes costs one query. */
const SCAN_WINDOW = 256 << 20;
/** Bytes mapped and written per step: large enough to amortise, small enough to overlap scanning with writing. */
const COPY_STEP = 8 << 20;
const ZERO_BLOCK = Buffer.alloc(BLOCK_SIZE);

export interface RawWriteOptions {
  /** Feed every byte of the output, holes as zeros, to this hash. */
  hash?: Sha512Worker;
  /** Data bytes written so far (holes not counted). */
  onData?: (bytes: number) => void;
  /** How far into the view the copy is (bytes; holes count once passed): a progress the same for every format. */
  onPosition?: (position: number) => void;
}

export interface RawWriteResult {
  /** Bytes of data runs read from the layers. */
  dataBytes: number;
}

/** Writes `src` to the empty, writable `fd`. Write errors are thrown as Node errors (with `code`). */
export async function writeRaw(src: ImageSource, fd: number, opts: RawWriteOptions = {}): Promise<RawWriteResult> {
  fs.ftruncateSync(fd, src.size);
  const copier = new RunCopier(fd, opts);
  try {
    for (let win = 0; win < src.size; win += SCAN_WINDOW) {
      const runs = src.runs(win, Math.min(SCAN_WINDOW, src.size - win));
      copier.ahead.reset(runs.filter((r) => r.layer !== null));
      for (const run of runs) {
        if (run.layer) await copier.data(run.layer, run.offset, run.length);
        else opts.hash?.zeros(run.length);
        opts.onPosition?.(run.offset + run.length);
      }
    }
  } catch (e) {
    await copier.copies.drain().catch(() => undefined); // none may write into the file once the caller has it removed
    await copier.idle();
    throw e;
  }
  await copier.copies.drain().finally(() => copier.idle());
  return { dataBytes: copier.done };
}

class RunCopier {
  done = 0;
  readonly copies: DirectCopies;
  private own: Buffer | null = null;
  /** A step's blocks: a step of COPY_STEP bytes not aligned to a block touches one block more. */
  private readonly nonZero = new Uint8Array(COPY_STEP / BLOCK_SIZE + 1);
  private readonly turns = new LoopTurns();
  readonly writeBehind: WriteBehind;
  readonly ahead = new ReadAhead();

  constructor(private readonly fd: number, private readonly opts: RawWriteOptions) {
    this.writeBehind = new WriteBehind(fd);
    this.copies = new DirectCopies(fd);
  }

  async data(layer: Layer, offset: number, length: number): Promise<void> {
    const direct = directPieces([{ offset, length, layer }]);
    const hash = this.opts.hash;
    const end = offset + length;
    if (direct && !hash) {
      // The output's offsets are the view's: each step lands where it is read from.
      for (let pos = offset; pos < end;) {
        const n = Math.min(COPY_STEP, end - pos);
        this.ahead.at(pos);
        this.copyStep(direct, pos, n);
        pos += n;
        this.advance(n);
        this.opts.onPosition?.(pos);
        await this.copies.settle();
        await this.turns.maybe();
      }
      return;
    }
    for (let pos = offset; pos < end;) {
      const n = Math.min(CHUNK, end - pos);
      this.ahead.at(pos);
      const buf = hash ? await hash.buffer() : (this.own ??= Buffer.allocUnsafe(CHUNK));
      if (layer.asyncOnly) await layer.readAsync!(buf, 0, n, pos);
      else layer.read(buf, 0, n, pos);
      // With a hash, the bytes read are only hashed here: the kernel copies
      // the same range into the output on the pool meanwhile.
      if (direct) this.copies.copy(direct, pos, pos + n, pos);
      else writeNonZero(this.fd, buf, n, pos);
      hash?.update(buf, n);
      pos += n;
      this.advance(n);
      this.opts.onPosition?.(pos);
      if (direct) await this.copies.settle();
      await this.turns.maybe();
    }
  }

  /**
   * One step of a direct run: its file pieces mapped and scanned for
   * all-zero 4 KiB blocks, the rest written from the mapping (zeros stay
   * holes, as through memory); where the files cannot be mapped, the whole
   * step by copy_file_range.
   */
  private copyStep(whole: readonly DirectRun[], pos: number, n: number): void {
    const runs = sliceRuns(whole, pos, pos + n);
    const first = pos - (pos % BLOCK_SIZE);
    if (!mapAndScan(runs, first, pos + n - first, BLOCK_SIZE, this.nonZero)) {
      this.copies.copy(runs, pos, pos + n, pos);
      return;
    }
    const blocks = Math.ceil((pos + n - first) / BLOCK_SIZE);
    try {
      for (let k = 0; k < blocks;) {
        if (!this.nonZero[k]) { k++; continue; }
        let j = k + 1;
        while (j < blocks && this.nonZero[j]) j++;
        const a = Math.max(pos, first + k * BLOCK_SIZE);
        const b = Math.min(pos + n, first + j * BLOCK_SIZE);
        this.copies.copy(runs, a, b, a);
        k = j;
      }
    } finally {
      releaseRuns(runs); // unmapped once their writes are done
    }
  }

  /** Resolves when neither writeback nor read-ahead requests are running. */
  async idle(): Promise<void> {
    await this.writeBehind.idle();
    await this.ahead.idle();
  }

  private advance(n: number): void {
    this.writeBehind.wrote(n);
    this.done += n;
    this.opts.onData?.(this.done);
  }
}

/**
 * pwrite buf[0, length) at `position`, skipping 4 KiB blocks (aligned to
 * file offsets) that are all zeros: the file is pre-truncated, so they read
 * as zeros anyway, and stay holes.
 */
function writeNonZero(fd: number, buf: Buffer, length: number, position: number): void {
  let i = 0;
  while (i < length) {
    let j = i;
    while (j < length && isZero(buf, j, blockEnd(j, position, length))) j = blockEnd(j, position, length);
    i = j;
    while (j < length && !isZero(buf, j, blockEnd(j, position, length))) j = blockEnd(j, position, length);
    if (j > i) writeAll(fd, buf, i, j - i, position + i);
    i = j;
  }
}

/** End (in buffer offsets) of the file block holding buffer offset `i`. */
function blockEnd(i: number, position: number, length: number): number {
  const file = position + i;
  return Math.min(length, i + BLOCK_SIZE - (file % BLOCK_SIZE));
}

function isZero(buf: Buffer, from: number, to: number): boolean {
  return ZERO_BLOCK.compare(buf, from, to, 0, to - from) === 0;
}

function writeAll(fd: number, buf: Buffer, from: number, length: number, position: number): void {
  let done = 0;
  while (done < length) done += fs.writeSync(fd, buf, from + done, length - done, position + done);
}

/**
 * A raw delta: `src`'s bytes in `ranges` only, each written in full (zeros
 * too: an allocated range is what a sparse-delta tool applies), the rest of
 * the `size`-byte file a hole. `onData` gets the bytes written so far.
 */
export async function writeRawRanges(src: ImageSource & { readAsync(b: Buffer, o: number, l: number, p: number): Promise<void> },
  fd: number, ranges: readonly { start: number; length: number }[], onData?: (bytes: number) => void): Promise<void> {
  fs.ftruncateSync(fd, src.size);
  const writeBehind = new WriteBehind(fd);
  const turns = new LoopTurns();
  const buf = Buffer.allocUnsafe(CHUNK);
  let done = 0;
  try {
    for (const r of ranges) {
      const end = Math.min(r.start + r.length, src.size);
      for (let pos = r.start; pos < end; pos += CHUNK) {
        const n = Math.min(CHUNK, end - pos);
        await src.readAsync(buf, 0, n, pos);
        writeAll(fd, buf, 0, n, pos);
        writeBehind.wrote(n);
        done += n;
        onData?.(done);
        await turns.maybe();
      }
    }
  } finally {
    await writeBehind.idle();
  }
}

/**
 * A Longhorn backup (or backing-image backup) as a layer: the block map of
 * its cfg over whatever lies below. A listed block is `data` (its plain
 * bytes, fetched, decompressed and verified on first read); an unlisted
 * block is `absent`, so the chain goes on to the backing image or to zeros,
 * exactly as Longhorn's restore leaves unlisted offsets as holes
 * (`RestoreDeltaBlockBackup`, backupstore `deltablock.go`).
 *
 * The bytes are remote (asyncOnly): consumers read through `readAsync`
 * (the blocks of one read are fetched in parallel; a sequential reader
 * triggers read-ahead of the next `jobs` blocks) and `readNoWait` (true when
 * every block of the range is in the memory cache). `blockStatus` answers
 * from the block map only.
 *
 * A bad block (missing, corrupt, wrong checksum) fails the reads that touch
 * it with a LayerReadError naming its offset and checksum; with
 * `badBlocks: 'zero'` it reads as zeros and is recorded in `badBlocks`.
 */
import { LayerReadError } from '../errors';
import type { BlockMap } from '../source/backupstore/cfg';
import { BadBlock, describeProblem, type BlockProblem } from '../source/backupstore/block-codec';
import type { BlockRef, BlockStore } from '../source/backupstore/block-store';
import type { BlockStatus, Layer } from './layer';

export interface BadBlockRecord {
  offset: number;
  checksum: string;
  problem: BlockProblem;
  detail: string;
}

export interface BackupBlocksOptions {
  /** Display name (`backup-x`, `backing image bi`). */
  name: string;
  /** Where the cfg is (a path or s3://...), for errors. */
  path: string;
  /** The layer's size: the volume's current Size (restore truncates to it), or the backing image's Size. */
  size: number;
  map: BlockMap;
  store: BlockStore;
  /** The fetch description of block `i` of the map. */
  ref(i: number): BlockRef;
  badBlocks: 'fail' | 'zero';
  /** Told once per bad block served as zeros. */
  onBadBlock?(rec: BadBlockRecord): void;
}

export class BackupBlocksLayer implements Layer {
  readonly name: string;
  readonly path: string;
  readonly size: number;
  readonly allocatedBytes: number;
  readonly asyncOnly = true;
  /** Bad blocks met so far (with badBlocks 'zero'), by offset. */
  readonly badBlocks = new Map<number, BadBlockRecord>();
  private readonly opts: BackupBlocksOptions;
  private readonly map: BlockMap;
  private readonly bs: number;
  /** Block number just past the last read: the next read starting there is sequential. */
  private nextSequential = -1;

  constructor(opts: BackupBlocksOptions) {
    this.opts = opts;
    this.name = opts.name;
    this.path = opts.path;
    this.size = opts.size;
    this.map = opts.map;
    this.bs = opts.map.blockSize;
    this.allocatedBytes = opts.map.length * this.bs;
  }

  blockStatus(offset: number, length: number): BlockStatus {
    if (offset >= this.size) return { kind: 'absent', length: Math.max(length, 1) };
    const b = Math.floor(offset / this.bs);
    let i = this.map.find(b);
    if (i >= 0) {
      while (i + 1 < this.map.length && this.map.index[i + 1] === this.map.index[i] + 1) i++;
      return { kind: 'data', length: Math.min((this.map.index[i] + 1) * this.bs, this.size) - offset };
    }
    const next = ~i < this.map.length ? this.map.index[~i] * this.bs : this.size;
    return { kind: 'absent', length: Math.min(next, this.size) - offset };
  }

  read(buf: Buffer, bufOffset: number, length: number, position: number): void {
    if (!this.readNoWait(buf, bufOffset, length, position)) {
      throw new LayerReadError(this.path, `block at offset ${position} is not fetched yet (a remote layer is read with readAsync)`);
    }
  }

  readNoWait(buf: Buffer, bufOffset: number, length: number, position: number): boolean {
    const end = position + length;
    for (let pos = position; pos < end;) {
      const b = Math.floor(pos / this.bs);
      const n = Math.min((b + 1) * this.bs, end) - pos;
      const at = bufOffset + (pos - position);
      const i = this.map.find(b);
      if (i < 0 || this.badBlocks.has(b * this.bs)) buf.fill(0, at, at + n);
      else {
        const plain = this.opts.store.peek(this.opts.ref(i));
        if (!plain) return false;
        copyOut(plain, pos - b * this.bs, buf, at, n);
      }
      pos += n;
    }
    return true;
  }

  async readAsync(buf: Buffer, bufOffset: number, length: number, position: number): Promise<void> {
    const end = position + length;
    const first = Math.floor(position / this.bs);
    const pending: Promise<void>[] = [];
    let lastI = -1;
    for (let pos = position; pos < end;) {
      const b = Math.floor(pos / this.bs);
      const n = Math.min((b + 1) * this.bs, end) - pos;
      const at = bufOffset + (pos - position);
      const i = this.map.find(b);
      if (i < 0) buf.fill(0, at, at + n);
      else {
        lastI = i;
        const from = pos - b * this.bs; // not `pos` in the closure: the loop moves it on
        pending.push(this.block(i).then((plain) => copyOut(plain, from, buf, at, n)));
      }
      pos += n;
    }
    const sequential = first === this.nextSequential || first + 1 === this.nextSequential;
    this.nextSequential = Math.floor((end - 1) / this.bs) + 1;
    if (sequential && lastI >= 0) this.readAhead(lastI + 1);
    await Promise.all(pending);
  }

  /** The plain bytes of map entry `i`, or zeros for a known-bad block when badBlocks is 'zero'. */
  private async block(i: number): Promise<Buffer> {
    const ref = this.opts.ref(i);
    try {
      return await this.opts.store.get(ref);
    } catch (e) {
      if (!(e instanceof BadBlock)) throw e;
      const offset = this.map.offset(i);
      const rec: BadBlockRecord = { offset, checksum: ref.checksum, problem: e.problem, detail: e.message };
      if (this.opts.badBlocks === 'fail') {
        throw new LayerReadError(this.path, `block at offset ${offset} (checksum ${ref.checksum}): ${describeProblem(e.problem)}: ${e.message}`);
      }
      if (!this.badBlocks.has(offset)) {
        this.badBlocks.set(offset, rec);
        this.opts.onBadBlock?.(rec);
      }
      return ZERO_BLOCK(this.bs);
    }
  }

  /** Starts fetching the next `jobs` listed blocks from map position `from` (not awaited; errors surface on the real read). */
  private readAhead(from: number): void {
    const to = Math.min(from + this.opts.store.jobs, this.map.length);
    for (let i = from; i < to; i++) {
      const ref = this.opts.ref(i);
      if (!this.opts.store.has(ref)) this.opts.store.get(ref).catch(() => undefined);
    }
  }

  close(): void {
    // the store belongs to the catalog
  }
}

/** Copies plain[from, from+n) to buf[at..]; bytes past a short block (a backing image's tail) are zeros. */
function copyOut(plain: Buffer, from: number, buf: Buffer, at: number, n: number): void {
  const have = Math.max(0, Math.min(n, plain.length - from));
  if (have > 0) plain.copy(buf, at, from, from + have);
  if (have < n) buf.fill(0, at + have, at + n);
}

let zeros: Buffer | undefined;
function ZERO_BLOCK(size: number): Buffer {
  if (!zeros || zeros.length < size) zeros = Buffer.alloc(size);
  return zeros.subarray(0, size);
}

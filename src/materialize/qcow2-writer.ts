/**
 * Writes an ImageSource as a standalone qcow2 v3 image, without qemu-img.
 *
 * File layout, in file order:
 *
 *   cluster 0      header (written last, once the refcount table is placed)
 *   L1 table       reserved up front from the virtual size, filled in windows
 *   ...            data clusters of one L2 range, then that range's L2 table,
 *                  then the next range; a refcount block is appended as soon
 *                  as the append point has passed the host range it covers
 *   tail           the last refcount blocks, then the refcount table
 *
 * Everything after the L1 table is appended through one batch buffer, so the
 * output is a stream of large sequential writes plus one small positional
 * write per L1 window and one for the header. Every host cluster below the
 * end of the file is in use, so no refcount is ever zero inside the file.
 *
 * Memory does not grow with the virtual size: one input batch and one output
 * batch (8 MiB each), one L2 table and one or two refcount blocks (one cluster
 * each), a 64 KiB L1 window, and the refcount table (8 bytes per refcount
 * block, i.e. per cluster_size^2/2 bytes of output: 8 bytes per 2 GiB with
 * 64 KiB clusters, per 128 KiB with 512-byte clusters).
 */
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import type { ImageSource, ResolvedRun } from '../chain/source';
import { ChainfsError } from '../errors';
import { DirectCopies, LoopTurns, directPieces, mapAndScan, releaseRuns, type DirectRun } from './direct-copy';
import { ReadAhead } from './read-ahead';
import { WriteBehind } from './write-behind';

export interface Qcow2WriteOptions {
  /**
   * Cluster size in bytes: a power of two from 512 to 2 MiB (qemu cannot
   * open larger). Default 65536. Small clusters cost metadata: with 512-byte
   * clusters one L2 table maps only 32 KiB and the L1 table needs 8 bytes per
   * 32 KiB of virtual size (qemu caps L1 at 32 MiB, i.e. 128 GiB virtual).
   */
  clusterSize?: number;
  /**
   * Store clusters deflate-compressed, as `qemu-img convert -c` does. A
   * cluster whose compressed form is not smaller than a cluster is stored
   * plain. Compressed clusters are packed back to back, several per host
   * cluster.
   */
  compress?: boolean;
  /** Virtual bytes processed so far; called after each 8 MiB batch with data, and at least every 256 MiB. */
  onProgress?: (bytesDone: number) => void;
  /**
   * An overlay: the image names this backing file (the path as given,
   * relative paths resolved by qemu against the image's directory) and its
   * format (a header extension), and clusters the source does not hold
   * read from it.
   */
  backing?: QcowBacking;
  /**
   * Store all-zero clusters as qcow2 zero clusters (v3 flag, no host
   * cluster) instead of leaving them unallocated: an overlay must, or the
   * backing file's bytes would show through.
   */
  zeroClusters?: boolean;
}

/** A qcow2 image's backing file, as its header records it. */
export interface QcowBacking {
  /** The path written into the image (qemu resolves a relative one against the image's directory). */
  file: string;
  format: 'raw' | 'qcow2';
}

export interface Qcow2WriteResult {
  /** Bytes of the output file (its end; every cluster below it is in use). */
  fileSize: number;
  /** Guest clusters stored (plain or compressed); all-zero clusters are not. */
  dataClusters: number;
}

export const DEFAULT_CLUSTER_SIZE = 65536;
const MIN_CLUSTER_SIZE = 512;
const MAX_CLUSTER_SIZE = 2 * 1024 * 1024;
/** Virtual bytes read per batch; also the output write size. Costs 2 x 8 MiB of buffers. */
const BATCH = 8 * 1024 * 1024;
/** Groups of plain clusters at least this big are written from the input buffer, not copied into the output batch. */
const DIRECT_WRITE = 256 * 1024;
/** Virtual bytes per `runs()` query: a window of holes is skipped with one query. */
const SCAN_WINDOW = 256 * 1024 * 1024;
/** L1 entries are written in 64 KiB windows (8192 entries), never held whole. */
const L1_WINDOW = 64 * 1024;
/** qemu refuses L1 tables over 32 MiB and refcount tables over 8 MiB. */
const MAX_L1_BYTES = 32 * 1024 * 1024;
const MAX_REFTABLE_BYTES = 8 * 1024 * 1024;
/**
 * qemu deflates compressed clusters with a 4 KiB window and inflates with one
 * (windowBits -12); zlib only promises to inflate streams made with a window
 * no wider than the reader's. qemu's one-shot inflate of a whole cluster
 * happens to tolerate wider ones, readers that inflate in pieces do not.
 */
const DEFLATE_WINDOW_BITS = 12;

const QCOW2_MAGIC = 0x514649fb;
const QCOW2_VERSION = 3;
/** 104 bytes of v3 header + compression_type (0 = zlib) padded to a multiple of 8. */
const HEADER_LENGTH = 112;
/** refcount_order 4: 16-bit refcounts, so a refcount block holds cluster_size / 2 of them. */
const REFCOUNT_ORDER = 4;
const REFCOUNT_MAX = 0xffff;
/** L1/L2 bit 63 ("refcount is exactly one"), as the high word. */
const FLAG_COPIED_HI = 0x80000000;
/** L2 bit 62 (compressed cluster), as the high word. */
const FLAG_COMPRESSED_HI = 0x40000000;
/** L2 bit 0 (v3): the cluster reads as zeros, whatever the backing file holds. */
const FLAG_ZERO_LO = 1;
/** Header extension type of the backing file's format name (qcow2 spec). */
const EXT_BACKING_FORMAT = 0xe2792aca;
const TWO_32 = 2 ** 32;
const SECTOR = 512;

/**
 * Writes `src` as a qcow2 v3 image to the already opened, empty, writable
 * `fd`. Options qemu could not open are refused synchronously (ChainfsError)
 * before anything is written; the copy itself is asynchronous only where a
 * layer's bytes are (`Layer.asyncOnly`), otherwise it runs without yielding.
 */
export function writeQcow2(src: ImageSource, fd: number, opts: Qcow2WriteOptions = {}): Promise<Qcow2WriteResult> {
  const cs = opts.clusterSize ?? DEFAULT_CLUSTER_SIZE;
  const l1Size = checkQcow2Geometry(src.size, cs);
  if (opts.backing) encodeHeader(cs, src.size, l1Size, 0, { tableOffset: 0, tableClusters: 0 }, opts.backing); // refuses what does not fit
  return writeChecked(src, fd, opts, cs, l1Size);
}

async function writeChecked(src: ImageSource, fd: number, opts: Qcow2WriteOptions, cs: number, l1Size: number): Promise<Qcow2WriteResult> {
  const l1Clusters = Math.ceil((l1Size * 8) / cs);

  const host = new HostFile(fd, cs);
  host.reserve(1); // the header
  // A zero-size disk has no L1 table (offset 0), as qemu-img create makes it.
  const l1Offset = l1Clusters > 0 ? host.reserve(l1Clusters) : 0;
  const l1 = new L1Table(fd, l1Offset, (l1Clusters * cs) / 8);
  const l2 = new L2Tables(cs, host, l1);
  try {
    const dataClusters = await copyClusters(src, cs, opts, host, l2);
    l2.close();
    const refcounts = host.finish();
    l1.finish();
    writeAll(fd, encodeHeader(cs, src.size, l1Size, l1Offset, refcounts, opts.backing), 0);
    return { fileSize: refcounts.fileSize, dataClusters };
  } finally {
    await host.writeBehind.idle();
  }
}

/** Validates the options against qcow2's and qemu's limits; returns the L1 size (entries). */
export function checkQcow2Geometry(size: number, cs: number): number {
  if (!Number.isInteger(cs) || cs < MIN_CLUSTER_SIZE || cs > MAX_CLUSTER_SIZE || (cs & (cs - 1)) !== 0) {
    throw new ChainfsError(undefined, `qcow2 cluster size ${cs} is not a power of two from 512 to 2097152`);
  }
  if (!Number.isSafeInteger(size) || size < 0 || size % SECTOR !== 0) {
    throw new ChainfsError(undefined, `virtual size ${size} is not a multiple of 512 bytes; qcow2 cannot hold it`);
  }
  const l2Span = (cs / 8) * cs;
  const l1Size = Math.ceil(size / l2Span);
  if (l1Size * 8 > MAX_L1_BYTES) {
    throw new ChainfsError(
      undefined,
      `virtual size ${size} needs a ${l1Size * 8}-byte L1 table with ${cs}-byte clusters, ` +
        `over qemu's 32 MiB limit; use a larger cluster size`,
    );
  }
  return l1Size;
}

/**
 * Walks the virtual disk in batches, reads only data runs, and stores every
 * cluster that is not all zeros. Returns the number of clusters stored.
 */
async function copyClusters(src: ImageSource, cs: number, opts: Qcow2WriteOptions, host: HostFile, l2: L2Tables): Promise<number> {
  const input = Buffer.alloc(BATCH);
  const zeros = Buffer.alloc(cs);
  /** Direct batches: nonZero[c] = 1 if cluster c of the batch holds a non-zero byte. */
  const nonZero = new Uint8Array(BATCH / cs + 1);
  const copies = new DirectCopies(host.fd);
  const ahead = new ReadAhead();
  const turns = new LoopTurns();
  let stored = 0;
  let reported = 0;
  const report = (done: number): void => {
    if (opts.onProgress && done > reported) opts.onProgress(done);
    reported = Math.max(reported, done);
  };

  // Plain clusters go out in groups of consecutive non-zero ones: written
  // straight from the input buffer (no copy through the output batch), or,
  // in a direct batch, copied by the kernel from the layer files.
  let groupFirst = -1; // guest cluster of the group's first, -1: none
  let groupAt = 0; // its offset in `input`
  let groupLen = 0;
  let direct: DirectRun[] | null = null; // the batch's file pieces, when it is copied directly
  const flushGroup = (): void => {
    if (groupLen === 0) return;
    const first = groupFirst;
    const placed = (k: number, where: number) => l2.set(first + k, hiWord(where) | FLAG_COPIED_HI, loWord(where));
    if (direct) {
      const runs = direct;
      host.appendDirect(groupLen, placed, (k, n, at) => copies.copy(runs, (first + k) * cs, (first + k + n) * cs, at));
    } else {
      host.appendClusters(input, groupAt, groupLen, placed);
    }
    stored += groupLen;
    groupLen = 0;
  };

  // Takes (buffer, offset) rather than a subarray: no allocation per plain cluster.
  const storeCluster = (guestCluster: number, at: number, zero: boolean): void => {
    if (zero) {
      flushGroup();
      if (opts.zeroClusters) l2.set(guestCluster, 0, FLAG_ZERO_LO);
      return;
    }
    if (opts.compress) {
      stored++;
      const packed = zlib.deflateRawSync(input.subarray(at, at + cs), { windowBits: DEFLATE_WINDOW_BITS });
      if (packed.length < cs) {
        const where = host.appendCompressed(packed);
        l2.set(guestCluster, ...compressedEntry(where, packed.length, cs));
        return;
      }
      const where = host.appendCluster(input, at);
      l2.set(guestCluster, hiWord(where) | FLAG_COPIED_HI, loWord(where));
      return;
    }
    if (groupLen > 0 && guestCluster === groupFirst + groupLen) {
      groupLen++;
      return;
    }
    flushGroup();
    groupFirst = guestCluster;
    groupAt = at;
    groupLen = 1;
  };

  const copyBatch = async (start: number, length: number, pieces: ResolvedRun[]): Promise<void> => {
    // Without compression, pieces whose bytes lie in files are never read
    // into a buffer: their clusters are checked for zeros in a mapping of
    // the files, and written from it on the thread pool while the next
    // batch is looked at.
    direct = opts.compress ? null : directPieces(pieces);
    if (direct && !mapAndScan(direct, start, length, cs, nonZero)) direct = null; // unmappable: through memory
    if (!direct) {
      // Zeros only where no piece lands (between them, and the last cluster's tail).
      let filled = 0;
      for (const p of pieces) {
        if (p.offset - start > filled) input.fill(0, filled, p.offset - start);
        filled = p.offset - start + p.length;
      }
      const end = alignUp(length, cs);
      if (end > filled) input.fill(0, filled, end);
      const remote: Promise<void>[] = [];
      for (const p of pieces) {
        if (p.layer?.asyncOnly) remote.push(p.layer.readAsync!(input, p.offset - start, p.length, p.offset));
        else src.read(input, p.offset - start, p.length, p.offset);
      }
      if (remote.length) await Promise.all(remote);
    }
    let next = 0; // first cluster of the batch not yet stored
    for (const p of pieces) {
      const last = Math.floor((p.offset + p.length - 1 - start) / cs);
      for (let c = Math.max(next, Math.floor((p.offset - start) / cs)); c <= last; c++) {
        const at = c * cs;
        storeCluster(start / cs + c, at, direct ? nonZero[c] === 0 : input.compare(zeros, 0, cs, at, at + cs) === 0);
      }
      next = last + 1;
    }
    flushGroup(); // the input buffer is reused by the next batch
    if (direct) releaseRuns(direct); // unmapped once their writes are done
    await copies.settle();
    await turns.maybe();
  };

  try {
    for (let win = 0; win < src.size; win += SCAN_WINDOW) {
      const winEnd = Math.min(win + SCAN_WINDOW, src.size);
      const data = src.runs(win, winEnd - win).filter((r) => r.layer !== null);
      ahead.reset(data);
      let i = 0;
      while (i < data.length) {
        // One batch: the BATCH-aligned slice holding the next data run, and every run piece inside it.
        const start = Math.max(win, data[i].offset - (data[i].offset % BATCH));
        const end = Math.min(start + BATCH, winEnd);
        const pieces: ResolvedRun[] = [];
        for (let j = i; j < data.length && data[j].offset < end; j++) {
          const from = Math.max(data[j].offset, start);
          const to = Math.min(data[j].offset + data[j].length, end);
          if (to > from) pieces.push({ offset: from, length: to - from, layer: data[j].layer });
        }
        ahead.at(start);
        await copyBatch(start, end - start, pieces);
        while (i < data.length && data[i].offset + data[i].length <= end) i++;
        if (i < data.length && data[i].offset < end) {
          // The run continues into the next batch: resume it there.
          data[i] = { offset: end, length: data[i].offset + data[i].length - end, layer: data[i].layer };
        }
        report(end);
      }
      report(winEnd);
    }
  } catch (e) {
    await copies.drain().catch(() => undefined); // none may write into the file once the caller has it removed
    await ahead.idle();
    throw e;
  }
  await copies.drain().finally(() => ahead.idle());
  return stored;
}

/**
 * The output file as an append-only run of host clusters, with their
 * refcounts. Refcount block i covers host clusters [i*E, (i+1)*E), E =
 * cluster_size/2 (64 KiB clusters: one block per 2 GiB of file; 512-byte
 * clusters: one per 128 KiB). A block is appended as soon as the append point
 * passes the end of its range, so it always lands in a later range that is
 * still open: only the blocks of the range being filled are in memory.
 */
class HostFile {
  /** Next free byte; every host cluster below it is in use. */
  private pos = 0;
  private readonly out = Buffer.allocUnsafe(BATCH);
  /** Writeback of what is written so far (awaited idle before the writer returns). */
  readonly writeBehind: WriteBehind;
  /** File offset of out[0]; out holds [outStart, pos). */
  private outStart = 0;
  private outLen = 0;
  private readonly perBlock: number;
  private readonly rangeBytes: number;
  /** Lowest host range whose refcount block is not written yet; open[i] is range firstOpen + i. */
  private firstOpen = 0;
  private readonly open: Uint16Array[] = [];
  /** A written range's refcounts, reused for the next range (no garbage per range). */
  private spare: Uint16Array | undefined;
  /** The refcount table: the offset of each range's refcount block. */
  private readonly blockOffsets: number[] = [];

  constructor(readonly fd: number, private readonly cs: number) {
    this.writeBehind = new WriteBehind(fd);
    this.perBlock = (cs * 8) / (1 << REFCOUNT_ORDER);
    this.rangeBytes = this.perBlock * cs;
  }

  /** Claims `n` contiguous clusters that the caller writes itself (header, L1); returns their offset. */
  reserve(n: number): number {
    this.alignPos();
    this.flush();
    const at = this.pos;
    for (let c = 0; c < n; c++) this.ref(at / this.cs + c);
    this.pos += n * this.cs;
    this.outStart = this.pos;
    this.settle();
    return at;
  }

  /** Appends one cluster, data[from, from + cluster size) (data or an L2 table); returns its host offset. */
  appendCluster(data: Buffer, from = 0): number {
    this.alignPos();
    const at = this.pos;
    this.put(data, from, this.cs);
    this.ref(at / this.cs);
    this.settle();
    return at;
  }

  /**
   * Appends `count` clusters data[from, from + count * cluster size), large
   * groups written straight from `data` (after what is buffered); tells
   * `placed(k, hostOffset)` where each went: contiguous, but for a refcount
   * block that may land between two when a refcount range fills.
   */
  appendClusters(data: Buffer, from: number, count: number, placed: (k: number, hostOffset: number) => void): void {
    this.appendRuns(count, placed, (k, n) => {
      const src = from + k * this.cs;
      const bytes = n * this.cs;
      if (bytes >= DIRECT_WRITE) {
        this.flush();
        writeAll(this.fd, data.subarray(src, src + bytes), this.outStart);
        this.wroteDirect(bytes);
      } else {
        this.put(data, src, bytes);
      }
    });
  }

  /**
   * appendClusters for clusters whose bytes the caller writes itself (a
   * kernel copy): `write(k, n, hostOffset)` must put clusters [k, k+n) at
   * hostOffset, which may be later (the output's end there is a hole until
   * then, and no metadata goes there).
   */
  appendDirect(count: number, placed: (k: number, hostOffset: number) => void, write: (k: number, n: number, hostOffset: number) => void): void {
    this.appendRuns(count, placed, (k, n, at) => {
      this.flush();
      write(k, n, at);
      this.wroteDirect(n * this.cs);
    });
  }

  /**
   * The placing loop of appendClusters and appendDirect: clusters go in runs
   * that stay inside the open refcount range; `store(k, n, hostOffset)` puts
   * clusters [k, k+n) at the current position (advancing it), then they are
   * counted and `placed` is told, before anything else is appended (placed()
   * may append an L2 table).
   */
  private appendRuns(count: number, placed: (k: number, hostOffset: number) => void, store: (k: number, n: number, hostOffset: number) => void): void {
    this.alignPos();
    let k = 0;
    while (k < count) {
      const room = Math.floor(((this.firstOpen + 1) * this.rangeBytes - this.pos) / this.cs); // settle() keeps it >= 1
      const n = Math.min(count - k, Math.max(1, room));
      const at = this.pos;
      store(k, n, at);
      for (let j = 0; j < n; j++) this.ref(at / this.cs + j);
      for (let j = 0; j < n; j++) placed(k + j, at + j * this.cs);
      this.settle();
      k += n;
    }
  }

  /** `bytes` written straight to the output at the current position (past what is buffered). */
  private wroteDirect(bytes: number): void {
    this.writeBehind.wrote(bytes);
    this.outStart += bytes;
    this.pos += bytes;
  }

  /**
   * Appends a compressed cluster right after the previous one (any byte
   * offset; it may straddle into the next host cluster). Each host cluster it
   * touches gets one more reference, as qemu-img check counts them.
   */
  appendCompressed(packed: Buffer): number {
    const at = this.pos;
    this.put(packed, 0, packed.length);
    const last = Math.floor((at + packed.length - 1) / this.cs);
    for (let c = Math.floor(at / this.cs); c <= last; c++) this.ref(c);
    this.settle();
    return at;
  }

  /**
   * Appends the remaining refcount blocks and the refcount table, which must
   * also count themselves: grow the guess of how many ranges the file spans
   * until the blocks and table it implies fit in it (a fixed point; the table
   * grows by 8 bytes per range, so it converges at once in practice).
   */
  finish(): { fileSize: number; tableOffset: number; tableClusters: number } {
    this.alignPos();
    const base = this.pos;
    const first = this.firstOpen;
    let ranges = first + 1;
    for (;;) {
      const needed = Math.ceil(this.tailEnd(base, first, ranges) / this.rangeBytes);
      if (needed <= ranges) break;
      ranges = needed;
    }
    const tableBytes = ranges * 8;
    if (tableBytes > MAX_REFTABLE_BYTES) {
      throw new ChainfsError(undefined, `the image needs a ${tableBytes}-byte refcount table, over qemu's 8 MiB limit; use a larger cluster size`);
    }
    const tableClusters = Math.ceil(tableBytes / this.cs);
    const blocks = ranges - first;
    for (let c = 0; c < blocks + tableClusters; c++) this.ref(base / this.cs + c);
    while (this.open.length < blocks) this.open.push(this.newBlock());
    for (let i = 0; i < blocks; i++) {
      this.blockOffsets.push(this.pos);
      this.putBlock(this.open[i]);
    }
    this.flush();
    const table = Buffer.alloc(tableClusters * this.cs);
    this.blockOffsets.forEach((off, i) => put64(table, i * 8, off));
    writeAll(this.fd, table, this.pos);
    return { fileSize: this.pos + table.length, tableOffset: this.pos, tableClusters };
  }

  /** End of file if the tail holds blocks for ranges [first, ranges) and a table for `ranges`. */
  private tailEnd(base: number, first: number, ranges: number): number {
    return base + (ranges - first + Math.ceil((ranges * 8) / this.cs)) * this.cs;
  }

  /** Appends the refcount blocks of every range the append point has left behind. */
  private settle(): void {
    while (this.pos >= (this.firstOpen + 1) * this.rangeBytes) {
      this.alignPos();
      const at = this.pos;
      this.ref(at / this.cs); // lands in a later, still open range
      const block = this.open.shift() ?? this.newBlock();
      this.blockOffsets.push(at);
      this.firstOpen++;
      this.putBlock(block);
      this.spare = block;
    }
  }

  private newBlock(): Uint16Array {
    const block = this.spare ?? new Uint16Array(this.perBlock);
    this.spare = undefined;
    return block.fill(0);
  }

  /** Appends one range's refcounts as a refcount block: big-endian 16-bit entries. */
  private putBlock(block: Uint16Array): void {
    if (this.outLen + this.cs > this.out.length) this.flush();
    for (let k = 0; k < block.length; k++) this.out.writeUInt16BE(block[k], this.outLen + 2 * k);
    this.outLen += this.cs;
    this.pos += this.cs;
  }

  private ref(cluster: number): void {
    const range = Math.floor(cluster / this.perBlock);
    const i = range - this.firstOpen;
    if (i < 0) throw new Error(`qcow2 writer: refcount block for host cluster ${cluster} already written`);
    while (this.open.length <= i) this.open.push(this.newBlock());
    const block = this.open[i];
    const k = cluster - range * this.perBlock;
    if (block[k] === REFCOUNT_MAX) throw new Error(`qcow2 writer: refcount overflow at host cluster ${cluster}`);
    block[k]++;
  }

  private put(data: Buffer, from: number, length: number): void {
    if (this.outLen + length > this.out.length) this.flush();
    data.copy(this.out, this.outLen, from, from + length);
    this.outLen += length;
    this.pos += length;
  }

  /** Pads a partly filled cluster (the tail of packed compressed data) with zeros. */
  private alignPos(): void {
    const r = this.pos % this.cs;
    if (r === 0) return;
    const pad = this.cs - r;
    if (this.outLen + pad > this.out.length) this.flush();
    this.out.fill(0, this.outLen, this.outLen + pad);
    this.outLen += pad;
    this.pos += pad;
  }

  private flush(): void {
    if (this.outLen > 0) writeAll(this.fd, this.out.subarray(0, this.outLen), this.outStart);
    this.writeBehind.wrote(this.outLen);
    this.outStart += this.outLen;
    this.outLen = 0;
  }
}

/**
 * The L2 table of the L1 range being filled (one cluster: 64 KiB clusters map
 * 512 MiB per table, 512-byte clusters 32 KiB). It is appended after its
 * range's data when the first cluster of a later range arrives; ranges with
 * no data get no table.
 */
class L2Tables {
  private readonly table: Buffer;
  private readonly entries: number;
  private index = -1;
  private dirty = false;

  constructor(cs: number, private readonly host: HostFile, private readonly l1: L1Table) {
    this.table = Buffer.alloc(cs);
    this.entries = cs / 8;
  }

  /** Sets the entry of `guestCluster`; clusters must come in increasing order. */
  set(guestCluster: number, hi: number, lo: number): void {
    const index = Math.floor(guestCluster / this.entries);
    if (index !== this.index) {
      this.close();
      this.index = index;
    }
    const at = (guestCluster - index * this.entries) * 8;
    this.table.writeUInt32BE(hi >>> 0, at);
    this.table.writeUInt32BE(lo, at + 4);
    this.dirty = true;
  }

  close(): void {
    if (!this.dirty) return;
    this.l1.set(this.index, this.host.appendCluster(this.table));
    this.table.fill(0);
    this.dirty = false;
  }
}

/** The L1 table, written in order one window at a time into its reserved clusters. */
class L1Table {
  private readonly window: Buffer;
  private first = 0; // entry index of window[0]

  constructor(private readonly fd: number, private readonly offset: number, private readonly capacity: number) {
    this.window = Buffer.alloc(Math.min(L1_WINDOW, capacity * 8));
  }

  set(index: number, l2Offset: number): void {
    if (index >= this.capacity) throw new Error(`qcow2 writer: L1 index ${index} past the table (${this.capacity})`);
    while (index >= this.first + this.window.length / 8) this.flushWindow();
    // Bit 63: the L2 table's refcount is exactly one.
    const at = (index - this.first) * 8;
    this.window.writeUInt32BE((hiWord(l2Offset) | FLAG_COPIED_HI) >>> 0, at);
    this.window.writeUInt32BE(loWord(l2Offset), at + 4);
  }

  /** Writes the rest, zeros included, so the table never depends on the file starting out empty. */
  finish(): void {
    while (this.first < this.capacity) this.flushWindow();
  }

  private flushWindow(): void {
    const bytes = Math.min(this.window.length, (this.capacity - this.first) * 8);
    writeAll(this.fd, this.window.subarray(0, bytes), this.offset + this.first * 8);
    this.window.fill(0);
    this.first += this.window.length / 8;
  }
}

/**
 * The L2 entry of a compressed cluster: bit 62, then (x = 70 - cluster_bits)
 * the host byte offset in bits 0..x-1 and, from bit x, the number of 512-byte
 * sectors the data occupies beyond the one holding its first byte.
 */
function compressedEntry(at: number, length: number, cs: number): [number, number] {
  const x = 70 - Math.log2(cs);
  if (at >= 2 ** x) throw new ChainfsError(undefined, `compressed data at offset ${at} is beyond what qcow2 can address`);
  const sectors = Math.floor((at + length - 1) / SECTOR) - Math.floor(at / SECTOR);
  return [(FLAG_COMPRESSED_HI | (sectors << (x - 32)) | hiWord(at)) >>> 0, loWord(at)];
}

/**
 * The whole first cluster: the v3 header, header extensions (the backing
 * format, if any) ended by 8 zero bytes, the backing file name, zeros.
 * Throws ChainfsError when the backing file name does not fit (qemu's limit
 * is 1023 bytes, and it must fit in the first cluster).
 */
export function encodeHeader(
  cs: number,
  size: number,
  l1Size: number,
  l1Offset: number,
  refcounts: { tableOffset: number; tableClusters: number },
  backing?: QcowBacking,
): Buffer {
  const h = Buffer.alloc(cs);
  h.writeUInt32BE(QCOW2_MAGIC, 0);
  h.writeUInt32BE(QCOW2_VERSION, 4);
  if (backing) {
    const fmt = Buffer.from(backing.format);
    const name = Buffer.from(backing.file);
    let at = HEADER_LENGTH;
    h.writeUInt32BE(EXT_BACKING_FORMAT, at);
    h.writeUInt32BE(fmt.length, at + 4);
    at += 8 + alignUp(fmt.length, 8) + 8; // the extension, then the end marker (zeros)
    if (name.length === 0 || name.length > 1023 || at + name.length > cs) {
      throw new ChainfsError(backing.file, `backing file name of ${name.length} bytes does not fit in the qcow2 header (at most 1023, and within the first ${cs}-byte cluster): use a shorter path or a larger cluster size`);
    }
    fmt.copy(h, HEADER_LENGTH + 8);
    name.copy(h, at);
    put64(h, 8, at);
    h.writeUInt32BE(name.length, 16);
  }
  h.writeUInt32BE(Math.log2(cs), 20);
  put64(h, 24, size);
  // 32: no encryption.
  h.writeUInt32BE(l1Size, 36);
  put64(h, 40, l1Offset);
  put64(h, 48, refcounts.tableOffset);
  h.writeUInt32BE(refcounts.tableClusters, 56);
  // 60..71: no snapshots; 72..95: no feature bits (in particular not dirty).
  h.writeUInt32BE(REFCOUNT_ORDER, 96);
  h.writeUInt32BE(HEADER_LENGTH, 100);
  // 104: compression_type 0 (zlib), then padding.
  return h;
}

export function put64(buf: Buffer, at: number, value: number): void {
  buf.writeUInt32BE(hiWord(value), at);
  buf.writeUInt32BE(loWord(value), at + 4);
}

function hiWord(value: number): number {
  return Math.floor(value / TWO_32);
}

function loWord(value: number): number {
  return value % TWO_32;
}

function alignUp(n: number, a: number): number {
  const r = n % a;
  return r === 0 ? n : n + (a - r);
}

/** fs.writeSync until every byte is written; errors (ENOSPC, EIO...) propagate to the caller. */
function writeAll(fd: number, data: Buffer, position: number): void {
  let done = 0;
  while (done < data.length) {
    const n = fs.writeSync(fd, data, done, data.length - done, position + done);
    if (n === 0) throw Object.assign(new Error(`write at offset ${position + done} wrote nothing`), { code: 'EIO' });
    done += n;
  }
}

/**
 * A qcow2 v3 image written in one pass, front to back, for a pipe
 * (`chainfs export SRC - --format qcow2 | ssh host 'cat > vol.qcow2'`),
 * which `qemu-img convert` cannot do.
 *
 * The view's map is known before any data is read, so the whole layout is
 * fixed first and every byte is written in file order:
 *
 *   header | L1 table | refcount table | refcount blocks | L2 tables | data clusters
 *
 * Every guest cluster a data run touches is stored (its bytes are not
 * looked at, so an all-zero cluster is stored too: the price of not
 * seeking back); a restricted view (an overlay's changed ranges, see
 * overlay.ts) stores zeros as data, which hides the backing file as it must.
 * Every host cluster below the end is referenced exactly once.
 *
 * Memory: the list of stored cluster runs (16 bytes per run of consecutive
 * clusters), one batch buffer (8 MiB) and one metadata cluster at a time.
 */
import type { ImageSource } from '../chain/source';
import { ChainfsError } from '../errors';
import { checkQcow2Geometry, encodeHeader, put64, type QcowBacking } from './qcow2-writer';

/** Virtual bytes per `runs()` query while planning. */
const SCAN_WINDOW = 256 * 1024 * 1024;
/** Data read and handed to the sink per step. */
const BATCH = 8 * 1024 * 1024;
const MAX_REFTABLE_BYTES = 8 * 1024 * 1024;
const COPIED_HI = 0x80000000;
const TWO_32 = 2 ** 32;

export interface Qcow2StreamOptions {
  /** A power of two from 512 to 2 MiB (default 64 KiB). */
  clusterSize?: number;
  backing?: QcowBacking;
  /** Virtual bytes covered so far (called after each batch). */
  onProgress?: (bytesDone: number) => void;
}

/** Takes the next piece of the image, in order; resolves when it may be reused... or is copied. */
export type Sink = (bytes: Buffer) => Promise<void>;

/** Runs of guest clusters to store: [first cluster, count], in order. */
type ClusterRuns = [number, number][];

/**
 * Streams `src` as qcow2 to `sink`. Throws ChainfsError for a geometry
 * qemu cannot open (before anything is written), LayerReadError for a
 * layer that cannot be read. Returns the image's size in bytes.
 */
export async function streamQcow2(src: ImageSource & { readAsync(b: Buffer, o: number, l: number, p: number): Promise<void> },
  sink: Sink, opts: Qcow2StreamOptions = {}): Promise<{ fileSize: number }> {
  const cs = opts.clusterSize ?? 65536;
  const l1Size = checkQcow2Geometry(src.size, cs);
  const runs = dataClusters(src, cs);
  const perL2 = cs / 8;
  const l2Indexes = tablesOf(runs, perL2);
  const dataCount = runs.reduce((n, r) => n + r[1], 0);
  const l1Clusters = Math.ceil((l1Size * 8) / cs);
  // Refcount blocks and table must count themselves: iterate to the fixed point.
  const perBlock = cs / 2; // 16-bit refcounts
  let blocks = 1;
  let table = 1;
  for (;;) {
    const total = 1 + l1Clusters + table + blocks + l2Indexes.length + dataCount;
    const b = Math.ceil(total / perBlock);
    const t = Math.ceil((b * 8) / cs);
    if (b === blocks && t === table) break;
    blocks = b;
    table = t;
  }
  if (table * cs > MAX_REFTABLE_BYTES) {
    throw new ChainfsError(undefined, `the image needs a ${table * cs}-byte refcount table, over qemu's 8 MiB limit; use a larger cluster size`);
  }
  const l1Off = cs;
  const tableOff = l1Off + l1Clusters * cs;
  const blocksOff = tableOff + table * cs;
  const l2Off = blocksOff + blocks * cs;
  const dataOff = l2Off + l2Indexes.length * cs;
  const total = dataOff / cs + dataCount;

  await sink(encodeHeader(cs, src.size, l1Size, l1Off, { tableOffset: tableOff, tableClusters: table }, opts.backing));
  // L1: entry k points at the k-th L2 table written.
  const l1 = new Map(l2Indexes.map((idx, k) => [idx, l2Off + k * cs]));
  await emitTable(sink, l1Clusters * cs, (i) => l1.get(i));
  await emitTable(sink, table * cs, (i) => (i < blocks ? blocksOff + i * cs : undefined), false);
  for (let b = 0; b < blocks; b++) {
    const block = Buffer.alloc(cs);
    const first = b * perBlock;
    for (let k = 0; k < perBlock && first + k < total; k++) block.writeUInt16BE(1, 2 * k);
    await sink(block);
  }
  await emitL2Tables(sink, runs, cs, perL2, dataOff);
  await emitData(src, sink, runs, cs, opts.onProgress);
  return { fileSize: total * cs };
}

/** The guest clusters any data run touches, as merged runs. */
function dataClusters(src: ImageSource, cs: number): ClusterRuns {
  const out: ClusterRuns = [];
  for (let win = 0; win < src.size; win += SCAN_WINDOW) {
    for (const r of src.runs(win, Math.min(SCAN_WINDOW, src.size - win))) {
      if (!r.layer) continue;
      const first = Math.floor(r.offset / cs);
      const end = Math.ceil((r.offset + r.length) / cs);
      const last = out[out.length - 1];
      if (last && first <= last[0] + last[1]) last[1] = Math.max(last[1], end - last[0]);
      else out.push([first, end - first]);
    }
  }
  return out;
}

/** The L2 table indexes (guest cluster / entries per table) that hold a stored cluster, in order. */
function tablesOf(runs: ClusterRuns, perL2: number): number[] {
  const out: number[] = [];
  for (const [first, count] of runs) {
    for (let t = Math.floor(first / perL2); t <= Math.floor((first + count - 1) / perL2); t++) {
      if (out[out.length - 1] !== t) out.push(t);
    }
  }
  return out;
}

/** A table of big-endian 64-bit offsets (`bytes` long), entry i from `at(i)` (undefined: 0). */
async function emitTable(sink: Sink, bytes: number, at: (i: number) => number | undefined, copied = true): Promise<void> {
  const step = 64 * 1024;
  for (let base = 0; base < bytes; base += step) {
    const buf = Buffer.alloc(Math.min(step, bytes - base));
    for (let k = 0; k < buf.length / 8; k++) {
      const v = at(base / 8 + k);
      if (v === undefined) continue;
      buf.writeUInt32BE(((copied ? COPIED_HI : 0) | Math.floor(v / TWO_32)) >>> 0, k * 8);
      buf.writeUInt32BE(v % TWO_32, k * 8 + 4);
    }
    await sink(buf);
  }
}

/** Every L2 table with a stored cluster, in order; data cluster n (in guest order) is at dataOff + n * cs. */
async function emitL2Tables(sink: Sink, runs: ClusterRuns, cs: number, perL2: number, dataOff: number): Promise<void> {
  let table = -1;
  let buf = Buffer.alloc(cs);
  let ordinal = 0;
  for (const [first, count] of runs) {
    for (let c = first; c < first + count; c++, ordinal++) {
      const t = Math.floor(c / perL2);
      if (t !== table) {
        if (table >= 0) await sink(buf);
        buf = Buffer.alloc(cs);
        table = t;
      }
      put64(buf, (c - t * perL2) * 8, dataOff + ordinal * cs);
      buf[(c - t * perL2) * 8] |= 0x80; // COPIED: refcount exactly one
    }
  }
  if (table >= 0) await sink(buf);
}

/** The stored clusters' bytes, in guest order, a batch at a time. */
async function emitData(src: ImageSource & { readAsync(b: Buffer, o: number, l: number, p: number): Promise<void> },
  sink: Sink, runs: ClusterRuns, cs: number, onProgress?: (done: number) => void): Promise<void> {
  for (const [first, count] of runs) {
    const start = first * cs;
    const end = (first + count) * cs;
    for (let pos = start; pos < end; pos += BATCH) {
      const n = Math.min(BATCH, end - pos);
      const buf = Buffer.alloc(n); // zeros past the view's end (a last partial cluster)
      const inView = Math.max(0, Math.min(n, src.size - pos));
      if (inView > 0) await src.readAsync(buf, 0, inView, pos);
      await sink(buf);
      onProgress?.(pos + n);
    }
  }
}

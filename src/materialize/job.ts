/**
 * The copying half of an export, on the main thread with the view that the
 * checks opened (its runs, resolved for the space estimate, are reused from
 * the chain's cache): it writes the view into the already created output
 * file, and hashes it if asked. The heavy work is off this thread (kernel
 * copies on the thread pool, the hash on its worker) and the writers yield
 * to the event loop between batches, so signals and the progress bar are
 * served while it runs.
 */
import type { ImageSource } from '../chain/source';
import { ChainfsError } from '../errors';
import type { Chain } from '../chain/chain';
import type { Catalog, OpenedView, ViewSelector } from '../source/catalog';
import { restrictTo } from './overlay';
import { writeQcow2, type QcowBacking } from './qcow2-writer';
import { writeRawRanges } from './raw-writer';
import type { Sha512Worker } from './checksum';
import { writeFailed } from './output';
import { writeRaw } from './raw-writer';

export type ExportFormat = 'raw' | 'qcow2';

export interface JobSpec {
  format: ExportFormat;
  clusterSize?: number;
  compress: boolean;
  checksum: boolean;
  /** The output file, open for writing and empty. */
  fd: number;
  /** Its (temporary) path, for a second read when the format cannot be hashed as it is written. */
  imagePath: string;
  /** OUT as the user gave it, for messages. */
  out: string;
  /** The view's data bytes (from the estimate). */
  dataBytes: number;
  /** Only what changed since this older view (opened from the catalog): an overlay or a raw delta. */
  since?: ViewSelector;
  /** The qcow2 overlay's backing file, as its header records it. */
  backing?: QcowBacking;
}

export interface JobResult {
  /** Lowercase hex SHA-512 of the output file's bytes, or null. */
  sha512: string | null;
  /** Bytes of the output file. */
  fileSize: number;
}

export interface JobProgress {
  phase: 'export' | 'checksum' | 'cat';
  done: number;
  total: number;
}

/** Progress notes at most this often (the bar redraws on each). */
const PROGRESS_INTERVAL_MS = 100;

/**
 * Runs the job on `view` (opened from `catalog`, which --since also reads
 * its older view from). `hash` is the running SHA-512 worker when
 * spec.checksum (started early by the caller, so that its start-up overlaps
 * the checks); the caller, which owns it, closes it.
 */
export async function runJob(spec: JobSpec, catalog: Catalog, view: OpenedView, hash: Sha512Worker | undefined,
  progress: (p: JobProgress) => void): Promise<JobResult> {
  let last = 0;
  let lastPhase = '';
  const throttled = (p: JobProgress): void => {
    const now = Date.now();
    if (p.phase === lastPhase && now - last < PROGRESS_INTERVAL_MS && p.done < p.total) return;
    last = now;
    lastPhase = p.phase;
    progress(p);
  };
  try {
    if (spec.since) return await deltaJob(spec, catalog, view.chain, hash, throttled);
    return spec.format === 'raw'
      ? await rawJob(spec, view.chain, hash, throttled)
      : await qcow2Job(spec, view.chain, hash, throttled);
  } catch (e) {
    if (e instanceof ChainfsError) throw e;
    if ((e as NodeJS.ErrnoException)?.syscall) throw writeFailed(spec.out, e); // reads are wrapped; this is the output
    throw e;
  }
}

async function rawJob(spec: JobSpec, src: ImageSource, hash: Sha512Worker | undefined,
  progress: (p: JobProgress) => void): Promise<JobResult> {
  if (hash) {
    // Every byte, holes included, goes through the hash: its position is the honest progress.
    hash.onHashed = (done) => progress({ phase: 'export', done, total: src.size });
    await writeRaw(src, spec.fd, { hash });
    return { sha512: await hash.digest(), fileSize: src.size };
  }
  // Progress is how far into the view the copy is: the same total (the view's size) as every format.
  await writeRaw(src, spec.fd, { onPosition: (done) => progress({ phase: 'export', done, total: src.size }) });
  return { sha512: null, fileSize: src.size };
}

async function qcow2Job(spec: JobSpec, src: ImageSource, hash: Sha512Worker | undefined,
  progress: (p: JobProgress) => void): Promise<JobResult> {
  // Progress is how far into the view the writer is (a window asked for, a
  // run read): the view's size is the total, as for raw.
  let done = 0;
  const at = (position: number) => {
    if (position <= done) return;
    done = position;
    progress({ phase: 'export', done, total: src.size });
  };
  const counted: ImageSource = {
    size: src.size,
    runs: (offset, length) => { at(offset); return src.runs(offset, length); },
    read: (buf, bufOffset, length, position) => {
      src.read(buf, bufOffset, length, position);
      at(position + length);
    },
  };
  progress({ phase: 'export', done: 0, total: src.size });
  const r = await writeQcow2(counted, spec.fd, { clusterSize: spec.clusterSize, compress: spec.compress });
  at(src.size);
  if (!hash) return { sha512: null, fileSize: r.fileSize };
  // The writer is not sequential: it writes the header and the L1 table, at
  // the start of the file, last. A hash needs the bytes in file order, so
  // the finished file is hashed in a second read (on the hash worker; the
  // file was just written, so it is usually still in the page cache).
  hash.onHashed = (done) => progress({ phase: 'checksum', done, total: r.fileSize });
  hash.file(spec.imagePath);
  return { sha512: await hash.digest(), fileSize: r.fileSize };
}

/**
 * --since: the ranges that changed since the older view (from allocation
 * within one chain, else by comparison), written as a qcow2 overlay
 * (changed clusters only, zeros as zero clusters) or as a raw file with
 * only those ranges allocated.
 */
async function deltaJob(spec: JobSpec, catalog: Catalog, chain: Chain, hash: Sha512Worker | undefined,
  progress: (p: JobProgress) => void): Promise<JobResult> {
  const older = await catalog.select(spec.since!).open({});
  try {
    const { changedRanges } = await import('../chain/diff');
    const { ranges } = await changedRanges(older.chain, chain);
    const total = ranges.reduce((n, r) => n + r.length, 0);
    if (spec.format === 'raw') {
      await writeRawRanges(chain, spec.fd, ranges, (done) => progress({ phase: 'export', done, total }));
      if (!hash) return { sha512: null, fileSize: chain.size };
      hash.onHashed = (done) => progress({ phase: 'checksum', done, total: chain.size });
      hash.file(spec.imagePath);
      return { sha512: await hash.digest(), fileSize: chain.size };
    }
    const src = restrictTo(chain, ranges, spec.clusterSize!);
    const r = await writeQcow2(src, spec.fd, { clusterSize: spec.clusterSize, backing: spec.backing, zeroClusters: true,
      onProgress: (done) => progress({ phase: 'export', done, total: chain.size }) });
    if (!hash) return { sha512: null, fileSize: r.fileSize };
    hash.onHashed = (done) => progress({ phase: 'checksum', done, total: r.fileSize });
    hash.file(spec.imagePath);
    return { sha512: await hash.digest(), fileSize: r.fileSize };
  } finally {
    older.close();
  }
}

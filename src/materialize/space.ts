/**
 * How much an export will allocate, and whether the target file system has
 * it, checked before a byte is written. The estimate is an upper bound from
 * the view's data runs (one resolution pass over the chain's extents, no data
 * read): all-zero blocks that become holes, and compression, only lower it.
 */
import * as fs from 'node:fs';
import type { ImageSource } from '../chain/source';
import { ChainfsError, describeErrno } from '../errors';
import { formatBytes } from '../units';

const SCAN_WINDOW = 256 << 20;

export interface Allocation {
  /** Bytes of the view's data runs (what a raw export reads and at most writes). */
  dataBytes: number;
  /** Upper bound of the output file's allocation for the chosen format. */
  outputBytes: number;
}

/** Scans the view's runs; for qcow2 also counts the clusters and L2 tables the data touches. */
export function estimateAllocation(src: ImageSource, qcow2ClusterSize?: number): Allocation {
  const cs = qcow2ClusterSize;
  let dataBytes = 0;
  let clusters = 0;
  let l2Tables = 0;
  let lastCluster = -1;
  let lastTable = -1;
  for (let win = 0; win < src.size; win += SCAN_WINDOW) {
    for (const r of src.runs(win, Math.min(SCAN_WINDOW, src.size - win))) {
      if (!r.layer) continue;
      dataBytes += r.length;
      if (!cs) continue;
      const first = Math.max(Math.floor(r.offset / cs), lastCluster + 1);
      const last = Math.floor((r.offset + r.length - 1) / cs);
      if (last < first) continue;
      clusters += last - first + 1;
      lastCluster = last;
      const perTable = cs / 8;
      const t0 = Math.max(Math.floor(first / perTable), lastTable + 1);
      const t1 = Math.floor(last / perTable);
      if (t1 >= t0) {
        l2Tables += t1 - t0 + 1;
        lastTable = t1;
      }
    }
  }
  if (!cs) return { dataBytes, outputBytes: dataBytes };
  // Header, L1 (8 bytes per L2 table's span), L2 tables, refcounts (2 bytes per host cluster).
  const l1Bytes = Math.ceil(src.size / ((cs / 8) * cs)) * 8;
  const hostClusters = 1 + Math.ceil(l1Bytes / cs) + l2Tables + clusters;
  const refcountBytes = Math.ceil((hostClusters * 2) / cs + 2) * cs;
  return { dataBytes, outputBytes: (1 + l2Tables + clusters) * cs + Math.ceil(l1Bytes / cs) * cs + refcountBytes };
}

/** Refuses to start when the file system holding `dir` has less than `need` bytes available. */
export function checkFreeSpace(dir: string, need: number, out: string): void {
  let avail: number;
  try {
    const st = fs.statfsSync(dir);
    avail = st.bavail * st.bsize;
  } catch {
    return; // cannot tell: the write itself will say ENOSPC if it comes to that
  }
  if (need > avail) {
    // A read-only file system (a chainfs mount shows 0 B free) is the problem to name, not its space.
    try {
      fs.accessSync(dir, fs.constants.W_OK);
    } catch (e) {
      throw new ChainfsError(out, `cannot write in ${dir}: ${describeErrno(e as NodeJS.ErrnoException)}; nothing was written`, (e as NodeJS.ErrnoException).code);
    }
    throw new ChainfsError(out, `not enough free space: the export needs up to ${formatBytes(need)} ` +
      `and ${dir} has ${formatBytes(avail)} available; nothing was written`, 'ENOSPC');
  }
}

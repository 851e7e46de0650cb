/**
 * What `inspect` shows of each replica of a node and what the pick rule
 * looks at (longhorn-node.md B, "What an offline reader must do" step 5):
 * volume.meta's state, revision.counter, the head file's mtime in ns and
 * st_blocks*512, chain length, newest snapshot, and whether Longhorn would
 * use the replica at all. Metadata and stats only: no layer file is opened.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChainfsError, oneLine } from '../../errors';
import { ReplicaCatalog, type ReplicaCatalogOptions } from '../replica/catalog';
import type { DiskMeta } from '../replica/meta';
import { readRevisionCounter, type RevisionCounter } from './revision-counter';
import type { ReplicaDirEntry, RootScan } from './scan';

export interface ReplicaFacts {
  /** Directory name, `pvc-1-1a2b3c4d`. */
  dir: string;
  /** Name in the mount tree and for --replica: `dir`, or `dir@N` when several roots hold that name. */
  id: string;
  path: string;
  volume: string;
  root: RootScan;
  /** The replica as a catalog (views prefixed `volumes/<volume>/replicas/<id>/`), unless it could not be read at all. */
  catalog?: ReplicaCatalog;
  size: number | null;
  head: string | null;
  dirty: boolean;
  rebuilding: boolean;
  error: string;
  revisionCounter: RevisionCounter;
  headMtimeNs: bigint | null;
  headAllocatedBytes: number | null;
  headSize: number | null;
  chainLength: number | null;
  newestSnapshot: { name: string; created: string } | null;
  /** `<name>-<uuid>` of the backing-image directory BackingFilePath names, or null. */
  backingDir: string | null;
  /** Why Longhorn would not use it (set here, or by the size check of its volume); undefined: usable. */
  unusable?: string;
}

/** Reads one replica directory's facts; never throws for what is on disk (an unreadable replica gets `unusable`). */
export function replicaFacts(entry: ReplicaDirEntry, id: string, root: RootScan, opts: ReplicaCatalogOptions): ReplicaFacts {
  const f: ReplicaFacts = {
    dir: entry.dir, id, path: entry.path, volume: entry.volume, root, size: null, head: null, dirty: false,
    rebuilding: false, error: '', revisionCounter: readRevisionCounter(entry.path), headMtimeNs: null,
    headAllocatedBytes: null, headSize: null, chainLength: null, newestSnapshot: null, backingDir: null,
  };
  let c: ReplicaCatalog;
  try {
    // --backing-file stands in for a backing image only where volume.meta names one, not on every replica of the node.
    const { backingFile, ...rest } = opts;
    const prefix = `volumes/${entry.volume}/replicas/${id}/`;
    c = ReplicaCatalog.open(entry.path, { ...rest, prefix });
    if (backingFile && c.replica.meta.backingFilePath) {
      c.close();
      c = ReplicaCatalog.open(entry.path, { ...rest, prefix, backingFile });
    }
  } catch (e) {
    if (!(e instanceof ChainfsError)) throw e;
    f.unusable = `not readable: ${e.message}`;
    return f;
  }
  f.catalog = c;
  const r = c.replica;
  f.size = r.meta.size;
  f.head = r.meta.head;
  f.dirty = r.meta.dirty;
  f.rebuilding = r.meta.rebuilding;
  f.error = r.meta.error;
  if (r.meta.backingFilePath) f.backingDir = path.basename(path.dirname(r.meta.backingFilePath));
  const head = r.disks.get(r.meta.head);
  if (head) {
    try {
      const st = fs.lstatSync(head.path, { bigint: true });
      f.headMtimeNs = st.mtimeNs;
      f.headAllocatedBytes = Number(st.blocks) * 512;
      f.headSize = Number(st.size);
    } catch {
      // missing: the chain check below says so
    }
  }
  const problem = r.chainProblem(r.meta.head);
  if (!problem) {
    const chain = r.chain(r.meta.head);
    f.chainLength = chain.length;
    const newest = chain[1];
    if (newest) f.newestSnapshot = { name: newest.name, created: (newest.meta as DiskMeta).created };
  }
  // The engine refuses a replica whose state is not open/dirty (control.go isReplicaInInvalidState),
  // one whose revision.counter does not parse (revision_counter.go), one it cannot open.
  if (r.meta.rebuilding) f.unusable = 'Rebuilding: a rebuild did not finish (the engine refuses it)';
  else if (r.meta.error) f.unusable = `Error recorded in volume.meta: ${oneLine(r.meta.error, 200)} (the engine refuses it)`;
  else if (f.revisionCounter.kind === 'bad') f.unusable = `revision.counter: ${f.revisionCounter.reason} (the engine cannot open it)`;
  else if (problem) f.unusable = `broken chain: ${problem}`;
  else if (f.headMtimeNs === null) f.unusable = `head ${r.meta.head} cannot be stat'ed`;
  return f;
}

/**
 * The volume's size and the replicas whose volume.meta Size differs from it.
 * The engine keeps the replicas of the size it is told (the volume's spec,
 * control.go determineCorrectVolumeSize); offline, chainfs takes the size
 * most otherwise-usable replicas have, the larger one on a tie (an expansion
 * that reached some of them), and marks the others unusable.
 */
export function checkSizes(replicas: ReplicaFacts[]): number | null {
  const counts = new Map<number, number>();
  for (const r of replicas) if (!r.unusable && r.size !== null) counts.set(r.size, (counts.get(r.size) ?? 0) + 1);
  if (counts.size === 0) {
    const any = replicas.find((r) => r.size !== null);
    return any ? any.size : null;
  }
  const size = [...counts.entries()].sort((a, b) => b[1] - a[1] || b[0] - a[0])[0][0];
  for (const r of replicas) {
    if (!r.unusable && r.size !== null && r.size !== size) {
      r.unusable = `size mismatch: volume.meta Size ${r.size}, the other replicas' ${size} (the engine refuses a replica of another size)`;
    }
  }
  return size;
}

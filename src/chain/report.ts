/**
 * What `chainfs inspect --json` prints and the mount shows as chain.json:
 * the replica's state, the head's chain, every snapshot, the backing image.
 */
import type { Disk } from '../source/replica/replica';
import type { DiskMeta } from '../source/replica/meta';
import type { LayerSet } from './view';

export interface DiskReport {
  file: string;
  name: string;
  kind: 'head' | 'snapshot';
  parent: string;
  removed: boolean;
  userCreated: boolean;
  created: string;
  labels: Record<string, string> | null;
  /** Apparent size of the file (the volume size when it was the head). */
  size: number;
  /** st_blocks * 512. */
  allocatedBytes: number;
}

export interface SnapshotReport extends DiskReport {
  /** In the head's chain (false: an off-chain branch left by a revert). */
  inChain: boolean;
  /** Why its view cannot be opened, if it cannot. */
  problem?: string;
}

export interface ReplicaReport {
  dir: string;
  size: number;
  head: string;
  dirty: boolean;
  rebuilding: boolean;
  encrypted: boolean;
  error: string;
  metaRecovered: boolean;
  backing: { path: string; format: string; virtualSize: number; allocatedBytes: number } | null;
  /** The head's chain, head first, down to the oldest snapshot. */
  chain: DiskReport[];
  snapshots: SnapshotReport[];
  warnings: string[];
}

export function diskReport(d: Disk): DiskReport {
  const m = d.meta as DiskMeta;
  return {
    file: d.file, name: d.name, kind: d.kind, parent: m.parent, removed: m.removed,
    userCreated: m.userCreated, created: m.created, labels: m.labels,
    size: d.stat?.size ?? 0, allocatedBytes: (d.stat?.blocks ?? 0) * 512,
  };
}

export function replicaReport(layers: LayerSet): ReplicaReport {
  const r = layers.replica;
  const chain = r.chain(r.meta.head);
  const inChain = new Set(chain.map((d) => d.file));
  const bi = layers.backing();
  const snapshots: SnapshotReport[] = r.snapshots().map((d) => {
    let problem: string | undefined;
    try {
      r.chain(d.file);
    } catch (e) {
      problem = (e as Error).message;
    }
    if (d.meta instanceof Error || problem) {
      return {
        file: d.file, name: d.name, kind: d.kind, parent: '', removed: false, userCreated: false, created: '',
        labels: null, size: d.stat?.size ?? 0, allocatedBytes: (d.stat?.blocks ?? 0) * 512,
        inChain: inChain.has(d.file), problem: problem ?? (d.meta as Error).message,
      };
    }
    return { ...diskReport(d), inChain: inChain.has(d.file) };
  });
  return {
    dir: r.dir, size: r.meta.size, head: r.meta.head, dirty: r.meta.dirty, rebuilding: r.meta.rebuilding,
    encrypted: r.meta.encrypted, error: r.meta.error, metaRecovered: r.metaRecovered,
    backing: bi ? { path: bi.path, format: bi.format, virtualSize: bi.layer.size, allocatedBytes: bi.layer.allocatedBytes } : null,
    chain: chain.map(diskReport),
    snapshots,
    warnings: [...r.warnings, ...layers.warnings],
  };
}

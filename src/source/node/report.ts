/**
 * What `inspect --json` prints for data roots and the mount shows as
 * catalog.json (issue #11): the roots, every volume with every replica, the
 * replica Longhorn would pick and the rule that picked it, backing images
 * across disks, what belongs to no chain, and what offline data cannot know.
 *
 * Big numbers: `headMtimeNs` is a decimal string (nanoseconds since the
 * epoch do not fit a JSON number exactly); `revisionCounter` is a number,
 * or a decimal string past 2^53.
 */
import type { NodeBackingImage } from './backing-images';
import type { ReplicaFacts } from './facts';
import type { Pick, PickRule } from './pick';
import type { Leftover, RootScan } from './scan';

export interface RootReport {
  path: string;
  diskUUID: string | null;
  diskName?: string;
  /** Which manager versions write this cfg shape; null without a cfg. */
  cfgShape: string | null;
  replicas: number;
  backingImages: number;
}

export interface ReplicaRow {
  dir: string;
  /** Its name under volumes/<volume>/replicas/ and for --replica, when not `dir` (the same name on several roots). */
  id?: string;
  root: string;
  diskUUID: string | null;
  path: string;
  usable: boolean;
  reason?: string;
  /** Longhorn keeps it RW (the others it marks ERR and rebuilds from a kept one). */
  kept: boolean;
  dirty: boolean;
  rebuilding: boolean;
  error: string;
  revisionCounter: number | string | null;
  head: string | null;
  headMtimeNs: string | null;
  /** The same instant, ISO 8601 with nanoseconds. */
  headMtime: string | null;
  headAllocatedBytes: number | null;
  headSize: number | null;
  chainLength: number | null;
  newestSnapshot: { name: string; created: string } | null;
  backingImage: string | null;
}

export interface VolumeReport {
  name: string;
  size: number | null;
  pick: string | null;
  rule: PickRule;
  why: string;
  replicas: ReplicaRow[];
}

export interface NodeReport {
  roots: RootReport[];
  volumes: VolumeReport[];
  backingImages: NodeBackingImage[];
  /** Entries of replicas/ and backing-images/ that are not replica or backing-image directories. */
  noise: Leftover[];
  /** Files under tmp/: backing-image-manager work files, maybe half-finished exports. */
  tmp: Leftover[];
  /** Backing-image directories no replica of these roots uses. */
  unusedBackingImages: string[];
  /** What the pick cannot take into account offline. */
  cannotKnow: string[];
  warnings: string[];
}

export interface VolumeFacts {
  name: string;
  size: number | null;
  pick: Pick;
  replicas: ReplicaFacts[];
}

/** What the pick cannot take into account offline (longhorn-node.md B, "What an offline reader must do" 6-7). */
export const CANNOT_KNOW = [
  "which replicas the manager offers the engine: its 1-minute FailedAt window (AutoSalvageTimeLimit), the HealthyAt filter (a replica that never became RW is skipped) and whether their node and disk are up and schedulable live in the Replica and Node records of the cluster, not on disk",
  'mtimes and allocated bytes are those of the files given: a copy made without keeping timestamps (cp without --preserve=timestamps, rsync without -t) or sparseness (cp, scp, rsync without -S) changes the salvage answer; run on the original disks, read-only',
  "with revision.counter, Longhorn keeps every replica tied at the highest counter and its order among them is arbitrary; the pick names one deterministically",
];

/** One root's line of the report; `replicas` is how many replica directories it holds. */
export function rootReport(r: RootScan, replicas: number): RootReport {
  return {
    path: r.path, diskUUID: r.cfg?.diskUUID ?? null, ...(r.cfg?.diskName !== undefined ? { diskName: r.cfg.diskName } : {}),
    cfgShape: r.cfg?.shape ?? null, replicas, backingImages: r.backingDirs.length,
  };
}

/** One volume's entry: its replicas in directory-name order, the pick and its rule. */
export function volumeReport(v: VolumeFacts): VolumeReport {
  return { name: v.name, size: v.size, pick: v.pick.pick, rule: v.pick.rule, why: v.pick.why, replicas: v.replicas.map((r) => replicaRow(r, v.pick)) };
}

function replicaRow(f: ReplicaFacts, pick: Pick): ReplicaRow {
  const rc = f.revisionCounter.kind === 'value' ? f.revisionCounter.value : null;
  return {
    dir: f.dir, ...(f.id !== f.dir ? { id: f.id } : {}), root: f.root.path, diskUUID: f.root.cfg?.diskUUID ?? null,
    path: f.path, usable: !f.unusable, ...(f.unusable ? { reason: f.unusable } : {}), kept: pick.kept.has(f.id),
    dirty: f.dirty, rebuilding: f.rebuilding, error: f.error,
    revisionCounter: rc === null ? null : rc <= BigInt(Number.MAX_SAFE_INTEGER) && rc >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(rc) : rc.toString(),
    head: f.head, headMtimeNs: f.headMtimeNs === null ? null : f.headMtimeNs.toString(),
    headMtime: f.headMtimeNs === null ? null : isoNs(f.headMtimeNs),
    headAllocatedBytes: f.headAllocatedBytes, headSize: f.headSize, chainLength: f.chainLength,
    newestSnapshot: f.newestSnapshot, backingImage: f.backingDir,
  };
}

/** `2026-11-30T10:00:00.123456789Z` (negative times, before 1970, keep millisecond precision). */
export function isoNs(ns: bigint): string {
  if (ns < 0n) return new Date(Number(ns / 1_000_000n)).toISOString();
  const secs = ns / 1_000_000_000n;
  const frac = (ns % 1_000_000_000n).toString().padStart(9, '0');
  return `${new Date(Number(secs) * 1000).toISOString().slice(0, 19)}.${frac}Z`;
}

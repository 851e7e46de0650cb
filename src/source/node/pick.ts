/**
 * Which replica of a volume Longhorn would pick (longhorn-node.md B), from
 * on-disk facts only.
 *
 * - Every usable replica has `revision.counter`: the engine's
 *   `checkReplicasRevisionCounter` (longhorn-engine pkg/controller/control.go
 *   l.707-736, unchanged since bf2f3ebf, 2017) keeps every replica at the
 *   highest counter and marks the others ERR. Longhorn's order among the
 *   kept ones is arbitrary; chainfs names one for a deterministic answer:
 *   the newest head mtime, then the most allocated head bytes, then the
 *   smallest directory name.
 * - None has it: `salvageRevisionCounterDisabledReplicas` (control.go
 *   l.641-702, current since engine fd668c94 / 15c1e891, v1.6.3 and v1.7.0):
 *   candidates are the replicas whose head mtime T satisfies T + 5 s > Tmax
 *   (strict `After`, `lastModifyCheckPeriod` l.74); the winner has the most
 *   allocated head bytes (st_blocks*512), then the later T, then (Longhorn:
 *   the engine's arbitrary list order) the smallest directory name. Every
 *   other replica is marked ERR and later rebuilt from the winner.
 * - Some have it and some do not: Longhorn would mark the ones whose
 *   setting differs from the engine's ERR (`checkReplicaRevCounterSettingMatch`,
 *   l.619-640); which ones depends on the volume's spec, which lives in the
 *   cluster: no pick.
 * - No usable replica: no pick.
 */

/** What the rule looks at for one usable replica. */
export interface PickInput {
  /** Replica directory name: the last tie-break. */
  dir: string;
  /** The counter, or null when `revision.counter` is absent. */
  revisionCounter: bigint | null;
  /** Head file mtime, nanoseconds since the epoch. */
  headMtimeNs: bigint;
  /** Head file st_blocks * 512. */
  headAllocatedBytes: number;
}

export type PickRule = 'revision-counter' | 'salvage' | 'ambiguous' | 'none';

export interface Pick {
  /** The chosen directory, or null (rule `ambiguous` or `none`). */
  pick: string | null;
  rule: PickRule;
  /** Directories Longhorn would keep RW (the others it marks ERR and rebuilds). */
  kept: Set<string>;
  /** One sentence: why this replica, or why none. */
  why: string;
}

/** The salvage window (`lastModifyCheckPeriod = 5*time.Second`), in ns. */
export const SALVAGE_WINDOW_NS = 5_000_000_000n;

/** Applies the rule to the usable replicas of one volume (order does not matter). */
export function pickReplica(usable: PickInput[]): Pick {
  if (usable.length === 0) return { pick: null, rule: 'none', kept: new Set(), why: 'no usable replica' };
  const withCounter = usable.filter((r) => r.revisionCounter !== null);
  if (withCounter.length === usable.length) return byRevisionCounter(usable);
  if (withCounter.length === 0) return bySalvage(usable);
  const without = usable.filter((r) => r.revisionCounter === null).map((r) => r.dir);
  return {
    pick: null, rule: 'ambiguous', kept: new Set(),
    why: `${withCounter.map((r) => r.dir).join(', ')} have revision.counter and ${without.join(', ')} do not: ` +
      "Longhorn marks the ones whose setting differs from the volume's ERR, and that setting is in the cluster, not on disk; choose with --replica",
  };
}

function byRevisionCounter(rs: PickInput[]): Pick {
  const max = rs.reduce((m, r) => (r.revisionCounter! > m ? r.revisionCounter! : m), rs[0].revisionCounter!);
  const tied = rs.filter((r) => r.revisionCounter === max);
  const best = [...tied].sort((a, b) => cmpBig(b.headMtimeNs, a.headMtimeNs) ||
    b.headAllocatedBytes - a.headAllocatedBytes || byName(a.dir, b.dir))[0];
  const why = tied.length === 1
    ? `the highest revision.counter (${max})`
    : `the highest revision.counter (${max}), tied with ${tied.length - 1} other replica(s) that Longhorn keeps too ` +
      "(its order among them is arbitrary); chainfs names the newest head mtime, then the most allocated head bytes, then the smallest directory name";
  return { pick: best.dir, rule: 'revision-counter', kept: new Set(tied.map((r) => r.dir)), why };
}

function bySalvage(rs: PickInput[]): Pick {
  const tmax = rs.reduce((m, r) => (r.headMtimeNs > m ? r.headMtimeNs : m), rs[0].headMtimeNs);
  const candidates = rs.filter((r) => r.headMtimeNs + SALVAGE_WINDOW_NS > tmax);
  const best = [...candidates].sort((a, b) => b.headAllocatedBytes - a.headAllocatedBytes ||
    cmpBig(b.headMtimeNs, a.headMtimeNs) || byName(a.dir, b.dir))[0];
  const tiedAll = candidates.filter((r) => r.headAllocatedBytes === best.headAllocatedBytes && r.headMtimeNs === best.headMtimeNs);
  const why = `no revision.counter: salvage rule: of the ${candidates.length} replica(s) whose head was modified less than 5 s ` +
    `before the newest head, the most allocated head bytes (${best.headAllocatedBytes})` +
    (tiedAll.length > 1 ? '; tied on bytes and mtime, Longhorn takes an arbitrary one, chainfs the smallest directory name' : '');
  return { pick: best.dir, rule: 'salvage', kept: new Set([best.dir]), why };
}

function cmpBig(a: bigint, b: bigint): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Byte order of the names (not locale order: the same answer on every machine). */
function byName(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

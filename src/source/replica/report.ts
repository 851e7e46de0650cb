/**
 * What `chainfs inspect --json` prints for a replica directory and the mount
 * shows as chain.json: the replica's state, the head's chain, every
 * snapshot and other head with whether its view is readable (and why not),
 * layer files without a .meta, the backing image, warnings. Built from
 * metadata and stats only (the backing image's header is read).
 */
import * as path from 'node:path';
import { ChainfsError } from '../../errors';
import { compareText, table } from '../../text';
import { formatBytes } from '../../units';
import type { LayerSet } from './layers';
import type { DiskMeta } from './meta';
import type { Disk, Orphan } from './replica';

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
  /** Off the head's chain: the newest snapshot of the head's chain below it (where the branch starts), or null. */
  branchesFrom?: string | null;
}

/** A head file other than volume.meta's head, selectable as `--head FILE` and mounted under heads/. */
export interface HeadReport extends DiskReport {
  /** Its own chain, head first, when readable. */
  chain: string[];
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
  backing: { path: string; format: string; size: number; virtualSize: number; allocatedBytes: number } | null;
  /** Why the backing image cannot be used (every view then fails), if so. */
  backingProblem?: string;
  /** The head's chain, head first, down to the oldest snapshot; empty when the head's view is broken. */
  chain: DiskReport[];
  /** Why the head's view cannot be read, if it cannot. */
  headProblem?: string;
  snapshots: SnapshotReport[];
  heads: HeadReport[];
  /** Layer files without a .meta: in no chain, as in the engine. */
  orphans: Orphan[];
  warnings: string[];
}

export function diskReport(d: Disk): DiskReport {
  const m = d.meta instanceof ChainfsError ? undefined : d.meta as DiskMeta;
  return {
    file: d.file, name: d.name, kind: d.kind, parent: m?.parent ?? '', removed: m?.removed ?? false,
    userCreated: m?.userCreated ?? false, created: m?.created ?? '', labels: m?.labels ?? null,
    size: d.stat?.size ?? 0, allocatedBytes: (d.stat?.blocks ?? 0) * 512,
  };
}

export function replicaReport(layers: LayerSet): ReplicaReport {
  const r = layers.replica;
  const headProblem = r.chainProblem(r.meta.head);
  const chain = headProblem ? [] : r.chain(r.meta.head);
  const inChain = new Set(chain.map((d) => d.file));
  const warnings = [...r.warnings];
  let backing: ReplicaReport['backing'] = null;
  let backingProblem: string | undefined;
  try {
    const bi = layers.backing();
    if (bi) {
      backing = { path: bi.path, format: bi.format, size: bi.size, virtualSize: bi.layer.size, allocatedBytes: bi.layer.allocatedBytes };
      if (bi.layer.size > r.meta.size) {
        warnings.push(`${bi.path}: the backing image's virtual size ${bi.layer.size} is larger than the volume (${r.meta.size}): its data past the volume's end is not in any view`);
      }
    }
  } catch (e) {
    if (!(e instanceof ChainfsError)) throw e;
    backingProblem = e.message;
  }
  warnings.push(...layers.warnings, ...copiedWarnings(chain, !!backing));
  const snapshots: SnapshotReport[] = r.snapshots().map((d) => {
    const problem = r.chainProblem(d.file);
    const off = !inChain.has(d.file);
    const branchesFrom = off && !problem ? r.chain(d.file).find((x) => inChain.has(x.file))?.name ?? null : undefined;
    return { ...diskReport(d), inChain: !off, ...(problem ? { problem } : {}), ...(branchesFrom !== undefined ? { branchesFrom } : {}) };
  });
  const heads: HeadReport[] = r.otherHeads().map((d) => {
    const problem = r.chainProblem(d.file);
    return { ...diskReport(d), chain: problem ? [] : r.chain(d.file).map((x) => x.file), ...(problem ? { problem } : {}) };
  });
  return {
    dir: r.dir, size: r.meta.size, head: r.meta.head, dirty: r.meta.dirty, rebuilding: r.meta.rebuilding,
    encrypted: r.meta.encrypted, error: r.meta.error, metaRecovered: r.metaRecovered,
    backing, ...(backingProblem ? { backingProblem } : {}),
    chain: chain.map(diskReport), ...(headProblem ? { headProblem } : {}),
    snapshots, heads, orphans: r.orphans, warnings,
  };
}

/**
 * A layer above the bottom allocated end to end while other layers are
 * sparse: the files were likely copied by a tool that fills holes, which
 * hides older data (README: copy replicas with GNU tar --sparse). Not an
 * error: a volume written end to end looks the same.
 */
function copiedWarnings(chain: Disk[], hasBacking: boolean): string[] {
  const above = hasBacking ? chain : chain.slice(0, -1);
  const full = (d: Disk) => !!d.stat && d.stat.size > 0 && d.stat.blocks * 512 >= d.stat.size;
  if (!chain.some((d) => d.stat && !full(d))) return [];
  return above.filter(full).map((d) => `${d.path}: allocated end to end while other layers are sparse: ` +
    'if the replica was copied by a tool that fills holes (cp, rsync without -S, scp), older data is hidden; ' +
    'copy replicas with GNU tar --sparse (see the README)');
}

function flags(d: { removed: boolean; userCreated: boolean }): string {
  return [d.removed ? 'removed' : '', d.userCreated ? 'user' : ''].filter(Boolean).join(',');
}

/** `inspect`'s text for a replica directory. */
export function renderReplica(r: ReplicaReport): string {
  const state = r.rebuilding ? 'REBUILDING (incomplete)' : r.dirty ? 'dirty (not closed cleanly, or in use)' : 'clean';
  const lines = [
    `replica   ${r.dir}`,
    `volume    ${formatBytes(r.size)} (${r.size} bytes), head ${r.head}, ${state}${r.encrypted ? ', encrypted' : ''}`,
    `backing   ${r.backing ? `${r.backing.path} (${r.backing.format}, virtual ${formatBytes(r.backing.virtualSize)}, allocated ${formatBytes(r.backing.allocatedBytes)})` : r.backingProblem ? `UNUSABLE: ${r.backingProblem}` : 'none'}`,
    '',
  ];
  if (r.headProblem) {
    lines.push(`head view: UNREADABLE: ${r.headProblem}`);
  } else {
    lines.push('chain (head first):');
    const rows = [['  #', 'FILE', 'KIND', 'SIZE', 'ALLOCATED', 'CREATED', 'FLAGS']];
    r.chain.forEach((d, i) => rows.push([`  ${r.chain.length - i}`, d.file, d.kind, formatBytes(d.size),
      formatBytes(d.allocatedBytes), d.created, flags(d)]));
    if (r.backing) rows.push(['  0', path.join(path.basename(path.dirname(r.backing.path)), path.basename(r.backing.path)), `backing ${r.backing.format}`, formatBytes(r.backing.virtualSize), formatBytes(r.backing.allocatedBytes), '', '']);
    lines.push(table(rows));
  }
  // Off the chain, in the order they were created (then the shorter chain first), with where each branch starts.
  const byFile = new Map(r.snapshots.map((s) => [s.file, s]));
  const depth = (s: SnapshotReport): number => {
    let n = 0;
    for (let p = byFile.get(s.parent); p && n < byFile.size; p = byFile.get(p.parent)) n++;
    return n;
  };
  const off = r.snapshots.filter((s) => !s.inChain)
    .sort((a, b) => compareText(a.created, b.created) || depth(a) - depth(b) || compareText(a.file, b.file));
  if (off.length) {
    lines.push('', r.headProblem ? 'snapshots:' : "snapshots not in the head's chain (after a revert), oldest first:");
    lines.push(table([['  FILE', 'KIND', 'SIZE', 'ALLOCATED', 'CREATED', 'FLAGS', 'BRANCHES FROM'],
      ...off.map((s) => [`  ${s.file}`, s.kind, formatBytes(s.size), formatBytes(s.allocatedBytes), s.created,
        s.problem ? `unreadable: ${s.problem}` : flags(s), s.problem ? '' : s.branchesFrom ?? '(below the chain)'])]));
  }
  for (const s of r.snapshots.filter((x) => x.inChain && x.problem)) lines.push(`snapshot ${s.name}: unreadable: ${s.problem}`);
  if (r.heads.length) {
    lines.push('', "other head files (not volume.meta's head; views under heads/, --head FILE):");
    lines.push(table([['  FILE', 'PARENT', 'SIZE', 'ALLOCATED', 'CHAIN'],
      ...r.heads.map((h) => [`  ${h.file}`, h.parent || '-', formatBytes(h.size), formatBytes(h.allocatedBytes),
        h.problem ? `unreadable: ${h.problem}` : `${h.chain.length} disks`])]));
  }
  if (r.orphans.length) {
    lines.push('', 'layer files without a .meta (in no chain):');
    lines.push(table([['  FILE', 'SIZE', 'ALLOCATED'],
      ...r.orphans.map((o) => [`  ${o.file}`, formatBytes(o.size), formatBytes(o.allocatedBytes)])]));
  }
  if (r.warnings.length) lines.push('', 'warnings:', ...r.warnings.map((w) => `  ${w}`));
  return `${lines.join('\n')}\n`;
}

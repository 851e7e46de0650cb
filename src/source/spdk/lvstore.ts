/**
 * The lvstore on a blobstore: its name and uuid (the super blob's xattrs,
 * lib/lvol/lvol.c `lvs_load`), its lvols (every other blob, named by its
 * `name` xattr, lvol.c `load_next_lvol`), their parents (the `SNAP` internal
 * xattr, blobstore.c `blob_load_backing_dev`) and Longhorn's names.
 *
 * A snapshot torn by a crash still carries `SNAPTMP` (being created) or
 * `SNAPRM` (being removed), whose value is its clone's blob id. SPDK's load
 * (`bs_load_iter`, `bs_examine_clone`) keeps it (as a finished snapshot)
 * when that clone's `SNAP` points to it, and deletes it otherwise; a torn
 * snapshot whose clone cannot be opened is left out of the lvstore. This
 * model does the same without writing: `torn` says which case applies.
 */
import { blobIdHex } from './md-page';
import { FLAG_EXTERNAL_SNAPSHOT, type Blob } from './blob';
import type { Blobstore } from './blobstore';
import { classify, type LvolName } from './names';

export interface Lvol {
  /** The `name` xattr up to its first NUL (`blob <id>` when it has none). */
  name: string;
  id: number;
  uuid: string;
  blob: Blob;
  /** Size in bytes (clusters × cluster size). */
  size: number;
  allocatedClusters: number;
  /** Parent blob id (`SNAP`), or undefined. */
  parentId?: number;
  /** Longhorn's reading of the name. */
  longhorn: LvolName;
  /** Public xattrs as text (NULs at the end dropped; binary values as hex). */
  xattrs: Record<string, string>;
  /** Blobs whose `SNAP` points here. */
  clones: number[];
  /**
   * Set for a snapshot torn by a crash: `kept` (its clone points to it;
   * SPDK's load finishes it) or `dropped` (SPDK's load deletes it, or
   * leaves it out when its clone is missing).
   */
  torn?: { xattr: 'SNAPTMP' | 'SNAPRM'; cloneId: number; outcome: 'kept' | 'dropped' };
  /** Why it cannot be read (its own metadata, or its chain's), or undefined. */
  problem?: string;
}

export interface Lvstore {
  bs: Blobstore;
  name: string;
  uuid: string;
  /** Every lvol, by blob id (the super blob excluded). */
  lvols: Map<number, Lvol>;
  warnings: string[];
}

/** Builds the lvstore model of a loaded blobstore. Never throws for bad metadata. */
export function buildLvstore(bs: Blobstore): Lvstore {
  const warnings: string[] = [];
  const sup = bs.blobs.get(bs.sb.superBlob);
  let name = '';
  let uuid = '';
  if (!sup) warnings.push(`${bs.path}: the lvstore's super blob ${blobIdHex(bs.sb.superBlob)} is missing: lvstore name and uuid unknown`);
  else if (sup.problem) warnings.push(`${bs.path}: the lvstore's super blob ${blobIdHex(sup.id)}: ${sup.problem}`);
  else {
    name = text(sup.xattrs.get('name'));
    uuid = text(sup.xattrs.get('uuid'));
  }
  const lvols = new Map<number, Lvol>();
  for (const b of bs.blobs.values()) {
    if (b.id === bs.sb.superBlob) continue;
    lvols.set(b.id, toLvol(b, bs.sb.clusterSize, uuid));
  }
  for (const l of lvols.values()) {
    if (l.parentId === undefined) continue;
    const p = lvols.get(l.parentId);
    if (p) p.clones.push(l.id);
  }
  for (const l of lvols.values()) applyTornRule(l, lvols);
  for (const l of lvols.values()) checkChain(l, lvols);
  return { bs, name, uuid, lvols, warnings };
}

function toLvol(b: Blob, clusterSize: number, lvsUuid: string): Lvol {
  const name = b.xattrs.has('name') ? text(b.xattrs.get('name')) : `blob-${blobIdHex(b.id)}`;
  const l: Lvol = {
    name, id: b.id, uuid: text(b.xattrs.get('uuid')), blob: b, size: b.numClusters * clusterSize,
    allocatedClusters: b.allocatedClusters, longhorn: classify(name, lvsUuid), xattrs: {}, clones: [],
  };
  for (const [k, v] of b.xattrs) if (k !== 'name') l.xattrs[k] = printable(v);
  if (b.problem) l.problem = b.problem;
  const snap = b.internal.get('SNAP');
  if (snap) {
    const id = blobId(snap);
    if (id === undefined) l.problem ??= `SNAP xattr of ${snap.length} bytes is not a blob id`;
    else l.parentId = id;
  }
  if (b.internal.has('EXTSNAP') || (b.invalidFlags & FLAG_EXTERNAL_SNAPSHOT) !== 0) {
    l.problem ??= 'its parent is an external snapshot (EXTSNAP: another bdev, e.g. a rebuild source on another node): its unwritten data is not on this disk';
  }
  if (!b.xattrs.has('name')) l.problem ??= 'no name xattr (SPDK fails to load such an lvol)';
  return l;
}

function applyTornRule(l: Lvol, lvols: Map<number, Lvol>): void {
  const which = l.blob.internal.has('SNAPRM') ? 'SNAPRM' : l.blob.internal.has('SNAPTMP') ? 'SNAPTMP' : undefined;
  if (!which) return;
  const cloneId = blobId(l.blob.internal.get(which)!);
  const clone = cloneId === undefined ? undefined : lvols.get(cloneId);
  const kept = clone !== undefined && !clone.blob.problem && clone.parentId === l.id;
  l.torn = { xattr: which, cloneId: cloneId ?? 0, outcome: kept ? 'kept' : 'dropped' };
}

/** Marks an lvol whose chain cannot be followed: a missing or broken parent, a cycle. */
function checkChain(l: Lvol, lvols: Map<number, Lvol>): void {
  if (l.problem) return;
  const seen = new Set<number>([l.id]);
  for (let cur = l; cur.parentId !== undefined;) {
    const p = lvols.get(cur.parentId);
    if (!p) { l.problem = `parent blob ${blobIdHex(cur.parentId)} (SNAP of ${cur.name}) does not exist`; return; }
    if (seen.has(p.id)) { l.problem = `its chain of parents (SNAP) loops at ${p.name} (${blobIdHex(p.id)})`; return; }
    if (p.blob.problem) { l.problem = `parent ${p.name} (${blobIdHex(p.id)}) is unreadable: ${p.blob.problem}`; return; }
    seen.add(p.id);
    cur = p;
  }
}

/** The lvol and its ancestors (SNAP), newest first. Assumes checkChain found no problem. */
export function chainOf(l: Lvol, lvols: Map<number, Lvol>): Lvol[] {
  const out = [l];
  const seen = new Set<number>([l.id]);
  for (let cur = l; cur.parentId !== undefined;) {
    const p = lvols.get(cur.parentId);
    if (!p || seen.has(p.id)) break;
    seen.add(p.id);
    out.push(p);
    cur = p;
  }
  return out;
}

/** A blob id from an 8-byte little-endian value, or undefined. */
function blobId(v: Buffer): number | undefined {
  if (v.length !== 8) return undefined;
  const n = v.readBigUInt64LE(0);
  return n >= 2n ** 32n && n < 2n ** 33n ? Number(n) : undefined;
}

/** An xattr value as text: up to the first NUL. */
export function text(v: Buffer | undefined): string {
  if (!v) return '';
  const z = v.indexOf(0);
  return v.toString('utf8', 0, z < 0 ? v.length : z);
}

/** Text when the value is text (trailing NULs dropped), else `hex:<hex>`. */
function printable(v: Buffer): string {
  let end = v.length;
  while (end > 0 && v[end - 1] === 0) end--;
  const body = v.subarray(0, end);
  return body.every((c) => c >= 0x20 && c < 0x7f) ? body.toString('latin1') : `hex:${v.toString('hex')}`;
}

/**
 * What `inspect` shows of v2 disks: `spdkReport` (JSON, `catalog.json`) and
 * `renderText` (text): per disk the lvstore, clean/dirty, clusters (total,
 * free); volumes → replicas → chain, sizes and allocated clusters; backing
 * images; transient, torn and other lvols; problems.
 */
import { formatBytes } from '../../units';
import type { SpdkCatalog } from './catalog';
import type { Disk } from './disk';
import { chainOf, type Lvol } from './lvstore';
import { blobIdHex } from './md-page';
import type { ReplicaEntry } from './model';

export function spdkReport(c: SpdkCatalog): object {
  return {
    kind: 'spdk',
    disks: c.disks.map(diskReport),
    volumes: c.model.volumes.map((v) => ({
      name: v.name,
      picked: v.picked?.dir,
      equivalent: v.equivalent.map((r) => r.dir),
      replicas: v.replicas.map((r) => replicaReport(r)),
    })),
    backingImages: c.model.backingImages.map((b) => ({
      name: b.name, lvol: b.lvol.name, disk: b.disk.dev.path, path: b.path, size: b.lvol.size,
      allocatedBytes: allocated(b.disk, b.lvol), checksum: b.lvol.xattrs.longhorn_backing_image_checksum,
      uuid: b.lvol.xattrs.longhorn_backing_image_uuid, prepareState: b.lvol.xattrs.longhorn_backing_image_prepare_state,
      problem: b.lvol.problem,
    })),
    views: c.views().map((v) => ({ path: v.path, kind: v.kind, size: v.size, allocatedBytes: v.allocatedBytes, problem: v.problem })),
    warnings: c.warnings,
  };
}

function diskReport(d: Disk): object {
  const bs = d.lvs.bs;
  return {
    path: d.dev.path, size: d.dev.size, blockDevice: d.dev.isBlockDevice,
    lvstore: { name: d.lvs.name, uuid: d.lvs.uuid },
    clean: bs.sb.clean === 1, enumeration: bs.enumeration,
    superBlock: {
      version: bs.sb.version, clean: bs.sb.clean, clusterSize: bs.sb.clusterSize, ioUnitSize: bs.sb.ioUnitSize,
      mdPageSize: bs.sb.mdPageSize, mdStart: bs.sb.mdStart, mdLen: bs.sb.mdLen, size: bs.sb.size, superBlob: blobIdHex(bs.sb.superBlob),
    },
    totalClusters: bs.totalClusters, dataClusters: bs.totalClusters - bs.firstDataCluster, freeClusters: bs.freeClusters, freeFrom: bs.freeFrom,
    lvols: [...d.lvs.lvols.values()].sort((a, b) => a.id - b.id).map((l) => lvolReport(d, l)),
  };
}

function lvolReport(d: Disk, l: Lvol): object {
  const parent = l.parentId === undefined ? undefined : d.lvs.lvols.get(l.parentId);
  return {
    name: l.name, blobId: blobIdHex(l.id), uuid: l.uuid, role: l.longhorn.role, transient: l.longhorn.transient,
    parent: parent?.name, parentBlobId: l.parentId === undefined ? undefined : blobIdHex(l.parentId),
    clones: l.clones.map((id) => d.lvs.lvols.get(id)?.name ?? blobIdHex(id)),
    size: l.size, numClusters: l.blob.numClusters, allocatedClusters: l.allocatedClusters,
    thin: l.blob.thin, readOnly: l.blob.readOnly,
    flags: { invalid: l.blob.invalidFlags, dataRo: l.blob.dataRoFlags, mdRo: l.blob.mdRoFlags },
    mdPages: l.blob.pages, extentPages: l.blob.extentPages,
    xattrs: l.xattrs, internalXattrs: [...l.blob.internal.keys()],
    torn: l.torn ? { xattr: l.torn.xattr, clone: blobIdHex(l.torn.cloneId), outcome: l.torn.outcome } : undefined,
    problem: l.problem,
  };
}

function replicaReport(r: ReplicaEntry): object {
  const lvols = r.disk.lvs.lvols;
  return {
    name: r.name, disk: r.disk.dev.path, lvstore: r.disk.lvs.name, path: r.dir, encrypted: r.encrypted,
    size: r.head?.size, headAllocatedBytes: r.head ? r.head.allocatedClusters * r.disk.lvs.bs.sb.clusterSize : undefined,
    chain: r.head && !r.head.problem ? chainOf(r.head, lvols).map((l) => l.name) : undefined,
    problem: r.head ? r.head.problem : 'no head lvol',
    snapshots: r.snapshots.map((s) => ({
      name: s.longhorn.snapshot, lvol: s.name, size: s.size, allocatedBytes: s.allocatedClusters * r.disk.lvs.bs.sb.clusterSize,
      userCreated: s.xattrs.user_created === 'true', timestamp: s.xattrs.snapshot_timestamp,
      parent: s.parentId === undefined ? undefined : lvols.get(s.parentId)?.name, torn: s.torn?.outcome, problem: s.problem,
    })),
    transient: r.transient.map((t) => ({ lvol: t.name, what: t.longhorn.transient })),
  };
}

function allocated(d: Disk, l: Lvol): number {
  return l.allocatedClusters * d.lvs.bs.sb.clusterSize;
}

/** The text of `inspect`. */
export function renderText(c: SpdkCatalog): string {
  const out: string[] = [];
  for (const d of c.disks) {
    const bs = d.lvs.bs;
    const cs = bs.sb.clusterSize;
    out.push(`v2 disk ${d.dev.path}: lvstore ${d.lvs.name || '?'} (${d.lvs.uuid || 'uuid unknown'})`);
    out.push(`  ${bs.sb.clean === 1 ? 'clean' : 'dirty (not unloaded cleanly; metadata region scanned)'}, ${formatBytes(bs.sb.size)}, ${formatBytes(cs)} clusters: ${bs.totalClusters - bs.firstDataCluster} data, ${bs.freeFrom === 'blobs-partial' ? 'at most ' : ''}${bs.freeClusters} free; ${d.lvs.lvols.size} lvols`);
  }
  for (const v of c.model.volumes) {
    out.push(`volume ${v.name}`);
    for (const r of v.replicas) {
      const cs = r.disk.lvs.bs.sb.clusterSize;
      const tag = v.picked === r ? ' [picked]' : v.equivalent.includes(r) ? ' [equivalent]' : '';
      const size = r.head ? `${formatBytes(r.head.size)}, head ${formatBytes(r.head.allocatedClusters * cs)} allocated` : 'no head lvol';
      const id = r.dir.slice(r.dir.lastIndexOf('/') + 1);
      const where = id === r.name ? r.disk.lvs.name || r.disk.dev.path : `${r.disk.lvs.name || '?'} (${r.disk.dev.path})`;
      out.push(`  replica ${id} on ${where}${tag}: ${size}${r.encrypted ? ', ENCRYPTED (LUKS header: served as ciphertext)' : ''}`);
      if (r.head?.problem) out.push(`    PROBLEM: ${r.head.problem}`);
      else if (r.head) out.push(`    chain: ${chainOf(r.head, r.disk.lvs.lvols).map((l) => short(l, r)).join(' -> ')}`);
      for (const s of r.snapshots) {
        const flags = [s.xattrs.user_created === 'true' ? 'user' : 'system', s.xattrs.snapshot_timestamp, s.torn ? `TORN (${s.torn.xattr}), kept as SPDK's load keeps it` : '', s.problem ? `PROBLEM: ${s.problem}` : '']
          .filter(Boolean).join(', ');
        out.push(`    snapshot ${s.longhorn.snapshot}: ${formatBytes(s.size)}, ${formatBytes(s.allocatedClusters * cs)} allocated (${flags})`);
      }
      for (const t of r.transient) out.push(`    transient ${t.name} (${t.longhorn.transient})`);
    }
  }
  if (c.model.backingImages.length) out.push('backing images');
  for (const b of c.model.backingImages) {
    out.push(`  ${b.name} (${b.lvol.name}): ${formatBytes(b.lvol.size)}, ${formatBytes(allocated(b.disk, b.lvol))} allocated, ${b.lvol.xattrs.longhorn_backing_image_prepare_state ?? 'state unknown'}${b.lvol.problem ? `; PROBLEM: ${b.lvol.problem}` : ''}`);
  }
  const other = c.disks.flatMap((d) => [...d.lvs.lvols.values()].filter((l) =>
    l.torn?.outcome === 'dropped' || l.longhorn.role === 'other' || (l.longhorn.role === 'transient' && !l.longhorn.replica)).map((l) => ({ d, l })));
  if (other.length) out.push('other lvols');
  for (const { d, l } of other) {
    const what = l.torn?.outcome === 'dropped' ? `TORN snapshot (${l.torn.xattr}) that SPDK's load would delete` : l.longhorn.role === 'transient' ? `transient (${l.longhorn.transient})` : 'not a Longhorn name';
    out.push(`  ${l.name} on ${d.lvs.name || d.dev.path}: ${formatBytes(l.size)}, ${formatBytes(allocated(d, l))} allocated, ${what}${l.problem ? `; PROBLEM: ${l.problem}` : ''}`);
  }
  const problems = c.views().filter((v) => v.problem && v.kind === 'lvol');
  if (problems.length) out.push('unreadable lvols');
  for (const v of problems) out.push(`  ${v.path}: ${v.problem}`);
  for (const w of c.warnings) out.push(`warning: ${w}`);
  return `${out.join('\n')}\n`;
}

/** An lvol in a replica's chain: `head`, `snap:<name>`, `bi:<name>`, or its lvol name. */
function short(l: Lvol, r: ReplicaEntry): string {
  if (l === r.head) return 'head';
  if (l.longhorn.role === 'snapshot' && l.longhorn.replica === r.name) return `snap:${l.longhorn.snapshot}`;
  if (l.longhorn.role === 'backing-image') return `bi:${l.longhorn.backingImage}`;
  return l.name;
}

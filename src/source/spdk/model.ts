/**
 * Longhorn's view of one or more v2 disks: volumes → replicas (a head and
 * its snapshots, per disk) → chains, backing images, transient and torn
 * lvols, and which replica of a volume the v2 engine's salvage would pick.
 *
 * Salvage (longhorn-spdk-engine, format document §C step 8): among the
 * usable replicas of a volume, those whose head has the most allocated
 * clusters; ties are equivalent (the first, by disk order then name, is
 * picked and the others are named).
 */
import { createHash } from 'node:crypto';
import type { Disk } from './disk';
import { startsWithLuks } from './encryption';
import type { Lvol } from './lvstore';
import { compareText } from '../../text';

export interface ReplicaEntry {
  disk: Disk;
  /** The replica's name (= its head lvol's name). */
  name: string;
  volume: string;
  /** Mount-tree directory: `volumes/<volume>/replicas/<replica>` (+ `@<lvstore>` when the name is on several disks). */
  dir: string;
  head?: Lvol;
  /** Snapshots of this replica (torn ones SPDK keeps included), oldest first by creation order of blob chain. */
  snapshots: Lvol[];
  /** Transient lvols of this replica (rebuilding, expired, cloning, clone entry points). */
  transient: Lvol[];
  /** The head starts with a LUKS header: an encrypted volume (served as ciphertext). */
  encrypted: boolean;
}

export interface VolumeEntry {
  name: string;
  replicas: ReplicaEntry[];
  /** The salvage pick (undefined when no replica has a usable head). */
  picked?: ReplicaEntry;
  /** Replicas equivalent to the pick (same head allocation). */
  equivalent: ReplicaEntry[];
}

export interface BackingImageEntry {
  disk: Disk;
  name: string;
  lvol: Lvol;
  /** Mount-tree path. */
  path: string;
}

export interface Model {
  volumes: VolumeEntry[];
  backingImages: BackingImageEntry[];
}

/**
 * How a name found on several disks is told apart: `<name>@<tag>`, the tag
 * being the disk's lvstore name when no other disk given has that name,
 * else its position on the command line (`@1`, `@2`: two copies of one
 * disk carry the same lvstore name and UUID), as the node source does.
 */
export function diskTags(disks: Disk[]): Map<Disk, string> {
  const count = new Map<string, number>();
  for (const d of disks) count.set(d.lvs.name, (count.get(d.lvs.name) ?? 0) + 1);
  return new Map(disks.map((d, i) => [d, d.lvs.name && count.get(d.lvs.name) === 1 ? d.lvs.name : `${i + 1}`]));
}

/** Groups the lvols of `disks` by Longhorn's names. */
export function buildModel(disks: Disk[]): Model {
  const tags = diskTags(disks);
  const replicas = new Map<string, ReplicaEntry>();
  const byDisk = new Map<string, string[]>();
  const backingImages: BackingImageEntry[] = [];
  const biNames = new Set<string>();
  for (const disk of disks) {
    for (const l of disk.lvs.lvols.values()) {
      const n = l.longhorn;
      if (n.role === 'backing-image') {
        const taken = biNames.has(n.backingImage!);
        biNames.add(n.backingImage!);
        const name = taken ? `${n.backingImage}@${tags.get(disk)}` : n.backingImage!;
        backingImages.push({ disk, name, lvol: l, path: `backing-images/${component(name, '.img')}` });
        continue;
      }
      if (!n.replica || !n.volume) continue;
      const key = `${disks.indexOf(disk)}\0${n.replica}`;
      let r = replicas.get(key);
      if (!r) {
        r = { disk, name: n.replica, volume: n.volume, dir: '', snapshots: [], transient: [], encrypted: false };
        replicas.set(key, r);
        byDisk.set(n.replica, [...(byDisk.get(n.replica) ?? []), key]);
      }
      if (n.role === 'replica-head') r.head = l;
      else if (n.role === 'snapshot' && l.torn?.outcome !== 'dropped') r.snapshots.push(l);
      else if (n.role === 'transient') r.transient.push(l);
    }
  }
  const volumes = new Map<string, VolumeEntry>();
  for (const r of replicas.values()) {
    const several = (byDisk.get(r.name) ?? []).length > 1;
    r.dir = `volumes/${component(r.volume)}/replicas/${component(several ? `${r.name}@${tags.get(r.disk)}` : r.name)}`;
    r.encrypted = r.head !== undefined && startsWithLuks(r.disk, r.head);
    r.snapshots.sort((a, b) => depth(a, r) - depth(b, r) || compareText(a.name, b.name));
    let v = volumes.get(r.volume);
    if (!v) volumes.set(r.volume, v = { name: r.volume, replicas: [], equivalent: [] });
    v.replicas.push(r);
  }
  for (const v of volumes.values()) pick(v, disks);
  return {
    volumes: [...volumes.values()].sort((a, b) => compareText(a.name, b.name)),
    backingImages: backingImages.sort((a, b) => compareText(a.name, b.name)),
  };
}

function pick(v: VolumeEntry, disks: Disk[]): void {
  const usable = v.replicas.filter((r) => r.head && !r.head.problem)
    .sort((a, b) => b.head!.allocatedClusters - a.head!.allocatedClusters
      || disks.indexOf(a.disk) - disks.indexOf(b.disk) || compareText(a.name, b.name));
  v.picked = usable[0];
  v.equivalent = usable.slice(1).filter((r) => r.head!.allocatedClusters === usable[0].head!.allocatedClusters);
}

/** Number of ancestors (SNAP) of a snapshot, so that a replica's snapshots list oldest first. */
function depth(l: Lvol, r: ReplicaEntry): number {
  let n = 0;
  const lvols = r.disk.lvs.lvols;
  const seen = new Set<number>();
  for (let cur: Lvol | undefined = l; cur?.parentId !== undefined && !seen.has(cur.id); n++) {
    seen.add(cur.id);
    cur = lvols.get(cur.parentId);
  }
  return n;
}

/**
 * A name as one path component ending in `ext`: `/` and `%` escaped,
 * `.`/`..` made harmless, and at most 255 bytes (NAME_MAX; a name of the
 * fork's 256-byte maximum would not fit) by cutting it and adding `~` and 8
 * hex digits of its SHA-256, so that cut names stay distinct.
 */
export function component(name: string, ext = ''): string {
  let s = name.replace(/%/g, '%25').replace(/\//g, '%2F').replace(/\0/g, '%00');
  if (s === '.' || s === '..' || s === '') s = `%${s}`;
  if (Buffer.byteLength(s + ext) <= 255) return s + ext;
  const tag = `~${createHash('sha256').update(name).digest('hex').slice(0, 8)}`;
  let cut = Buffer.from(s).subarray(0, 255 - Buffer.byteLength(tag + ext)).toString();
  while (Buffer.byteLength(cut + tag + ext) > 255) cut = cut.slice(0, -1); // a cut inside a UTF-8 sequence
  return cut + tag + ext;
}
